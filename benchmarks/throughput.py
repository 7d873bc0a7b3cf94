"""Throughput: clew (hf engine), clew (vllm engine) and TRL's GRPOTrainer side by side, on two models.

Usage: python benchmarks/throughput.py [--quick] [--steps N] [--reps R] [--models tiny,llama-75m,smollm2]
       [--lora] [--engines clew-hf,clew-vllm,trl] [--no-gen] [--src PATH]

Models, both random-init Llama-shaped with the tiny byte-level BPE tokenizer (vocab 512), tied embeddings:
- ``tiny``: hidden 128, 4 layers, 4 heads (clew's default ``TinyModelConfig``, ~1 M parameters);
- ``llama-75m``: hidden 768, 12 layers, 12 heads with 4 KV heads, intermediate 2048 (~75 M parameters).
- ``smollm2`` (not in the default ``--models``): SmolLM2-135M-Instruct with its real weights and tokenizer
  (vocab 49152), from ``clew models get smollm2-135m-instruct``; prompts go through its chat template.

Two tables per model:
1. **RL step** (end to end): G = 8, 32 new tokens, 16 completions per step (2 prompts x 8), lr 1e-3
   (``--lr``; full fine-tuning of SmolLM2 at 1e-3 makes clew's step guard halve and reject every step, so its
   rows use 1e-5), no KL, token-mean ("dapo") loss, fp32, no gradient checkpointing; the same prompts and toy reward for
   every engine. completions/s = 16 / median step time (the first, warm-up step excluded); generated
   tokens/s uses the mean completion length of the measured steps; rollout share = clew's
   ``time/rollout_s`` / ``time/iteration_s`` (metrics.jsonl); peak RSS = the child process's max RSS.
   ``clew(vllm)`` runs ``rollout.engine=vllm`` with ``rollout.engine_params={kv_cache_gib: 1}`` (TIS is
   switched on automatically for a foreign engine); its start-up (~1 min) is outside the steps.
2. **Generation only** (isolates the engine): 16 prompts x 32 new tokens at T = 1, one warm-up call
   then the median tokens/s of 3 calls (actual generated tokens: a sampled end token stops a row early).
   Rows: clew's ``hf`` engine; ``vllm`` eager; ``vllm`` with ``compile=True`` (torch.compile); and
   what TRL does on CPU, ``model.generate(do_sample=True)`` on one left-padded batch.

Every (engine, repetition) runs in its own subprocess, alternating engines, so peak RSS is per engine,
neither warms the other's caches and vLLM's thread binding stays in its child. "other load" is the mean
number of cores other processes used while a child ran (the max over its repetitions): on this 2-core
machine even ~1 core of other load slows a 2-thread child several-fold, HF ``generate`` most. Without TRL (the
``[bench]`` extra) or vLLM (the ``[vllm]`` extra) their rows are skipped with a note.
``--quick``: the tiny model only, 3 steps, 1 repetition, no ``compile=True`` row.

Profile (issue 27): for each clew run, the median seconds per step of each learner stage
(``time/learner/<stage>`` in metrics.jsonl: pack, old_logprobs, forward_backward, guard, optimizer, sync,
probe) and the share of computed tokens that were padding. ``--lora``: LoRA r 16 on every linear layer for
clew and for TRL (its ``peft_config``). ``--src PATH``: the clew children import clew from ``PATH/src`` (a
checkout of an earlier commit: the "before" of a change, measured in the same session).
"""

from __future__ import annotations

import argparse
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
from machine import busy_cores, describe, wait_for_quiet

GROUP, NEW_TOKENS, PROMPTS_PER_STEP, LR = 8, 32, 2, 1e-3
PER_STEP = GROUP * PROMPTS_PER_STEP
GEN_PROMPTS, GEN_CALLS = 16, 3
TOPICS = ["a key", "a door", "a grid", "a calculator", "a corridor", "a lamp", "a branch", "a treasure"]
MODELS = {
    "tiny": "hidden 128, 4 layers, 4 heads, ~1 M parameters",
    "llama-75m": "hidden 768, 12 layers, 12 heads / 4 KV heads, intermediate 2048, ~75 M parameters",
    "smollm2": "SmolLM2-135M-Instruct, real weights and tokenizer (clew models get smollm2-135m-instruct), 135 M",
}
RL_ENGINES = {"clew-hf": "clew(hf)", "clew-vllm": "clew(vllm)", "trl": "TRL"}
GEN_ENGINES = {
    "gen-hf": "clew hf engine",
    "gen-vllm": "vllm eager",
    "gen-vllm-compile": "vllm compile=True",
    "gen-generate": "HF generate (TRL on CPU)",
}


