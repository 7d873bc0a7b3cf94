"""One-step replays of the end-of-turn collapse from a saved pre-collapse state (issue #12).

Usage: python benchmarks/stability.py
The state is the regression test's fixture (``tests/data/pre_collapse``): a keydoor 9x9 GiGPO run
of the learning grid after 3 iterations (policy, AdamW state, every 4th row of iteration 4 with its
advantages). Each line applies one learner update under one candidate setting and prints the mean
log-prob of the end-of-turn token (sampled at the end of every action) before and after, so the
candidates named in the collapse diagnosis can be compared on the same state:
- aggregation: token_mean (the old GiGPO preset) vs seq_mean_token_mean with episode units (default);
- a fresh AdamW (what the first RL step sees) vs the run's own optimizer state;
- the step guard on and off;
- which parameters carry the drop: the update kept for one parameter group, the rest restored.
A KL anchor to the starting policy is not replayed: its gradient is zero while the policy equals the
anchor, so it cannot act on a single step from an un-drifted state.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.trainer.test_stability import GRID, STATE, _end_of_turn_logprob, _rows

from clew.policy import HFPolicy
from clew.trainer.config import ObjectiveConfig, TrainConfig
from clew.trainer.learner import Learner

Keep = Callable[[str], bool]


def replay(aggregation: str, guard: float | None, adam_state: bool = True, keep: Keep | None = None) -> tuple:
    """(end-of-turn log-prob before, after, learner metrics) for one update from the saved state."""
    torch.manual_seed(0)
    policy = HFPolicy.from_pretrained(STATE / "policy")
    rows, seed = _rows()
    start = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    learner = Learner(policy, TrainConfig(**GRID, guard_max_kl=guard), ObjectiveConfig(aggregation=aggregation))
    if adam_state:
        learner.optimizer.load_state_dict(torch.load(STATE / "optimizer.pt"))
    before = _end_of_turn_logprob(policy, rows)
    metrics = learner.update(rows, seed)
    if keep is not None:
        with torch.no_grad():
            for name, p in policy.model.named_parameters():
                if not keep(name):
                    p.copy_(start[name])
    return before, _end_of_turn_logprob(policy, rows), metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first four settings only (CI smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases: list[tuple[str, str, float | None, bool, Keep | None]] = [
        ("token_mean, run's AdamW state, no guard", "token_mean", None, True, None),
        ("seq_mean_token_mean (episode units), no guard", "seq_mean_token_mean", None, True, None),
        ("token_mean, guard 0.05", "token_mean", 0.05, True, None),
        ("seq_mean_token_mean, guard 0.05 (defaults)", "seq_mean_token_mean", 0.05, True, None),
        ("token_mean, fresh AdamW, no guard", "token_mean", None, False, None),
        ("token_mean, fresh AdamW, guard 0.05", "token_mean", 0.05, False, None),
        ("token_mean, keep only the tied embedding's update", "token_mean", None, True, lambda n: "embed" in n),
        ("token_mean, keep all but the embedding's update", "token_mean", None, True, lambda n: "embed" not in n),
        ("token_mean, keep only layers 0-1", "token_mean", None, True, lambda n: ".layers.0." in n or ".layers.1." in n),  # noqa: E501
        ("token_mean, keep only layers 2-3 + final norm", "token_mean", None, True,
         lambda n: ".layers.2." in n or ".layers.3." in n or n == "model.norm.weight"),
    ]  # fmt: skip
    cases = cases[:4] if args.quick else cases
    print("| setting | end-of-turn log-prob before -> after | probe KL | backtracks | rejected |")
    print("|---|---|---|---|---|")
    for label, aggregation, guard, adam_state, keep in cases:
        before, after, m = replay(aggregation, guard, adam_state, keep)
        keys = ("train/probe_kl", "train/backtracks", "train/rejected_steps")
        guard_cells = [f"{m[k]:.4g}" if k in m else "-" for k in keys]
        cells = [label, f"{before:.3f} -> {after:.3f}", *guard_cells]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
