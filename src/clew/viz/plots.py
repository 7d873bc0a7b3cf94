"""Learning curves from ``metrics.jsonl``: success and return vs environment steps (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from clew.store.run import read_jsonl


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Plot rollout success/return per iteration and held-out success with its 95 % interval."""
    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "iteration"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = [r["rollout/env_steps_total"] for r in train]
        ax_s.plot(steps, [r["rollout/success_rate"] for r in train], label="training rollouts", alpha=0.6)
        ax_r.plot(steps, [r["rollout/mean_return"] for r in train], label="training rollouts")
    if evals:
        steps = [r["rollout/env_steps_total"] for r in evals]
        ax_s.plot(steps, [r["eval/success_rate"] for r in evals], "o-", color="C1", label="held-out eval (95% CI)")
        ax_s.fill_between(
            steps, [r["eval/success_low"] for r in evals], [r["eval/success_high"] for r in evals], alpha=0.2
        )
        ax_r.plot(steps, [r["eval/mean_return"] for r in evals], "o-", color="C1", label="held-out eval")
    for ax, title in ((ax_s, "success rate"), (ax_r, "mean return")):
        ax.set_xlabel("environment steps")
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