def prompt_text(i: int) -> str:
    return f"Write one sentence about {TOPICS[i % len(TOPICS)]}."


def reward(text: str) -> float:
    """The same toy reward for every engine: the share of vowels in the completion."""
    return sum(ch in "aeiou" for ch in text) / max(len(text), 1)


class PromptEnv:
    """A single-turn env serving ``prompt_text(seed)``; the reward is ``reward(action)``."""

    def reset(self, seed: int) -> str:
        return prompt_text(seed)

    def step(self, action: str) -> Any:
        from clew.envs import StepResult

        return StepResult("done", reward(action), True, False, {})


# --- models -------------------------------------------------------------------------------------------
def build_model(name: str, path: Path) -> Path:
    """Build model ``name`` (a key of ``MODELS``) with random weights at ``path`` (smollm2: its cached folder)."""
    from clew.envs.corpus import sample_texts
    from clew.policy import TinyModelConfig, build_tiny

    if name == "smollm2":
        from clew.policy.models import materialize

        return materialize("smollm2-135m-instruct")
    if name == "tiny":
        return build_tiny(path, sample_texts(), TinyModelConfig())
    big = TinyModelConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048)
    build_tiny(path, sample_texts(), big)
    return _regroup_kv_heads(path, kv_heads=4)


def _regroup_kv_heads(path: Path, kv_heads: int) -> Path:
    """Replace the saved model by a fresh one with ``kv_heads`` key/value heads (GQA); TinyModelConfig has
    no KV-head field, so the tokenizer and config come from ``build_tiny`` and only the weights change."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(path)
    config.num_key_value_heads = kv_heads
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


# --- RL step children ----------------------------------------------------------------------------------
LORA = {"r": 16, "alpha": 32}  # every linear layer but the head (peft: "all-linear")
STAGES = ("pack", "old_logprobs", "forward_backward", "guard", "optimizer", "sync", "probe")


def run_clew(model_dir: Path, steps: int, engine: str, lora: bool, lr: float) -> dict[str, float]:
    from clew.store.trajectories import read_trajectories
    from clew.trainer.config import load_config
    from clew.trainer.loop import Trainer

    overrides = [
        "preset=grpo", f"policy.model={model_dir}", f"iterations={steps}", f"tasks_per_iteration={PROMPTS_PER_STEP}",
        "env.id=throughput:PromptEnv", f"rollout.group_size={GROUP}", "rollout.max_turns=1",
        f"rollout.max_new_tokens={NEW_TOKENS}", f"train.lr={lr}", "train.minibatch_rows=16",
        "train.microbatch_rows=16", "objective.aggregation=token_mean", "eval.every=0", "eval.episodes=1",
        f"checkpoint_every={steps}", f"rollout.engine={engine}",
    ]  # fmt: skip
    if engine == "vllm":
        overrides.append("rollout.engine_params={kv_cache_gib: 1}")
    if lora:
        overrides.append(f"policy.lora={{r: {LORA['r']}, alpha: {LORA['alpha']}, target_modules: all-linear}}")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        Trainer(load_config(None, overrides), run).fit()
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        iters = [r for r in records if r["kind"] == "iteration"][1:]
        measured = {r["iteration"] for r in iters}
        files = sorted((run / "trajectories").glob("iter_*.parquet"))
        rows = [row for f in files for row in read_trajectories(f) if row["iteration"] in measured]
    profile = {f"stage/{s}": statistics.median(r.get(f"time/learner/{s}", 0.0) for r in iters) for s in STAGES}
    profile["stage/rollout"] = statistics.median(r["time/rollout_s"] for r in iters)
    for key in ("padding_share", "backtracks", "rejected_steps"):
        if f"train/{key}" in iters[0]:
            profile[key] = statistics.fmean(r[f"train/{key}"] for r in iters)
    return {
        "step_s": statistics.median(r["time/iteration_s"] for r in iters),
        "rollout_share": sum(r["time/rollout_s"] for r in iters) / sum(r["time/iteration_s"] for r in iters),
        "mean_completion_tokens": statistics.fmean(len(row["action_ids"]) for row in rows),
        **profile,
    }


def run_trl(model_dir: Path, steps: int, lora: bool, lr: float) -> dict[str, float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": prompt_text(i)}] for i in range(64)]})

    def reward_fn(completions: list[Any], **_: Any) -> list[float | None]:
        return [reward(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    times: list[float] = []
    lengths: list[float] = []

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.append(time.perf_counter() - self.start)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=PER_STEP, num_generations=GROUP,
        max_completion_length=NEW_TOKENS, learning_rate=lr, beta=0.0, loss_type="dapo", bf16=False,
        gradient_checkpointing=False, max_steps=steps, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    peft = None
    if lora:
        from peft import LoraConfig

        peft = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward_fn, args=config, train_dataset=data, processing_class=tokenizer,
        callbacks=[Clock()], peft_config=peft,
    )  # fmt: skip
    trainer.train()
    return {"step_s": statistics.median(times[1:]), "mean_completion_tokens": statistics.fmean(lengths or [NEW_TOKENS])}


# --- generation-only children --------------------------------------------------------------------------
def gen_prompts(tokenizer: Any, call: int) -> list[list[int]]:
    """16 chat-framed prompts, distinct within and across calls (so no engine reuses a cached prefill)."""
    from clew.policy import ChatFormat

    chat = ChatFormat.from_tokenizer(tokenizer)
    return [chat.first_segment(tokenizer, f"{prompt_text(i)} ({call}.{i})") for i in range(GEN_PROMPTS)]


def clew_generator(kind: str, model_dir: Path) -> Callable[[int], int]:
    """One call of a clew engine on call ``c``'s prompts; returns the tokens generated."""
    from transformers import AutoTokenizer

    from clew.policy import HFPolicy, SamplingParams, make_engine

    if kind == "gen-hf":
        policy = HFPolicy.from_pretrained(model_dir)
        tokenizer, engine = policy.tokenizer, make_engine("hf", policy.model, tokenizer=policy.tokenizer)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        engine = make_engine("vllm", model_dir, kv_cache_gib=1.0, compile=kind == "gen-vllm-compile")
    params = SamplingParams(temperature=1.0, max_new_tokens=NEW_TOKENS)

    def call(c: int) -> int:
        seeds = [c * GEN_PROMPTS + i for i in range(GEN_PROMPTS)]
        return sum(len(out.token_ids) for out in engine.generate(gen_prompts(tokenizer, c), params, seeds))

    return call


