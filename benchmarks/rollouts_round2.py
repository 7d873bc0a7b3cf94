"""Rollouts and data, round 2 (issue 33), measured on the credit map's base cell against its GRPO runs.

Usage: python benchmarks/rollouts_round2.py [--out DIR]

Each variant is a ``credit_map.py`` study of the base cell in its own directory, from the same SFT start (copied
from the credit map's base cell) and with the same budget unless noted; run them with:

    python benchmarks/credit_map.py --cells base --estimators grpo --seeds 3 \\
        --out benchmarks/results/credit_map_distill \\
        --set distill.teacher=benchmarks/results/credit_map_distill/teacher   # the GiGPO seed-0 base run's policy
    python benchmarks/credit_map.py --cells base --estimators grpo --seeds 3 \\
        --out benchmarks/results/credit_map_curriculum \\
        --set curriculum.key=horizon 'curriculum.levels=[10,25]' curriculum.advance_at=0.7
    python benchmarks/credit_map.py --cells base --estimators grpo --seeds 3 --iterations 13 \\
        --out benchmarks/results/credit_map_branching --set rollout.branch_roots=2 rollout.branch_k=4
    python benchmarks/credit_map.py --cells base --estimators grpo --seeds 3 --out benchmarks/results/credit_map_d3s \\
        --set 'filters.d3s_samples=[4,8]' 'filters.d3s_tokens=[0.2,0.5]'

This script reads every study's committed ledger (``ledger.jsonl``, so it needs no run folders) and reports, per
variant, the IQM of final held-out success (64 fresh tasks at the target horizon 25) and of env steps to the cell's
threshold with 95 % bootstrap intervals over seeds, the IQM difference from GRPO with its interval, and the env
steps each run used. Caveats the report repeats: a curriculum's training success is measured at its current level
and branching's includes continuations from mid-episode, so their "steps to threshold" are not comparable with GRPO's;
compare their final held-out success, and the env steps they used. Writes ``DIR/rollouts_round2.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from clew.eval import iqm
from clew.store.run import atomic_write_text, read_jsonl
from credit_map_report import censored_steps, difference, interval

RESULTS = Path(__file__).parent / "results"
VARIANTS = {  # name -> (study directory, estimator in its ledger, what differs from the reference, caveat)
    "grpo": ("credit_map", "grpo", "the reference: GRPO, 20 iterations", ""),
    "distill": ("credit_map_distill", "grpo", "GRPO + on-policy distillation from the GiGPO seed-0 policy (0.86)", ""),
    "curriculum": ("credit_map_curriculum", "grpo", "GRPO, horizon 10 then 25 once training success reaches 0.7",
                   "steps to threshold counted on the current level's success"),
    "branching": ("credit_map_branching", "grpo", "GRPO, 13 iterations, 2 roots x 4 continuations per group",
                  "training success includes mid-episode continuations; 13 iterations for about GRPO's env steps"),
    "d3s": ("credit_map_d3s", "grpo", "GRPO + D3S, N 4 -> 8 of 8 episodes, K 0.2 -> 0.5 of tokens", ""),
    "loop": ("credit_map", "loop", "LOOP preset (leave-one-out PPO, ratio window, |A| filter)", ""),
}  # fmt: skip


def records(study: str, estimator: str) -> list[dict[str, Any]]:
    """The ledger's base-cell records of ``estimator`` in ``study``, one per seed (the newest)."""
    path = RESULTS / study / "ledger.jsonl"
    found: dict[int, dict[str, Any]] = {}
    for entry in read_jsonl(path) if path.exists() else []:
        if entry["cell"] == "base" and entry["estimator"] == estimator:
            found[entry["seed"]] = {**entry["record"], "seed": entry["seed"]}
    return [found[s] for s in sorted(found)]


def report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    ref = runs.get("grpo", [])
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        if not rs:
            continue
        final = [r["final_success"] for r in rs]
        steps = censored_steps(rs)
        row = {
            "seeds": len(rs), "final": final, "final_iqm": iqm(np.array(final)), "final_interval": interval(final),
            "steps_iqm": iqm(np.array(steps)), "steps_interval": interval(steps),
            "env_steps": [r["budget_env_steps"] for r in rs],
        }  # fmt: skip
        if ref and name != "grpo":
            row["final_vs_grpo"] = difference([final], [[r["final_success"] for r in ref]])
            row["steps_vs_grpo"] = difference([steps], [censored_steps(ref)])
        out[name] = row
    return out


def fmt(point: float, bounds: list[float] | None, digits: int = 2) -> str:
    return f"{point:.{digits}f}" + (f" [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]" if bounds else "")


def markdown(rows: dict[str, Any]) -> str:
    lines = [
        "| variant | what differs | seeds | final success IQM [95 % CI] | vs GRPO | env steps to 0.7 (IQM) | vs GRPO "
        "| env steps used | per seed final |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        what, caveat = VARIANTS[name][2], VARIANTS[name][3]
        d, s = r.get("final_vs_grpo"), r.get("steps_vs_grpo")
        versus = fmt(d[0], d[1:] if d[1] is not None else None) if d else ""
        steps_versus = fmt(s[0], s[1:] if s[1] is not None else None, 0) if s else ""
        lines.append(
            f"| {name} | {what}{' (' + caveat + ')' if caveat else ''} | {r['seeds']} | "
            f"{fmt(r['final_iqm'], r['final_interval'])} | {versus} | {fmt(r['steps_iqm'], r['steps_interval'], 0)} | "
            f"{steps_versus} | {int(np.mean(r['env_steps']))} | {', '.join(f'{x:.2f}' for x in r['final'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "rollouts_round2"))
    args = parser.parse_args()
    runs = {name: records(study, est) for name, (study, est, _, _) in VARIANTS.items()}
    rows = report(runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "rollouts_round2.json", json.dumps(rows, indent=2))
    atomic_write_text(out / "rollouts_round2.md", markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
