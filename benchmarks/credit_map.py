"""Credit map (issue 28, item 2): where finer credit beats GRPO, one dial of ``dial-v0`` at a time.

Usage: python benchmarks/credit_map.py [--quick] [--cells ...] [--estimators ...] [--seeds N] [--workers N]
                                       [--iterations N] [--out DIR] [--report-only] [--set KEY=VALUE ...]
Cells are a base cell of ``dial-v0`` (``clew.envs.library.dial``) plus one-factor-at-a-time variations
of its dials: horizon, decisive steps, state repeats, reward density (``CELLS`` says why each). Per cell
one SFT warm start (noisy expert) is trained once and shared by every (estimator, seed) run of the cell;
runs go to a pool of ``--workers`` processes with ``cores // workers`` torch threads each. Every run is
cached in ``DIR`` by the overrides the study gave it (its commit recorded beside them): a rerun
(another session, later code) skips finished runs and resumes the study; ``--report-only`` reports
whatever has finished without training. Every finished run's record also goes to ``DIR/ledger.jsonl``,
which is committed: a session on a fresh machine (run folders are not kept) retrains only the cells'
SFT starts (seeded, so the same on the same machine type) and the runs the ledger does not hold.

Budget, alike in every cell: ``ITERATIONS`` iterations of 4 tasks x G = 8 episodes (so the same number
of outcomes; env steps grow with the horizon), 4 optimizer steps per iteration whatever the horizon
(``train.minibatch_rows`` is a quarter of the iteration's rows), window-0 context, lr 3e-4, each
preset's own credit and aggregation, invalid-action and overlong penalties 0.1 for all. The SFT
noise is derived per cell, not dialled: it holds the expected SFT-start success at ``START_SUCCESS``
(``sft_noise``), so groups have the same outcome contrast at the start in every cell.

Reported per cell and estimator, over seeds: the IQM of final held-out success (``eval.episodes``
fresh seeds, temperature 1) and of env steps to the cell's threshold (first iteration whose training
success, averaged with the previous iteration's, reaches it; a run that never does counts as the
budget + 1, ``clew.eval.stats.censor_at_budget``), with 95 % percentile-bootstrap intervals; the
winner per cell and whether its IQM-difference interval against each other estimator excludes 0; the
difference of each estimator from GRPO per cell and over all cells (stratified bootstrap, rliable).
Writes ``DIR/credit_map.json`` (every run), ``DIR/credit_map.md`` (the map) and ``DIR/credit_map.png``
(``credit_map_report.py``). Runs are cached by their overrides: ``--set`` or ``--iterations`` make
other runs (the cached ones of other overrides are replaced), so keep a study's ``--out`` to itself.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from clew.eval import steps_to_threshold
from clew.store.run import atomic_write_text, read_jsonl
from credit_map_report import aggregate, markdown, plot
from machine import describe
from study import finished, study_key, train_run

# The base cell: the middle of the horizon range (25 of 10-100), so the horizon dial goes both ways; 2
# decisive steps among 23 that are not, so credit has something to find and the decisive dial goes both
# ways (1, 4, all); states repeat (GiGPO's anchor groups can form; the repeat dial takes them away); the
# outcome only (dense 0: the sparse case, where finer credit should matter most); 3 choices, so random
# play is right 1/3 of the time at a decisive step and the SFT start (0.4) is above it at every k. The
# sign's way is a word (cue "arrow"): the tiny model learns to follow it from the noisy demos at every
# horizon, so runs start from an imperfect policy that RL can sharpen. Measured once (1 seed, 6
# iterations, 2 cores): SFT start 0.34 held-out, then GRPO 0.55 and GiGPO 0.64.
BASE = {"horizon": 25, "decisive": 2, "repeat": 1.0, "dense": 0.0, "choices": 3}
START_SUCCESS = 0.4  # expected held-out success of every cell's SFT start (a group of 8 then has contrast)
THRESHOLD = 0.7  # START_SUCCESS + 0.3: per decisive step 0.63 -> 0.84 in the base cell
ITERATIONS = 20
TASKS, GROUP, STEPS_PER_ITERATION = 4, 8, 4


@dataclass(frozen=True)
class Cell:
    """A base-cell variation: the dials it changes, its threshold for "env steps to threshold", why it is here."""

    name: str
    dials: dict[str, Any] = field(default_factory=dict)
    why: str = ""
    threshold: float = THRESHOLD

    @property
    def kwargs(self) -> dict[str, Any]:
        return {**BASE, **self.dials}


CELLS = {
    c.name: c
    for c in [
        Cell("base", {}, "the reference: see BASE"),
        Cell("horizon-10", {"horizon": 10}, "fewer irrelevant steps around the same 2 decisions"),
        Cell("horizon-50", {"horizon": 50}, "more irrelevant steps"),
        Cell("horizon-100", {"horizon": 100}, "the long cell: 98 irrelevant steps, 2 decisive"),
        Cell("decisive-1", {"decisive": 1}, "one decision among 25 steps (bifurcation-like)"),
        Cell("decisive-4", {"decisive": 4}, "more decisions, each one less likely wrong at the start"),
        Cell("decisive-all", {"decisive": 25}, "every step decides: no irrelevant steps"),
        Cell("repeat-0.5", {"repeat": 0.5}, "half the states carry an episode-specific tag"),
        Cell("repeat-0", {"repeat": 0.0}, "states repeat only along identical histories: no anchor groups"),
        Cell("dense-0.5", {"dense": 0.5}, "half the outcome paid at the right decisive steps"),
        Cell("dense-1", {"dense": 1.0}, "all of it paid at the decisive steps: per-decision rewards"),
    ]
}
ESTIMATORS = {  # name -> config overrides; tempo and empg sit on GRPO's objective
    "grpo": ["preset=grpo"],
    "rloo": ["preset=rloo"],
    "gigpo": ["preset=gigpo"],
    "turn_returns": ["preset=turn_returns"],
    "tempo": ["preset=grpo", "credit.name=tempo"],
    "empg": ["preset=grpo", "credit.name=empg"],
    "ppo": ["preset=ppo"],  # a value head and GAE (issue 32); dial-v0 has no gold answer, so no IGPO here
    "remax": ["preset=remax"],  # a greedy rollout of each task as the baseline (one extra episode per task)
    "loop": ["preset=loop"],  # leave-one-out PPO, its ratio window and |A| filter (issue 33)
    # GiGPO's anchor states from the observation alone (issue 28, item 3), without the env's state_key(), which
    # sees the hidden on/lost track: the text with numbers masked (merges the steps too: "Step # of #"), TF-IDF
    # of that text (cosine >= 0.9), and the policy's last-layer state at the turn's last prompt token.
    "gigpo-normalized": ["preset=gigpo", "credit.params.state_grouping=normalized"],
    "gigpo-tfidf": [
        "preset=gigpo",
        "credit.params.state_grouping=similarity",
        "credit.params.state_features=tfidf",
        "credit.params.state_similarity=0.9",
    ],
    "gigpo-hidden": [
        "preset=gigpo",
        "credit.params.state_grouping=similarity",
        "credit.params.state_features=hidden",
        "credit.params.state_similarity=0.99",
    ],
}
DEFAULT_ESTIMATORS = ("grpo", "rloo", "gigpo", "turn_returns")
COMMON = [
    "env.id=dial-v0", f"rollout.group_size={GROUP}", "rollout.max_new_tokens=4",
    "rollout.context=window", "rollout.window_turns=0", "train.lr=0.0003", "train.microbatch_rows=128",
    "eval.every=0", "eval.at_start=false", "eval.at_end=true", "eval.episodes=64", "sft.episodes=256",
    "sft.epochs=3", "checkpoint_every=1000",
]  # fmt: skip
RL_ONLY = ["shaping.invalid_action_penalty=0.1", "shaping.overlong_penalty=0.1"]
# Demos come in groups of rollout.group_size episodes from one task seed: one episode per task shows the
# SFT start 256 different tasks rather than 32 tasks 8 times. It does no RL, so its credit only has to
# accept a group of one.
SFT_ONLY = ["rollout.group_size=1", "credit.name=reinforce"]


@dataclass(frozen=True)
class Plan:
    """What a study runs: cells x estimators x seeds, each run ``iterations`` of ``tasks`` x G episodes."""

    cells: tuple[str, ...]
    estimators: tuple[str, ...]
    seeds: tuple[int, ...]
    iterations: int = ITERATIONS
    tasks: int = TASKS
    extra: tuple[str, ...] = ()  # overrides of every run and SFT start (--quick: smaller SFT and evaluation)
    rl_extra: tuple[str, ...] = ()  # overrides of the RL runs only (--set)

    def budget(self, cell: Cell) -> int:
        """Env steps per run at most: an episode lasts the horizon unless an overlong action cuts it short."""
        return self.iterations * self.tasks * GROUP * cell.kwargs["horizon"]


QUICK = Plan(
    ("horizon-10", "base"), ("grpo", "gigpo"), (0,), 2, 2, ("sft.episodes=128", "sft.epochs=2", "eval.episodes=16")
)


def sft_noise(decisive: int, choices: int, start: float = START_SUCCESS) -> float:
    """Demo noise whose SFT start succeeds with probability ``start``: each decisive step must be right.

    A demo action is the expert's (the sign's way) with probability 1 - noise, else uniform over
    ``choices`` (the sign's way with 1 / choices), so a policy that imitates the demos follows the sign
    with p = 1 - noise (choices - 1) / choices at every step and succeeds with p ** decisive; solved for
    noise at p = start ** (1 / decisive). Measured SFT starts: 0.30-0.36 at decisive 1, 2 and 25.
    """
    p = start ** (1 / decisive)
    if p < 1 / choices:
        raise ValueError(f"start success {start} is below random play ({choices} choices, {decisive} decisive)")
    return (1 - p) * choices / (choices - 1)


def cell_overrides(cell: Cell, plan: Plan) -> list[str]:
    """The cell's env and derived SFT noise; a minibatch of a quarter of an iteration's rows; the plan's size."""
    kw = cell.kwargs
    env = "{" + ", ".join(f"{k}: {v}" for k, v in kw.items()) + "}"
    rows = plan.tasks * GROUP * kw["horizon"]  # one row per turn: window-0 context, no merged prefixes
    return [
        f"env.kwargs={env}", f"rollout.max_turns={kw['horizon']}", f"tasks_per_iteration={plan.tasks}",
        f"sft.noise={sft_noise(kw['decisive'], kw['choices']):.4f}",
        f"train.minibatch_rows={max(1, rows // STEPS_PER_ITERATION)}", *plan.extra,
    ]  # fmt: skip


def sft_overrides(cell: Cell, plan: Plan) -> list[str]:
    return [*COMMON, *cell_overrides(cell, plan), "iterations=0", "sft.enabled=true", "eval.at_start=true", *SFT_ONLY]


def sft_start(cell: Cell, plan: Plan, out: Path, threads: int) -> Path:
    """Train the cell's shared SFT start once (iterations=0, held-out eval); retraining it drops the cell's runs."""
    run, overrides = out / cell.name / "sft-start", sft_overrides(cell, plan)
    if not finished(run, overrides):
        shutil.rmtree(out / cell.name, ignore_errors=True)
        train_run(run, overrides, threads)
    return run


def run_overrides(cell: Cell, estimator: str, seed: int, plan: Plan, out: Path) -> list[str]:
    """The overrides of one (estimator, seed) run of ``cell``, from the cell's SFT start."""
    start = out / cell.name / "sft-start" / "sft" / "policy"
    overrides = [f"policy.model={start}", "sft.enabled=false", f"seed={seed}"]
    overrides += [f"iterations={plan.iterations}", *cell_overrides(cell, plan), *plan.rl_extra]
    return [*ESTIMATORS[estimator], *COMMON, *RL_ONLY, *overrides]


def one_run(cell: Cell, estimator: str, seed: int, plan: Plan, out: Path, threads: int) -> Path:
    """Train one (estimator, seed) of a cell from its SFT start, unless the finished run is cached (its folder, or
    its record in the committed ledger: machines do not outlive a session)."""
    run, overrides = out / cell.name / f"{estimator}-seed{seed}", run_overrides(cell, estimator, seed, plan, out)
    if not finished(run, overrides) and ledger_record(out, cell.name, estimator, seed, overrides) is None:
        train_run(run, overrides, threads)
    return run


# --- the ledger: one committed line per finished run, so a study spans sessions on fresh machines ------------
def _portable(overrides: list[str], out: Path) -> list[str]:
    """The overrides with the study folder written as ``<out>`` (the SFT start's path differs between checkouts)."""
    return [o.replace(str(out), "<out>") for o in overrides]


def _ledger(out: Path) -> list[dict[str, Any]]:
    path = out / "ledger.jsonl"
    return read_jsonl(path) if path.exists() else []


def ledger_record(out: Path, cell: str, estimator: str, seed: int, overrides: list[str]) -> dict[str, Any] | None:
    """The ledger's record of this run trained with exactly these overrides, or None."""
    key = (cell, estimator, seed, _portable(overrides, out))
    for entry in reversed(_ledger(out)):
        if (entry["cell"], entry["estimator"], entry["seed"], entry["overrides"]) == key:
            return dict(entry["record"])
    return None


def enter(out: Path, cell: Cell, estimator: str, seed: int, plan: Plan) -> None:
    """Add a finished run's record to the ledger (from the driver only, so lines never interleave)."""
    run, overrides = out / cell.name / f"{estimator}-seed{seed}", run_overrides(cell, estimator, seed, plan, out)
    if not finished(run, overrides) or ledger_record(out, cell.name, estimator, seed, overrides) is not None:
        return
    entry = {"cell": cell.name, "estimator": estimator, "seed": seed, "overrides": _portable(overrides, out),
             "record": load_run(run, cell.threshold)}  # fmt: skip
    lines = [json.dumps(e) for e in _ledger(out)] + [json.dumps(entry)]
    atomic_write_text(out / "ledger.jsonl", "\n".join(lines) + "\n")


def load_run(run: Path, threshold: float) -> dict[str, Any]:
    """One run's record: final held-out success, env steps to ``threshold`` (None: not reached), its curve."""
    curve = [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "iteration"]
    summary = json.loads((run / "summary.json").read_text())
    success = [float(r["rollout/success_rate"]) for r in curve]
    steps = [float(r["rollout/env_steps_total"]) for r in curve]
    reach = steps_to_threshold(success, steps, threshold)
    return {
        "final_success": float(summary["last_eval"]["eval/success_rate"]),
        "steps_to_threshold": None if math.isinf(reach) else reach,
        "budget_env_steps": float(summary["env_steps"]),
        "success_curve": success,
        "commit": (study_key(run) or {}).get("commit", "unknown"),
    }


# --- the study ---------------------------------------------------------------------------------------
def train(plan: Plan, out: Path, workers: int, threads: int) -> list[str]:
    """SFT starts first (in parallel), then every run, seed-major so an interrupted study covers every cell.

    A failed SFT start or run is reported and the others go on (a cell without its start gets no runs).
    """
    failures: list[str] = []
    with ProcessPoolExecutor(workers) as pool:
        starts = [(CELLS[c], pool.submit(sft_start, CELLS[c], plan, out, threads)) for c in plan.cells]
        cells = [cell for cell, future in starts if _done(future, f"{cell.name} SFT start", failures)]
        jobs = [(c, e, s) for s, c, e in itertools.product(plan.seeds, cells, plan.estimators)]
        futures = [(job, pool.submit(one_run, *job, plan, out, threads)) for job in jobs]
        for (cell, est, seed), future in futures:
            if _done(future, f"{cell.name} {est} seed {seed}", failures):
                enter(out, cell, est, seed, plan)
    return failures


def _done(future: Future[Path], name: str, failures: list[str]) -> bool:
    try:
        future.result()
    except Exception as exc:  # one failure must not lose the other runs: report it, go on
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
        return False
    return True


def collect(plan: Plan, out: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The plan's finished runs trained with exactly the plan's overrides (others are not reported): from their
    folders, else from the ledger."""
    runs = {}
    for cell, est, seed in itertools.product(plan.cells, plan.estimators, plan.seeds):
        run, overrides = out / cell / f"{est}-seed{seed}", run_overrides(CELLS[cell], est, seed, plan, out)
        if finished(run, overrides):
            runs[(cell, est, seed)] = load_run(run, CELLS[cell].threshold)
        elif (record := ledger_record(out, cell, est, seed, overrides)) is not None:
            runs[(cell, est, seed)] = record
    return runs


def describe_cells(plan: Plan, out: Path) -> dict[str, Any]:
    """Each cell's dials, derived SFT noise, SFT-start held-out success, threshold and budget per run."""
    described = {}
    for name in plan.cells:
        cell, summary = CELLS[name], out / name / "sft-start" / "summary.json"
        start = json.loads(summary.read_text())["last_eval"]["eval/success_rate"] if summary.exists() else None
        noise = sft_noise(cell.kwargs["decisive"], cell.kwargs["choices"])
        described[name] = {
            "dials": cell.dials, "kwargs": cell.kwargs, "why": cell.why, "threshold": cell.threshold,
            "sft_noise": noise, "sft_start_success": start, "budget_env_steps": plan.budget(cell),
        }  # fmt: skip
    return described


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 cells x grpo, gigpo x 1 seed, 2 iterations")
    parser.add_argument("--out", help="default: benchmarks/results/credit_map (--quick: credit_map_quick, apart)")
    parser.add_argument("--cells", nargs="*", choices=list(CELLS), help="a subset of the cells (default: all)")
    parser.add_argument("--estimators", nargs="*", choices=list(ESTIMATORS), help=f"default: {DEFAULT_ESTIMATORS}")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=ITERATIONS, help="RL iterations per run")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (each gets cores // workers threads)")
    parser.add_argument("--report-only", action="store_true", help="report the finished runs, train nothing")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the RL runs")
    return parser.parse_args()


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        return QUICK
    estimators = args.estimators or DEFAULT_ESTIMATORS
    estimators = ("grpo", *(e for e in estimators if e != "grpo"))  # the map's reference comes first, always
    return Plan(
        tuple(args.cells or CELLS), estimators, tuple(range(args.seeds)), args.iterations, rl_extra=tuple(args.set)
    )


def main() -> int:
    args = parse()
    default = "benchmarks/results/credit_map" + (
        "_quick" if args.quick else ""
    )  # a quick run never replaces study runs
    plan, out, began = make_plan(args), Path(args.out or default), time.time()
    threads = max(1, (os.cpu_count() or 2) // args.workers)
    failures = [] if args.report_only else train(plan, out, args.workers, threads)
    runs = collect(plan, out)
    expected = len(plan.cells) * len(plan.estimators) * len(plan.seeds)
    commits = sorted({r["commit"] for r in runs.values()})
    note = (f"{len(runs)}/{expected} runs finished; {plan.iterations} iterations of {plan.tasks} tasks x G {GROUP}; "
            f"commits {', '.join(commits)}; machine: {describe()}; "
            f"wall time {time.time() - began:.0f} s with {args.workers} workers.")  # fmt: skip
    agg = aggregate(runs) if runs else {"cells": {}, "vs_grpo": {}}
    runs_out = [{"cell": c, "estimator": e, "seed": s, **r} for (c, e, s), r in runs.items()]
    summary = {"note": note, "base": BASE, "start_success_target": START_SUCCESS, "plan": asdict(plan),
               "cells": describe_cells(plan, out), "aggregate": agg, "runs": runs_out}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "credit_map.json", json.dumps(summary, indent=1))
    report = markdown(summary, plan.estimators)
    atomic_write_text(out / "credit_map.md", report + "\n")
    if agg["vs_grpo"]:
        plot(agg["vs_grpo"], out / "credit_map.png")
    print(report)
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