def hf_generate_generator(model_dir: Path) -> Callable[[int], int]:
    """TRL's CPU generation: ``model.generate(do_sample=True)`` on one left-padded batch (no top-k)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def call(c: int) -> int:
        prompts = gen_prompts(tokenizer, c)
        batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
        torch.manual_seed(c)
        with torch.no_grad():
            out = model.generate(
                **batch, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=NEW_TOKENS,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )  # fmt: skip
        return sum(_generated(row, tokenizer.eos_token_id) for row in out[:, batch["input_ids"].shape[1] :].tolist())

    return call


def _generated(row: list[int], eos_id: int) -> int:
    """Tokens sampled in a ``generate`` row: up to and including the first end token."""
    return row.index(eos_id) + 1 if eos_id in row else len(row)


def run_gen(kind: str, model_dir: Path) -> dict[str, float]:
    call = hf_generate_generator(model_dir) if kind == "gen-generate" else clew_generator(kind, model_dir)
    call(0)  # warm-up
    rates, tokens = [], []
    for c in range(1, GEN_CALLS + 1):
        start = time.perf_counter()
        n = call(c)
        rates.append(n / (time.perf_counter() - start))
        tokens.append(n / GEN_PROMPTS)
    return {"tokens_per_s": statistics.median(rates), "tokens_per_completion": statistics.fmean(tokens)}


def child(kind: str, model_dir: Path, steps: int, lora: bool, lr: float) -> None:
    import torch

    torch.set_num_threads(2)
    if kind.startswith("gen-"):
        result = run_gen(kind, model_dir)
    elif kind == "trl":
        result = run_trl(model_dir, steps, lora, lr)
    else:
        result = run_clew(model_dir, steps, kind.removeprefix("clew-"), lora, lr)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


# --- parent ---------------------------------------------------------------------------------------------
def measure(kind: str, model_dir: Path, steps: int, opts: argparse.Namespace) -> dict[str, float] | None:
    """Run one child after waiting for a quiet machine; ``None`` (and its stderr) when it fails."""
    wait_for_quiet()
    cmd = [sys.executable, __file__, "--child", kind, "--model", str(model_dir), "--steps", str(steps)]
    cmd += ["--lora"] if opts.lora else []
    cmd += ["--lr", str(opts.lr)]
    before = cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(opts.src if kind.startswith("clew") else None))
    after = cpu_seconds()
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        print(f"[{kind} failed]\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(lines[-1][7:])
    result["load_during"] = other_load(before, after)
    result["other_load_cores"] = busy_cores(0.5)
    return result


def other_load(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Mean cores used by other processes between two ``cpu_seconds()`` readings."""
    return max(0.0, (after[0] - before[0] - (after[1] - before[1])) / (after[2] - before[2]))


