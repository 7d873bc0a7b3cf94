"""Learner memory and speed: full fine-tuning vs LoRA, float32 vs bfloat16, gradient checkpointing.

Usage: python benchmarks/memory.py [--quick] [--models 75m,qwen0.5b] [--settings full-fp32,...] [--steps N]
       [--rows R] [--prompt-tokens P] [--action-tokens A] [--microbatch-rows M] [--threads T] [--json OUT]

One fixed batch of synthetic rows (R rows of P random prompt tokens + A random action tokens, a random
advantage per row, old log-probs = -ln(vocab), about what a random-init model assigns, so PPO ratios are
near 1; seed 0) goes through ``Learner.update`` (ppo_clip, one optimizer step per update: minibatch = all
rows, microbatches of M rows, no step guard, no KL). Every (model, setting) runs in its own fresh
subprocess, so peak RSS (``ru_maxrss`` at the end of the child: model build, optimizer state, activations
and logits all included) is that setting's alone. learner tok/s = R (P + A) x N / wall time of N updates
after one warm-up update; s/step = that wall time / N. other load = the mean number of cores other
processes used while the child ran (each child first waits up to 2 min for a quiet machine): on a 2-core
machine any of it slows a 2-thread child several-fold, so tok/s is only comparable between rows near 0.
M defaults to 4, not R: ``token_logprobs`` holds several float32 (rows x T x vocab) tensors, 0.6 GB each for
4 x 256 tokens of Qwen's 151936-token vocabulary, four times that for 16 rows.

Settings:
- ``full-fp32``: every weight trained, float32 (the default);
- ``full-bf16``: ``train.dtype=bfloat16``, CPU autocast over float32 master weights and AdamW state;
- ``full-bf16-weights``: the model itself in bfloat16 (weights, gradients and AdamW state all bf16),
  no autocast: the alternative autocast-with-fp32-master was chosen over;
- ``lora-fp32`` / ``lora-bf16``: LoRA r 16, alpha 32 on q/k/v/o/gate/up/down_proj (peft), base frozen;
- ``lora-ckpt``: LoRA, float32, ``train.gradient_checkpointing=true``.

Models (random init from a config, nothing downloaded, except ``smollm2``):
- ``75m``: Llama, hidden 768, 12 layers, 12 heads / 4 KV heads, intermediate 2048, vocab 512 (the tiny
  tokenizer's), tied embeddings, ~75 M parameters: the shape of ``llama-75m`` in ``throughput.py``;
- ``qwen0.5b``: Qwen2 shaped like Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads / 2 KV heads,
  intermediate 4864, vocab 151936, tied embeddings, ~494 M parameters (136 M of them the embedding).
- ``smollm2`` (not in the default ``--models``): SmolLM2-135M-Instruct with its real weights, from
  ``clew models get smollm2-135m-instruct``; the rows are still random tokens (speed and memory do not
  depend on what the tokens are).

The learner reads only ``.model`` and ``.pad_id`` of its policy, so the children hand it exactly that
(``Policy`` below) instead of an ``HFPolicy``, which would need a tokenizer of the model's vocabulary.
A child that fails (out of memory: killed, or a nonzero exit) gets ``failed: <reason>`` in its row.
``--quick``: the 75m model, 2 rows x (24 + 8) tokens, 1 step, no warm-up: a smoke test of every setting's code
path (about 5-10 s a child, most of it imports), not a measurement. It runs one thread unless ``--threads`` says
otherwise: two threads on a 2-core machine that is busy with something else run several times slower (OpenMP
threads wait on each other), and a smoke test should not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from machine import busy_cores, describe, wait_for_quiet

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_R, LORA_ALPHA = 16, 32
PAD_ID = 0
EXCEPTION = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b")


@dataclass(frozen=True)
class Setting:
    label: str
    lora: bool = False
    dtype: str = "float32"  # train.dtype: bfloat16 is autocast over float32 master weights
    checkpointing: bool = False
    bf16_weights: bool = False  # the model itself cast to bfloat16 (no autocast)


SETTINGS = {
    "full-fp32": Setting("full fp32"),
    "full-bf16": Setting("full bf16", dtype="bfloat16"),
    "full-bf16-weights": Setting("full bf16 weights", bf16_weights=True),
    "lora-fp32": Setting("LoRA fp32", lora=True),
    "lora-bf16": Setting("LoRA bf16", lora=True, dtype="bfloat16"),
    "lora-ckpt": Setting("LoRA + checkpointing", lora=True, checkpointing=True),
}
MODELS = {
    "75m": "Llama, hidden 768, 12 layers, 12 heads / 4 KV heads, intermediate 2048, vocab 512, tied",
    "qwen0.5b": "Qwen2.5-0.5B shape: hidden 896, 24 layers, 14 heads / 2 KV heads, intermediate 4864, "
    "vocab 151936, tied",
    "smollm2": "SmolLM2-135M-Instruct, its real weights (`clew models get smollm2-135m-instruct`): Llama, hidden 576, "
    "30 layers, 9 heads / 3 KV heads, intermediate 1536, vocab 49152, tied",
}


@dataclass
class Policy:
    """What ``Learner`` reads from an ``HFPolicy``: the model and the pad id."""

    model: Any
    pad_id: int


# --- child ------------------------------------------------------------------------------------------------
def model_config(name: str) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    if name == "75m":
        return LlamaConfig(
            vocab_size=512, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
            intermediate_size=2048, max_position_embeddings=4096, tie_word_embeddings=True, pad_token_id=PAD_ID,
        )  # fmt: skip
    if name == "qwen0.5b":
        return Qwen2Config(
            vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
            intermediate_size=4864, max_position_embeddings=4096, tie_word_embeddings=True, pad_token_id=PAD_ID,
        )  # fmt: skip
    raise ValueError(f"unknown model {name!r}; choose from {list(MODELS)}")


def build_model(name: str, setting: Setting) -> Any:
    """Random-init model (seed 0; smollm2: its real weights), in bfloat16 for ``bf16_weights``, LoRA if asked."""
    import torch
    from transformers import AutoModelForCausalLM

    from clew.policy.lora import attach

    torch.manual_seed(0)
    dtype = torch.bfloat16 if setting.bf16_weights else torch.float32
    if name == "smollm2":
        from clew.policy.models import materialize

        model = AutoModelForCausalLM.from_pretrained(materialize("smollm2-135m-instruct"), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_config(model_config(name), dtype=dtype)
    if setting.lora:
        model = attach(model, r=LORA_R, alpha=LORA_ALPHA, dropout=0.0, target_modules=LORA_TARGETS, seed=0)
    return model


def synthetic_rows(rows: int, prompt: int, action: int, vocab: int, seed: int = 0) -> list[Any]:
    """Fixed random rows: prompt span + action span, one advantage per row, old log-probs -ln(vocab)."""
    import torch

    from clew.tensors import TokenRow

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, prompt + action), generator=gen).tolist()
    advantages = torch.randn(rows, generator=gen).tolist()
    old = -math.log(vocab)
    return [
        TokenRow(
            spans=[(r[:prompt], False), (r[prompt:], True)],
            advantages=[adv] * action,
            behavior_logprobs=[old] * action,
            episode=i,
        )
        for i, (r, adv) in enumerate(zip(ids, advantages))
    ]


def child(spec: dict[str, Any]) -> None:
    import torch

    from clew.policy.lora import trainable
    from clew.trainer.config import ObjectiveConfig, TrainConfig
    from clew.trainer.learner import Learner

    torch.set_num_threads(spec["threads"])
    setting = SETTINGS[spec["setting"]]
    model = build_model(spec["model"], setting)
    built_rss = _rss_gib()
    train = TrainConfig(
        lr=1e-5, ppo_epochs=1, minibatch_rows=spec["rows"], microbatch_rows=spec["microbatch_rows"],
        guard_max_kl=None, dtype=setting.dtype, gradient_checkpointing=setting.checkpointing,
    )  # fmt: skip
    learner = Learner(Policy(model, PAD_ID), train, ObjectiveConfig())
    rows = synthetic_rows(spec["rows"], spec["prompt_tokens"], spec["action_tokens"], model.config.vocab_size)
    for warm in range(spec["warmup"]):
        learner.update(rows, seed=warm)
    start = time.perf_counter()
    for step in range(spec["steps"]):
        metrics = learner.update(rows, seed=spec["warmup"] + step)
    wall = time.perf_counter() - start
    tokens = spec["rows"] * (spec["prompt_tokens"] + spec["action_tokens"])
    result = {
        "trained_params": sum(p.numel() for p in trainable(model)),
        "total_params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": tokens * spec["steps"] / wall,
        "s_per_step": wall / spec["steps"],
        "built_rss_gib": built_rss,
        "peak_rss_gib": _rss_gib(),
        "finite_loss": math.isfinite(metrics["train/loss"]),
    }
    print("RESULT " + json.dumps(result), flush=True)


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


# --- parent -----------------------------------------------------------------------------------------------
def measure(spec: dict[str, Any], quiet: bool, timeout: float | None) -> dict[str, Any]:
    """Run one child; its result, or ``{"error": reason}``."""
    if quiet:
        wait_for_quiet()
    cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
    before = _cpu_seconds()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    after = _cpu_seconds()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": _reason(proc.returncode, proc.stderr), "stderr_tail": proc.stderr[-2000:]}
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    result["other_load"] = max(0.0, (after[0] - before[0] - (after[1] - before[1])) / (after[2] - before[2]))
    return result


def _reason(returncode: int, stderr: str) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    raised = [line for line in lines if EXCEPTION.match(line)]  # the traceback's last line names the exception
    return ((raised or lines or [f"exit {returncode}"])[-1])[:160]


def _cpu_seconds() -> tuple[float, float, float]:
    """(busy CPU seconds machine-wide, CPU seconds of this process and its children, wall seconds)."""
    with open("/proc/stat") as handle:
        ticks = [float(x) for x in handle.readline().split()[1:]]
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own, time.monotonic()


def row(model: str, setting: str, r: dict[str, Any]) -> str:
    label = SETTINGS[setting].label
    if "error" in r:
        return f"| {model} | {label} | failed: {r['error'].replace('|', '/')} | | | | |"
    cells = [
        model, label, f"{r['trained_params'] / 1e6:,.2f} M", f"{r['peak_rss_gib']:.2f}", f"{r['tokens_per_s']:,.0f}",
        f"{r['s_per_step']:.2f}", f"{r['other_load']:.2f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def parse_list(value: str, allowed: dict[str, Any], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; choose from {','.join(allowed)}")
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="75m model, 2 rows x (24 + 8) tokens, 1 step, no warm-up")
    parser.add_argument("--models", default="75m,qwen0.5b", help=f"comma-separated: {','.join(MODELS)}")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated: {','.join(SETTINGS)}")
    parser.add_argument("--steps", type=int, default=3, help="timed updates after one warm-up update")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=192)
    parser.add_argument("--action-tokens", type=int, default=64)
    parser.add_argument("--microbatch-rows", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per child (default: none)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: one JSON spec
    args = parser.parse_args()
    if args.one:
        child(json.loads(args.one))
        return
    models = parse_list(args.models, MODELS, "models")
    settings = parse_list(args.settings, SETTINGS, "settings")
    shape = {
        "rows": args.rows, "prompt_tokens": args.prompt_tokens, "action_tokens": args.action_tokens,
        "microbatch_rows": min(args.microbatch_rows, args.rows), "steps": args.steps, "warmup": 1,
        "threads": args.threads or (1 if args.quick else 2),
    }  # fmt: skip
    if args.quick:
        models = ["75m"]
        shape.update(rows=2, prompt_tokens=24, action_tokens=8, microbatch_rows=2, steps=1, warmup=0)
    results = run_all(models, settings, shape, quiet=not args.quick, timeout=args.timeout)
    report(results, shape, args)


def run_all(
    models: list[str], settings: list[str], shape: dict[str, Any], quiet: bool, timeout: float | None
) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    results = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        overall = progress.add_task("memory benchmark", total=len(models) * len(settings))
        for model in models:
            for setting in settings:
                progress.update(overall, description=f"{model} / {SETTINGS[setting].label}")
                spec = {"model": model, "setting": setting, **shape}
                results.append({"model": model, "setting": setting, **measure(spec, quiet, timeout)})
                progress.advance(overall)
    return results


def report(results: list[dict[str, Any]], shape: dict[str, Any], args: argparse.Namespace) -> None:
    import torch

    machine = (
        f"machine: {describe()}; threads {shape['threads']}; torch {torch.__version__}; date {dt.date.today()}; "
        f"other processes {busy_cores(0.5):.2f} cores now"
    )
    tokens = shape["rows"] * (shape["prompt_tokens"] + shape["action_tokens"])
    print(machine)
    print(
        f"batch: {shape['rows']} rows x ({shape['prompt_tokens']} prompt + {shape['action_tokens']} action) tokens "
        f"= {tokens} tokens, microbatches of {shape['microbatch_rows']} rows, {shape['steps']} timed update(s) after "
        f"{shape['warmup']} warm-up; LoRA r {LORA_R}, alpha {LORA_ALPHA} on {'/'.join(LORA_TARGETS)}"
    )
    for model in dict.fromkeys(r["model"] for r in results):
        print(f"- {model}: {MODELS[model]}")
    print()
    print("| model | setting | trained params | peak RSS GiB | learner tok/s | s/step | other load |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(row(r["model"], r["setting"], r))
    if args.quick:
        print("\n--quick: a smoke test (tiny batch, 1 step), not a measurement.")
    if args.json:
        payload = {"machine": machine, "shape": shape, "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
