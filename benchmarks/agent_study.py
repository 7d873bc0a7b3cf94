"""A real chat model as a multi-turn agent (issue 28, items 1 and 4): shipped -> SFT -> RL, held-out.

Usage: python benchmarks/agent_study.py [--families ...] [--estimators ...] [--seeds N] [--out DIR]
                                        [--report-only] [--set KEY=VALUE ...]
Per family (a shipped config, ``configs/smollm2-<family>.yaml``: SmolLM2-135M-Instruct, LoRA, vLLM):
  shipped  the model as downloaded, evaluated on the held-out seeds (iterations=0, no SFT);
  sft      the config's short SFT on the env's scripted expert (noisy), rendered in the chat template,
           evaluated the same way; trained once and shared by every RL run of the family;
  RL       ``--estimators`` x ``--seeds`` runs of the config's RL from the SFT start, each ending with the
           held-out evaluation (``eval.episodes`` episodes at temperature 1, the same task seeds in every run).
Reported per family and stage: held-out success per seed, pooled over seeds with a 95 % Wilson interval,
and the mean over seeds with a 95 % percentile-bootstrap interval over seeds; per estimator pair, the
difference of seed means (``clew.eval.stats.stratified_difference``, one stratum). Runs are cached by
their overrides (``study.py``): a rerun in another session skips finished runs and resumes the study.
Runs go one at a time (each uses every core: vLLM and the learner share the machine), seed-major. Writes
``DIR/agent_study.json`` and ``DIR/agent_study.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from clew.eval import bootstrap_interval, stratified_difference, wilson_interval
from clew.store.run import atomic_write_text
from machine import describe
from study import finished, study_key, train_run

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {
    f: ROOT / "configs" / f"smollm2-{f}.yaml"
    for f in ("twx-coin", "textworld-coin", "agents-calc", "smolagents-multiply")
}
ESTIMATORS = {"grpo": ["preset=grpo"], "gigpo": ["preset=gigpo"], "rloo": ["preset=rloo"]}
SHIPPED = ["iterations=0", "sft.enabled=false", "eval.at_start=true"]
SFT = ["iterations=0", "sft.enabled=true", "eval.at_start=true"]


def stages(family: str, estimators: list[str], seeds: int, out: Path, extra: list[str]) -> dict[str, list[str]]:
    """Run name -> its overrides of the family's config: shipped, sft, then ``<estimator>-seed<k>``."""
    start = out / family / "sft" / "sft" / "policy"
    rl = [f"policy.model={start}", "sft.enabled=false", "eval.at_start=false", *extra]
    runs = {"shipped": SHIPPED, "sft": SFT}
    for est in estimators:
        runs |= {f"{est}-seed{s}": [*ESTIMATORS[est], *rl, f"seed={s}"] for s in range(seeds)}
    return runs


def train(families: list[str], runs: dict[str, dict[str, list[str]]], out: Path) -> list[str]:
    """Every unfinished run, seed-major (``ordered``), so an interrupted study covers every family; returns the
    failures."""
    failures, threads = [], os.cpu_count() or 2
    for family, name in ordered(families, runs):
        overrides, run = runs[family][name], out / family / name
        if finished(run, overrides):
            continue
        print(f"[agent_study] {family} {name} ...", flush=True)
        try:
            train_run(run, overrides, threads, FAMILIES[family])
        except Exception as exc:  # one failure must not lose the other runs: report it, go on
            failures.append(f"{family} {name}: {type(exc).__name__}: {exc}")
    return failures


def ordered(families: list[str], runs: dict[str, dict[str, list[str]]]) -> list[tuple[str, str]]:
    """(family, run) pairs: the starts first, then RL runs by seed, estimator, family (in the order given)."""
    starts = [(f, n) for f in families for n in runs[f] if "-seed" not in n]
    rl = [(f, n) for f in families for n in runs[f] if "-seed" in n]
    estimators = list(dict.fromkeys(n.rsplit("-seed", 1)[0] for _, n in rl))

    def key(pair: tuple[str, str]) -> tuple[int, int, int]:
        estimator, seed = pair[1].rsplit("-seed", 1)
        return int(seed), estimators.index(estimator), families.index(pair[0])

    return starts + sorted(rl, key=key)


def held_out(run: Path) -> dict[str, Any]:
    """The run's last held-out evaluation: success rate, episodes, successes, seconds of the run."""
    summary = json.loads((run / "summary.json").read_text())
    last = summary["last_eval"]
    n = int(last["eval/episodes"])
    rate = float(last["eval/success_rate"])
    return {"success": rate, "episodes": n, "successes": round(rate * n), "commit": (study_key(run) or {})["commit"]}


