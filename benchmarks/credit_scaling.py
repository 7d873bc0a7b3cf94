"""Wall time of every credit estimator at 10k, 100k and 1M turns (tree methods: tokens).

Usage: python benchmarks/credit_scaling.py [--quick]
Synthetic batches: groups of 8 episodes of 1-40 turns, 8 anchor states per group, 4 tokens a
turn over a 16-token vocabulary (so prefix trees branch), a belief in the gold answer per turn (IGPO), a
value per token (GAE), a greedy return per row (ReMax), a counterfactual gain (InfoPO), a privileged log-ratio
(PBSD), an outcome-mode belief and weight (SIOP), a PRM log-ratio (OPRL) and a branch value at every 2nd turn
(SPO) and subgoal segments (HiPER) per row. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from clew.credit import CreditInput, available, compute
from machine import describe, wait_for_quiet


def synthetic(n_turns: int, tokens_per_turn: int = 4, seed: int = 0) -> CreditInput:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 41, size=n_turns // 10 + 8)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n_turns) + 1]
    lengths[-1] -= max(0, int(lengths.sum()) - n_turns)
    lengths = lengths[lengths > 0]
    n_ep = lengths.size
    episode = np.repeat(np.arange(n_ep), lengths)
    turn = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    group = episode // 8
    outcome = rng.integers(0, 2, size=n_ep).astype(float)[episode]
    reward = np.where(np.r_[turn[1:] == 0, True], outcome, 0.0)
    n = turn.size
    return CreditInput.from_arrays(
        group, episode, turn, reward, outcome, rng.integers(0, 8, size=n),
        token_offsets=np.arange(n + 1) * tokens_per_turn,
        entropy=rng.random(n * tokens_per_turn), token_ids=rng.integers(0, 16, size=n * tokens_per_turn),
        outcome_explicit=np.ones(n, dtype=bool), observation=rng.integers(0, 8, size=n),
        gold_logprob=-rng.random(n) * 5, value=rng.random(n * tokens_per_turn), baseline=outcome * 0.5,
        logprob=-rng.random(n * tokens_per_turn), counterfactual_gain=rng.normal(size=n),
        privileged_logratio=rng.normal(size=n), mode_logprob=-rng.random(n) * 5,
        mode_weight=rng.random(n_ep)[episode], prm_logratio=rng.normal(size=n),
        branch_value=np.where((turn > 0) & (turn % 2 == 0), rng.random(n), np.nan),
        segment_start=rng.random(n) < 0.3,
    )  # fmt: skip


def time_one(name: str, inp: CreditInput, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        compute(name, inp)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10k turns only")
    args = parser.parse_args()
    sizes = [10_000] if args.quick else [10_000, 100_000, 1_000_000]
    load = wait_for_quiet()
    print(f"machine: {describe()}; other processes at start: {load:.2f} cores")
    print("| estimator | " + " | ".join(f"{n:,} turns" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    inputs = {n: synthetic(n) for n in sizes}
    for name in available():
        cells = [f"{time_one(name, inputs[n], 3 if n < 1_000_000 else 1):.3f} s" for n in sizes]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"(tokens = 4 x turns: {', '.join(f'{4 * n:,}' for n in sizes)})")


if __name__ == "__main__":
    main()