def cpu_seconds() -> tuple[float, float, float]:
    """(CPU seconds used machine-wide, by this process and its children, wall seconds), to subtract."""
    with open("/proc/stat") as handle:
        ticks = [float(x) for x in handle.readline().split()[1:]]
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own, time.monotonic()


def _env(src: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    first = [str(Path(src) / "src")] if src else []
    env["PYTHONPATH"] = os.pathsep.join([*first, str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def available(module: str) -> bool:
    """Whether ``module`` is installed (found without importing it: vllm binds threads on import)."""
    return importlib.util.find_spec(module) is not None


def rl_table(results: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Print the RL-step table; return completions/s per engine."""
    print("| engine | completions/s | generated tokens/s | step time | rollout share | peak RSS | other load |")
    print("|---|---|---|---|---|---|---|")
    rates = {}
    for kind, runs in results.items():
        if not runs:
            print(f"| {RL_ENGINES[kind]} | failed | | | | | |")
            continue
        step = statistics.median(r["step_s"] for r in runs)
        tokens = statistics.fmean(r["mean_completion_tokens"] for r in runs)
        share = f"{statistics.fmean(r['rollout_share'] for r in runs):.0%}" if "rollout_share" in runs[0] else "n/a"
        rss = max(r["peak_rss_mb"] for r in runs)
        rates[kind] = PER_STEP / step
        print(
            f"| {RL_ENGINES[kind]} | {rates[kind]:.1f} | {PER_STEP * tokens / step:,.0f} | {step:.3f} s "
            f"| {share} | {rss:,.0f} MB | {max(r['load_during'] for r in runs):.2f} |"
        )
    return rates


def gen_table(results: dict[str, dict[str, float] | None]) -> None:
    print("| engine | tokens/s | tokens per completion | peak RSS | other load |")
    print("|---|---|---|---|---|")
    for kind, r in results.items():
        if r is None:
            print(f"| {GEN_ENGINES[kind]} | failed | | | |")
            continue
        print(
            f"| {GEN_ENGINES[kind]} | {r['tokens_per_s']:,.0f} | {r['tokens_per_completion']:.1f} "
            f"| {r['peak_rss_mb']:,.0f} MB | {r['load_during']:.2f} |"
        )


def profile_table(results: dict[str, list[dict[str, float]]]) -> None:
    """Median seconds per step of each learner stage (and the rollout) for every clew run, with its share of
    the step; then the share of computed tokens that were padding."""
    clew = {k: runs for k, runs in results.items() if k.startswith("clew") and runs}
    if not clew:
        return
    print("\n| stage | " + " | ".join(RL_ENGINES[k] for k in clew) + " |")
    print("|---|" + "---|" * len(clew))
    for stage in ("rollout", *STAGES):
        cells = []
        for runs in clew.values():
            seconds = statistics.median(r.get(f"stage/{stage}", 0.0) for r in runs)
            step = statistics.median(r["step_s"] for r in runs)
            cells.append(f"{seconds:.3f} s ({seconds / step:.0%})")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    pads = [f"{statistics.fmean(r.get('padding_share', float('nan')) for r in runs):.0%}" for runs in clew.values()]
    print("| padding share of computed tokens | " + " | ".join(pads) + " |")
    for key, label in (("backtracks", "guard halvings per step"), ("rejected_steps", "steps the guard rejected")):
        cells = [f"{statistics.fmean(r.get(key, float('nan')) for r in runs):.2f}" for runs in clew.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")


def ratios(name: str, rates: dict[str, float]) -> None:
    if "trl" not in rates:
        return
    for kind in ("clew-vllm", "clew-hf"):
        if kind in rates:
            print(f"- {name}: {RL_ENGINES[kind]} / TRL completions per second: {rates[kind] / rates['trl']:.2f}x")


def bench_model(
    name: str, model_dir: Path, steps: int, reps: int, rl: list[str], gen: list[str], opts: argparse.Namespace
) -> list[float]:
    """Both tables for one model; returns the other-process loads seen after each child."""
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in rl}
    for _ in range(reps):
        for kind in rl:
            if result := measure(kind, model_dir, steps, opts):
                runs[kind].append(result)
    gens = {kind: measure(kind, model_dir, steps, opts) for kind in gen}
    print(f"\n### {name} ({MODELS[name]})\n")
    print(f"RL step: {PER_STEP} completions ({PROMPTS_PER_STEP} prompts x G {GROUP}), {NEW_TOKENS} new tokens\n")
    rates = rl_table(runs)
    ratios(name, rates)
    profile_table(runs)
    if not gens:
        return [r["other_load_cores"] for rs in runs.values() for r in rs]
    print(f"\nGeneration only: {GEN_PROMPTS} prompts x {NEW_TOKENS} new tokens, T = 1, median of {GEN_CALLS} calls\n")
    gen_table(gens)
    done = [r for rs in runs.values() for r in rs] + [r for r in gens.values() if r]
    return [r["other_load_cores"] for r in done]


def engine_lists(quick: bool) -> tuple[list[str], list[str], list[str]]:
    """RL and generation children to run, and notes on what is skipped."""
    rl, gen, notes = ["clew-hf", "clew-vllm", "trl"], list(GEN_ENGINES), []
    if not available("trl"):
        rl.remove("trl")
        notes.append("TRL is not installed (`pip install -e '.[bench]'`): its rows and the ratios are skipped.")
    if not available("vllm"):
        rl.remove("clew-vllm")
        gen = [g for g in gen if "vllm" not in g]
        notes.append("vLLM is not installed (`pip install -e '.[vllm]'`): its rows are skipped.")
    if quick and "gen-vllm-compile" in gen:
        gen.remove("gen-vllm-compile")
        notes.append("--quick: no vllm compile=True row, tiny model only.")
    return rl, gen, notes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--model")
    parser.add_argument("--models", default="tiny,llama-75m", help=f"comma-separated: {','.join(MODELS)}")
    parser.add_argument("--lora", action="store_true", help="LoRA r 16 on every linear layer (clew and TRL)")
    parser.add_argument("--lr", type=float, default=LR, help="learning rate of both trainers")
    parser.add_argument("--engines", help=f"RL rows to run, comma-separated: {','.join(RL_ENGINES)}")
    parser.add_argument("--no-gen", action="store_true", help="skip the generation-only table")
    parser.add_argument("--src", help="clew children import clew from SRC/src (an earlier checkout)")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.model), args.steps, args.lora, args.lr)
        return
    steps, reps = (3, 1) if args.quick else (args.steps, args.reps)
    rl, gen, notes = engine_lists(args.quick)
    rl = [k for k in rl if not args.engines or k in args.engines.split(",")]
    gen = [] if args.no_gen else gen
    print(f"machine: {describe()}; steps per run {steps} (first excluded), repetitions {reps}")
    tuning = ("LoRA r 16, all linear layers" if args.lora else "full fine-tuning") + f", lr {args.lr:g}"
    print(f"clew from {args.src or 'this checkout'}; {tuning}")
    for note in notes:
        print(f"- {note}")
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["tiny"] if args.quick else args.models.split(","):
            loads += bench_model(name, build_model(name, Path(tmp) / name), steps, reps, rl, gen, args)
    if loads:
        print(f"\nother processes' load right after each child: max {max(loads):.2f} cores")


if __name__ == "__main__":
    main()
