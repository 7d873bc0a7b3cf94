"""Learning curves from ``metrics.jsonl``: success and return vs environment steps, one run or several methods
compared (matplotlib, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from clew.eval.compare import Method
from clew.store.run import read_jsonl


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Plot rollout success/return per iteration and held-out success with its 95 % interval, against env steps (an
    offline run, which takes none, against iterations)."""
    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "iteration" and "rollout/success_rate" in r]  # not offline passes
    evals = [r for r in records if r.get("kind") == "eval"]
    offline = not any(r.get("rollout/env_steps_total") for r in records)  # no env steps: against iterations
    x_key = "iteration" if offline else "rollout/env_steps_total"
    fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = [r[x_key] for r in train]
        ax_s.plot(steps, [r["rollout/success_rate"] for r in train], label="training rollouts", alpha=0.6)
        ax_r.plot(steps, [r["rollout/mean_return"] for r in train], label="training rollouts")
    if evals:
        steps = [r[x_key] for r in evals]
        ax_s.plot(steps, [r["eval/success_rate"] for r in evals], "o-", color="C1", label="held-out eval (95% CI)")
        ax_s.fill_between(
            steps, [r["eval/success_low"] for r in evals], [r["eval/success_high"] for r in evals], alpha=0.2
        )
        ax_r.plot(steps, [r["eval/mean_return"] for r in evals], "o-", color="C1", label="held-out eval")
    for ax, title in ((ax_s, "success rate"), (ax_r, "mean return")):
        ax.set_xlabel("iterations (passes over stored episodes)" if offline else "environment steps")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_s.set_ylim(-0.02, 1.02)
    fig.suptitle(str(Path(run_dir).name))
    fig.tight_layout()
    path = out or Path(run_dir) / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_comparison(methods: Sequence[Method], out: Path) -> Path:
    """Left: each method's training success against env steps (mean over runs, 95 % bootstrap band); right: its
    final held-out success per run (dots) and IQM with its 95 % interval (bar)."""
    fig, (ax_c, ax_f) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for i, method in enumerate(methods):
        colour = f"C{i % 10}"
        if method.grid:
            low, high = zip(*method.band)
            label = f"{method.name} ({len(method.runs)} runs)"
            ax_c.plot(method.grid, method.curve, color=colour, label=label)
            ax_c.fill_between(method.grid, low, high, color=colour, alpha=0.2)
        final = method.final
        if final.get("scores"):
            ax_f.scatter([i] * len(final["scores"]), final["scores"], color=colour, alpha=0.5, s=14)
            lo, hi = final["iqm_interval"]
            spread = [[max(0.0, final["iqm"] - lo)], [max(0.0, hi - final["iqm"])]]
            ax_f.errorbar([i], [final["iqm"]], yerr=spread, fmt="s", color=colour)
    ax_c.set(xlabel="environment steps", title="training success (mean, 95 % band over runs)", ylim=(-0.02, 1.02))
    ax_c.grid(alpha=0.3)
    ax_c.legend(fontsize=8)
    ax_f.set_xticks(range(len(methods)), [m.name for m in methods], rotation=30, ha="right")
    ax_f.set_xlim(-0.5, len(methods) - 0.5)
    ax_f.set(title="final held-out success (IQM, 95 % CI)", ylim=(-0.02, 1.02))
    ax_f.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
