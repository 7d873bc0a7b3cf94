"""Run directories for the viewer: their iterations, curves from ``metrics.jsonl``, eval points with 95 % intervals."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clew.store.run import read_jsonl
from clew.viz.records import EvalPoint, MonitorMarker, RunCurves, RunInfo

TRAJECTORIES = "trajectories"
STEPS_KEY = "rollout/env_steps_total"
_ITER_FILE = re.compile(r"^iter_(\d+)\.parquet$")


def iteration_files(run_dir: Path) -> dict[int, Path]:
    """``{iteration: path}`` of the run's trajectory files (``trajectories/iter_NNNNNN.parquet``)."""
    folder = run_dir / TRAJECTORIES
    if not folder.is_dir():
        return {}
    found = ((_ITER_FILE.match(p.name), p) for p in folder.iterdir())
    return dict(sorted((int(m.group(1)), p) for m, p in found if m and p.is_file()))


def run_names(run_dirs: Sequence[Path]) -> dict[str, Path]:
    """A unique, URL-safe name per run directory (its folder name, ``-2``, ``-3``... on clashes)."""
    names: dict[str, Path] = {}
    for run_dir in run_dirs:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(run_dir).resolve().name) or "run"
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}-{k}"
        names[name] = Path(run_dir).resolve()
    return names


def eval_point(record: dict[str, Any]) -> EvalPoint | None:
    """An ``eval`` record of ``metrics.jsonl`` as a point, or None without a success rate."""
    if "eval/success_rate" not in record:
        return None
    rate = float(record["eval/success_rate"])
    return EvalPoint(
        iteration=int(record.get("iteration") or 0),
        env_steps=float(record.get(STEPS_KEY, 0.0)),
        success=rate,
        low=float(record.get("eval/success_low", rate)),
        high=float(record.get("eval/success_high", rate)),
        mean_return=_number(record.get("eval/mean_return")),
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def curves(name: str, run_dir: Path, extra: dict[str, list[tuple[float, float]]] | None = None) -> RunCurves:
    """Every numeric metric of the run's ``iteration`` records against env steps, plus its eval points."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    series: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        if record.get("kind") != "iteration" or STEPS_KEY not in record:
            continue
        steps = float(record[STEPS_KEY])
        for key, value in record.items():
            number = _number(value)
            if number is not None and key not in ("iteration", STEPS_KEY):
                series.setdefault(key, []).append((steps, number))
    series.update(extra or {})
    points = (eval_point(r) for r in records if r.get("kind") == "eval")
    return RunCurves(run=name, series=series, evals=tuple(p for p in points if p is not None),
                     markers=monitor_markers(records))  # fmt: skip


def monitor_markers(records: list[dict[str, Any]]) -> tuple[MonitorMarker, ...]:
    """The ``monitor`` records (a detector tripping) at the env steps of their iteration."""
    steps = {r.get("iteration"): float(r[STEPS_KEY]) for r in records
             if r.get("kind") == "iteration" and STEPS_KEY in r}  # fmt: skip
    return tuple(
        MonitorMarker(int(r["iteration"]), steps[r["iteration"]], str(r.get("detector")), bool(r.get("stops_run")))
        for r in records
        if r.get("kind") == "monitor" and r.get("iteration") in steps
    )


def steps_by_iteration(run_dir: Path) -> dict[int, float]:
    """``{iteration: env steps so far}`` from the run's ``iteration`` records."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    return {
        int(r["iteration"]): float(r[STEPS_KEY])
        for r in records
        if r.get("kind") == "iteration" and STEPS_KEY in r and r.get("iteration") is not None
    }


def run_info(name: str, run_dir: Path, tokenizer: Path | None) -> RunInfo:
    """What the runs page lists for one run."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [float(r[STEPS_KEY]) for r in records if STEPS_KEY in r and _number(r[STEPS_KEY]) is not None]
    evals = [p for p in (eval_point(r) for r in records if r.get("kind") == "eval") if p is not None]
    return RunInfo(
        name=name,
        iterations=tuple(iteration_files(run_dir)),
        env_steps=max(steps) if steps else None,
        last_eval=evals[-1] if evals else None,
        tokenizer=str(tokenizer) if tokenizer else None,
    )