def arm(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed successes, pooled Wilson interval, mean over seeds with a bootstrap interval over seeds."""
    rates = [r["success"] for r in records]
    wins, n = sum(r["successes"] for r in records), sum(r["episodes"] for r in records)
    spread = list(bootstrap_interval(rates, resamples=2000)) if len(rates) > 1 else None
    return {"seeds": len(records), "per_seed": rates, "pooled": wins / n, "episodes": n,
            "pooled_interval": list(wilson_interval(wins, n)), "mean": float(np.mean(rates)),
            "mean_interval": spread}  # fmt: skip


def collect(families: list[str], runs: dict[str, dict[str, list[str]]], out: Path) -> dict[str, Any]:
    """Per family: each stage's arm over its finished runs (shipped, sft, one per estimator)."""
    report: dict[str, Any] = {}
    for family in families:
        arms: dict[str, list[dict[str, Any]]] = {}
        for name, overrides in runs[family].items():
            if finished(out / family / name, overrides):
                arms.setdefault(name.split("-seed")[0], []).append(held_out(out / family / name))
        report[family] = {stage: arm(records) | {"commits": sorted({r["commit"] for r in records})}
                          for stage, records in arms.items()}  # fmt: skip
    return report


def differences(family: dict[str, Any], estimators: list[str]) -> dict[str, list[float | None]]:
    """Mean-over-seeds difference [point, low, high] of every estimator pair, and of each from the SFT start."""
    pairs = {f"{a} - {b}": (a, b) for i, a in enumerate(estimators) for b in estimators[i + 1 :]}
    pairs |= {f"{a} - sft": (a, "sft") for a in estimators}
    out: dict[str, list[float | None]] = {}
    for name, (a, b) in pairs.items():
        if a in family and b in family:
            first, second = [family[a]["per_seed"]], [family[b]["per_seed"]]
            point, lo, hi = stratified_difference(first, second, statistic=np.mean, resamples=2000)
            spread = len(first[0]) > 1 and len(second[0]) > 1  # one seed a side: no spread to resample
            out[name] = [point, lo, hi] if spread else [point, None, None]
    return out


def markdown(report: dict[str, Any], note: str) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = ["# Agent study: SmolLM2-135M-Instruct, multi-turn, held-out success", "", note, ""]
    for family, arms in report.items():
        lines += [f"## {family}", "", "| stage | seeds | per seed % | pooled % [95 % Wilson] | mean % [95 % boot] |"]
        lines.append("|---|---|---|---|---|")
        for stage, a in arms.items():
            if stage == "differences":
                continue
            boot = f"[{pct(a['mean_interval'][0])}, {pct(a['mean_interval'][1])}]" if a["mean_interval"] else ""
            wil = f"{pct(a['pooled'])} [{pct(a['pooled_interval'][0])}, {pct(a['pooled_interval'][1])}]"
            seeds = ", ".join(pct(r) for r in a["per_seed"])
            lines.append(f"| {stage} | {a['seeds']} | {seeds} | {wil} on {a['episodes']} | {pct(a['mean'])} {boot} |")
        for name, (point, lo, hi) in arms.get("differences", {}).items():
            spread = "one seed a side: no interval" if lo is None else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
            lines.append(f"\n{name}: {100 * point:+.1f} points {spread} (seed means)")
        lines.append("")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="*", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--estimators", nargs="*", choices=list(ESTIMATORS), default=["grpo"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/agent_study")
    parser.add_argument("--report-only", action="store_true", help="report the finished runs, train nothing")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the RL runs")
    return parser.parse_args()


def main() -> int:
    args, began = parse(), time.time()
    out = Path(args.out).resolve()
    runs = {f: stages(f, args.estimators, args.seeds, out, args.set) for f in args.families}
    failures = [] if args.report_only else train(args.families, runs, out)
    report = collect(args.families, runs, out)
    for family in report.values():
        family["differences"] = differences(family, args.estimators)
    note = f"Machine: {describe()}; wall time {time.time() - began:.0f} s; {args.seeds} seed(s) per estimator."
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "agent_study.json", json.dumps({"note": note, "families": report}, indent=1))
    text = markdown(report, note)
    atomic_write_text(out / "agent_study.md", text + "\n")
    print(text)
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
