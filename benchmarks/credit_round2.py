"""Credit round 2 (issue 32) on a task with a gold answer: every new estimator against GRPO, several seeds.

Usage: python benchmarks/credit_round2.py [--estimators ...] [--seeds N] [--workers N] [--out DIR] [--report-only]
Each run is ``configs/toolcalc-igpo.yaml`` (toolcalc-v0, one operation, the tiny model after a noisy-expert SFT,
10 iterations of 8 tasks x G 8, window-0 context) with ``preset=<estimator>`` and ``seed=<k>``: within a seed
every estimator starts from the same SFT (it is seeded), so the comparison is paired. The gold-answer estimators
(IGPO, A^2TGPO, PBSD) need toolcalc's ``gold_reply``; the credit map's ``dial-v0`` has none. SPO branches every
turn (``cutpoint_interval=1``: toolcalc episodes are 2-3 turns).

Reported per estimator: held-out success per seed (128 episodes, temperature 1), the mean over seeds with a
95 % percentile-bootstrap interval, the mean paired difference from GRPO with its bootstrap interval, and the
seconds of the estimator's extra pass per iteration. Runs are cached by their overrides (``study.py``). Writes
``DIR/credit_round2.json`` and ``DIR/credit_round2.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from clew.eval import bootstrap_interval
from clew.store.run import atomic_write_text, read_jsonl
from machine import describe
from study import finished, train_run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "toolcalc-igpo.yaml"
ESTIMATORS = {
    "grpo": ["preset=grpo"], "gigpo": ["preset=gigpo"], "igpo": ["preset=igpo"],
    "a2tgpo": ["preset=igpo", "credit.name=a2tgpo"],
    "infopo": ["preset=infopo"], "pbsd": ["preset=pbsd"], "siop": ["preset=siop"], "oprl": ["preset=oprl"],
    "spo": ["preset=spo", "credit.params.cutpoint_interval=1"], "ppo": ["preset=ppo"],
}  # fmt: skip


def overrides(estimator: str, seed: int) -> list[str]:
    return [*ESTIMATORS[estimator], f"seed={seed}"]


def one(estimator: str, seed: int, out: Path, threads: int) -> None:
    run = out / f"{estimator}-seed{seed}"
    if not finished(run, overrides(estimator, seed)):
        train_run(run, overrides(estimator, seed), threads, CONFIG)


def record(run: Path) -> dict[str, Any] | None:
    """Held-out success at the start and the end, and the mean seconds of the estimator's extra credit pass."""
    summary = run / "summary.json"
    if not summary.exists():
        return None
    s = json.loads(summary.read_text())
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "iteration"]
    extra = [sum(v for k, v in r.items() if k.startswith("time/credit_")) for r in rows]
    return {
        "start": float(s["first_eval"]["eval/success_rate"]), "final": float(s["last_eval"]["eval/success_rate"]),
        "credit_pass_s": float(np.mean(extra)) if extra else 0.0,
        "iteration_s": float(np.mean([r["time/iteration_s"] for r in rows])) if rows else 0.0,
    }  # fmt: skip


def report(out: Path, estimators: list[str], seeds: int) -> str:
    runs = {(e, k): record(out / f"{e}-seed{k}") for e in estimators for k in range(seeds)}
    grpo = {k: r["final"] for (e, k), r in runs.items() if e == "grpo" and r}
    lines = [f"machine: {describe()}; held-out success (128 episodes, temperature 1) after 10 iterations", "",
             "| estimator | per seed | mean [95 % CI] | minus GRPO, paired [95 % CI] | extra pass / iteration |",
             "|---|---|---|---|---|"]  # fmt: skip
    table: dict[str, Any] = {}
    for est in estimators:
        done = {k: r for (e, k), r in runs.items() if e == est and r}
        if not done:
            continue
        finals = np.array([r["final"] for r in done.values()])
        low, high = bootstrap_interval(finals, np.mean)
        diffs = np.array([r["final"] - grpo[k] for k, r in done.items() if k in grpo])
        d_low, d_high = bootstrap_interval(diffs, np.mean) if diffs.size else (np.nan, np.nan)
        cost = np.mean([r["credit_pass_s"] for r in done.values()])
        per_seed = " / ".join(f"{100 * r['final']:.1f}" for r in done.values())
        diff = (
            f"{100 * diffs.mean():+.1f} [{100 * d_low:+.1f}, {100 * d_high:+.1f}]"
            if diffs.size and est != "grpo"
            else "—"
        )
        lines.append(f"| {est} | {per_seed} | {100 * finals.mean():.1f} [{100 * low:.1f}, {100 * high:.1f}] | {diff} "
                     f"| {cost:.2f} s of {np.mean([r['iteration_s'] for r in done.values()]):.2f} s |")  # fmt: skip
        table[est] = {"runs": {str(k): r for k, r in done.items()}, "mean": float(finals.mean())}
    starts = {k: r["start"] for (e, k), r in sorted(runs.items()) if r and e == estimators[0]}
    lines += [
        "",
        "SFT starts (held-out, seed: success): " + ", ".join(f"{k}: {100 * v:.1f} %" for k, v in starts.items()),
    ]
    lines += ["(with 3 seeds a percentile bootstrap over seeds is coarse: read the per-seed pairs)"]
    atomic_write_text(out / "credit_round2.json", json.dumps(table, indent=1))
    text = "\n".join(lines)
    atomic_write_text(out / "credit_round2.md", text + "\n")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--estimators", nargs="*", choices=list(ESTIMATORS), default=list(ESTIMATORS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="parallel runs, one torch thread each")
    parser.add_argument("--out", default="benchmarks/results/credit_round2")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report_only:
        jobs = [(e, k) for k in range(args.seeds) for e in args.estimators]
        with ProcessPoolExecutor(args.workers) as pool:
            for future in [pool.submit(one, e, k, out, 1) for e, k in jobs]:
                future.result()
    print(report(out, args.estimators, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
