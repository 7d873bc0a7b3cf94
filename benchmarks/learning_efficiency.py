"""Learning efficiency: presets x seeds on three tasks from the same SFT start and budget.

Usage: python benchmarks/learning_efficiency.py [--quick] [--out DIR]
For each task one SFT warm start (noisy expert) is trained once; every (preset, seed) run then
starts from it with the same iteration budget. Curves are training-rollout success vs
environment steps, aggregated across seeds with the interquartile mean (IQM) and 95 % bootstrap
intervals (rliable-style, resampling seeds). Also reported: env steps to reach 80 % success
(first iteration whose rollout success >= 0.8; runs that never reach it count as not reached).
Writes ``DIR/learning_efficiency.json`` and ``DIR/learning_efficiency.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from clew.eval import bootstrap_interval, iqm
from clew.store.run import read_jsonl
from clew.trainer.config import load_config
from clew.trainer.loop import Trainer
from machine import describe

PRESETS = ["reinforce", "grpo", "rloo", "gigpo", "turn_returns"]
TASKS: dict[str, list[str]] = {
    "keydoor-short": [
        "env.id=keydoor-v0", "env.kwargs={width: 5, height: 5, max_steps: 14}", "rollout.max_turns=14",
        "sft.noise=0.5",
    ],
    "keydoor-long": [
        "env.id=keydoor-v0", "env.kwargs={width: 9, height: 9, layout: corners, max_steps: 50}", "rollout.max_turns=50",
        "sft.noise=0.2", "tasks_per_iteration=2",
    ],
    "keydoor-demo": [
        "env.id=keydoor-v0", "env.kwargs={width: 6, height: 6, max_steps: 16}", "rollout.max_turns=16",
        "sft.noise=0.5", "tasks_per_iteration=8",
    ],
    "bifurcation": [
        "env.id=bifurcation-v0", "env.kwargs={branches: 4, corridor_length: 12}", "rollout.max_turns=16",
        "sft.noise=0.5",
    ],
}  # fmt: skip
COMMON = [
    "tasks_per_iteration=4", "rollout.group_size=8", "rollout.max_new_tokens=4", "rollout.context=window",
    "rollout.window_turns=0", "train.lr=0.0003", "train.minibatch_rows=256", "train.microbatch_rows=128",
    "eval.every=0", "eval.at_start=false", "eval.at_end=false", "eval.episodes=32", "sft.episodes=256",
    "sft.epochs=3", "checkpoint_every=1000",
]  # fmt: skip


def sft_start(task: str, out: Path) -> Path:
    """Train the shared SFT warm start of ``task`` once (iterations=0)."""
    run = out / task / "sft-start"
    policy = run / "sft" / "policy"
    if not policy.exists():
        cfg = load_config(None, [*COMMON, *TASKS[task], "iterations=0", "sft.enabled=true"])
        Trainer(cfg, run).fit()
    return policy


def one_run(task: str, preset: str, seed: int, start: Path, iterations: int, out: Path) -> list[dict[str, Any]]:
    run = out / task / f"{preset}-seed{seed}"
    if not (run / "summary.json").exists():
        if run.exists():
            import shutil

            shutil.rmtree(run)
        overrides = [f"preset={preset}", *COMMON, *TASKS[task], f"policy.model={start}", "sft.enabled=false"]
        cfg = load_config(None, [*overrides, f"seed={seed}", f"iterations={iterations}"])
        Trainer(cfg, run).fit()
    return [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "iteration"]


def steps_to(curve: list[dict[str, Any]], threshold: float = 0.8) -> float:
    for record in curve:
        if record["rollout/success_rate"] >= threshold:
            return float(record["rollout/env_steps_total"])
    return float("inf")


def aggregate(curves: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """IQM over seeds of success at each iteration, with bootstrap intervals; steps to 80 %."""
    n_iter = min(len(c) for c in curves)
    success = np.array([[r["rollout/success_rate"] for r in c[:n_iter]] for c in curves])  # (seeds, iters)
    env_steps = np.mean([[r["rollout/env_steps_total"] for r in c[:n_iter]] for c in curves], axis=0)
    mid = [iqm(success[:, i]) for i in range(n_iter)]
    lo_hi = [bootstrap_interval(success[:, i], iqm, resamples=500) for i in range(n_iter)]
    reach = [steps_to(c) for c in curves]
    finite = [x for x in reach if np.isfinite(x)]
    return {
        "env_steps": env_steps.tolist(),
        "iqm": mid,
        "low": [x[0] for x in lo_hi],
        "high": [x[1] for x in lo_hi],
        "final_iqm": mid[-1],
        "final_interval": lo_hi[-1],
        "steps_to_80": reach,
        "reached_80": len(finite),
        "median_steps_to_80": float(np.median(reach)) if len(finite) * 2 > len(reach) else None,
        "steps_to_80_interval": bootstrap_interval(finite, np.median, resamples=500) if len(finite) > 1 else None,
    }


def plot(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (task, by_preset) in zip(axes[0], results.items()):
        for preset, agg in by_preset.items():
            ax.plot(agg["env_steps"], agg["iqm"], label=preset)
            ax.fill_between(agg["env_steps"], agg["low"], agg["high"], alpha=0.15)
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("rollout success (IQM over seeds)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 presets x 2 seeds x 1 task, 2 iterations")
    parser.add_argument("--out", default="benchmarks/results/learning")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", nargs="*", choices=list(TASKS), help="a subset of the tasks (default: all)")
    parser.add_argument("--presets", nargs="*", choices=PRESETS, help="a subset of the presets (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    presets, seeds, iterations = args.presets or PRESETS, range(args.seeds), args.iterations
    tasks = args.tasks or [t for t in TASKS if t != "keydoor-demo"]
    if args.quick:
        presets, seeds, iterations, tasks = ["grpo", "gigpo"], range(2), 2, ["keydoor-short"]
    start_time = time.time()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for task in tasks:
        start = sft_start(task, out)
        results[task] = {p: aggregate([one_run(task, p, s, start, iterations, out) for s in seeds]) for p in presets}
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning_efficiency.json").write_text(json.dumps(results, indent=1, default=str))
    plot(results, out / "learning_efficiency.png")
    print(f"machine: {describe()}; wall time {time.time() - start_time:.0f} s; {len(list(seeds))} seeds")
    print("| task | preset | final success IQM [95% CI] | seeds reaching 80% | median env steps to 80% [95% CI] |")
    print("|---|---|---|---|---|")
    for task, by_preset in results.items():
        for preset, agg in by_preset.items():
            lo, hi = agg["final_interval"]
            med = agg["median_steps_to_80"]
            ci = agg["steps_to_80_interval"]
            reach = f"{med:,.0f}" if med is not None else "not reached"
            reach += f" [{ci[0]:,.0f}, {ci[1]:,.0f}]" if ci and med is not None else ""
            final = f"{agg['final_iqm']:.2f} [{lo:.2f}, {hi:.2f}]"
            print(f"| {task} | {preset} | {final} | {agg['reached_80']}/{len(agg['steps_to_80'])} | {reach} |")


if __name__ == "__main__":
    main()
