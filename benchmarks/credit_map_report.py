"""The credit map's statistics and report: per-cell IQMs, winners, differences from GRPO, markdown, heat map.

Runs are records of ``credit_map.load_run`` keyed by (cell, estimator, seed). Intervals are 95 %
percentile bootstraps of the IQM over seeds (``clew.eval.stats``); differences between two estimators
resample each one's seeds within every cell (stratified, rliable), over one cell or all of them.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from clew.eval import censor_at_budget, iqm, stratified_bootstrap, stratified_difference


def interval(values: list[float]) -> list[float] | None:
    """95 % percentile bootstrap of the IQM over seeds; None for a single run (no spread to resample)."""
    return list(stratified_bootstrap([values], iqm, resamples=1000)) if len(values) > 1 else None


def censored_steps(runs: list[dict[str, Any]]) -> list[float]:
    """Env steps to threshold, a run that never got there counted as the budget + 1 (``censor_at_budget``)."""
    reach = [math.inf if r["steps_to_threshold"] is None else r["steps_to_threshold"] for r in runs]
    return censor_at_budget(reach, max(r["budget_env_steps"] for r in runs)).tolist()


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """IQM and interval of final success and of (censored) env steps to threshold, over one cell's seeds."""
    final, steps = [r["final_success"] for r in runs], censored_steps(runs)
    return {
        "seeds": len(runs), "final_iqm": iqm(np.array(final)), "final_interval": interval(final),
        "steps_iqm": iqm(np.array(steps)), "steps_interval": interval(steps),
        "reached": sum(r["steps_to_threshold"] is not None for r in runs),
        "budget_env_steps": max(r["budget_env_steps"] for r in runs),
    }  # fmt: skip


def difference(first: list[list[float]], second: list[list[float]]) -> list[float | None]:
    """[point, low, high] of IQM(first) - IQM(second) over cells; no interval when a cell has a single run."""
    point, lo, hi = stratified_difference(first, second, resamples=1000)
    spread = all(len(x) > 1 for x in [*first, *second])
    return [point, lo, hi] if spread else [point, None, None]


def winner(by_est: dict[str, list[float]], higher_better: bool) -> dict[str, Any]:
    """The best IQM, and the estimators whose IQM-difference interval with it contains 0 (ties)."""
    sign = 1.0 if higher_better else -1.0
    best = max(by_est, key=lambda e: sign * iqm(np.array(by_est[e])))
    diffs = {e: difference([by_est[best]], [by_est[e]]) for e in by_est if e != best}
    ties = [e for e, (_, lo, hi) in diffs.items() if lo is None or hi is None or lo <= 0 <= hi]
    return {"winner": best, "ties": ties, "separated": not ties}


def versus_grpo(final: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float | None]]]:
    """IQM difference (estimator - GRPO) of final success [point, low, high] per cell and over all cells."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for est in dict.fromkeys(e for by in final.values() for e in by if e != "grpo"):  # in the plan's order
        cells = [c for c, by in final.items() if est in by and "grpo" in by]
        out[est] = {c: difference([final[c][est]], [final[c]["grpo"]]) for c in cells}
        if len(cells) > 1:  # paired by cell, resampled within cells
            out[est]["all cells"] = difference([final[c][est] for c in cells], [final[c]["grpo"] for c in cells])
    return out


def aggregate(runs: dict[tuple[str, str, int], dict[str, Any]]) -> dict[str, Any]:
    """Per cell: each estimator's summary and the winners of both metrics; the differences from GRPO."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (cell, est, _), r in runs.items():
        grouped.setdefault(cell, {}).setdefault(est, []).append(r)
    final = {c: {e: [r["final_success"] for r in rs] for e, rs in by.items()} for c, by in grouped.items()}
    cells = {
        c: {
            "estimators": {e: summarize(rs) for e, rs in by.items()},
            "final_winner": winner(final[c], higher_better=True),
            "steps_winner": winner({e: censored_steps(rs) for e, rs in by.items()}, higher_better=False),
        }
        for c, by in grouped.items()
    }
    return {"cells": cells, "vs_grpo": versus_grpo(final)}


# --- report ------------------------------------------------------------------------------------------
def fmt_steps(value: float, budget: float) -> str:
    return "n.r." if value > budget else f"{value / 1000:.1f}k"


def fmt_cell(est: dict[str, Any], metric: str) -> str:
    """``IQM [low, high]`` of final success, or of env steps with how many seeds reached the threshold."""
    lo_hi = est[f"{metric}_interval"]
    if metric == "final":
        return f"{est['final_iqm']:.2f}" + (f" [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else "")
    budget = est["budget_env_steps"]
    text = fmt_steps(est["steps_iqm"], budget)
    text += f" [{fmt_steps(lo_hi[0], budget)}, {fmt_steps(lo_hi[1], budget)}]" if lo_hi else ""
    return f"{text} ({est['reached']}/{est['seeds']})"


def fmt_winner(win: dict[str, Any], seeds: int) -> str:
    if seeds < 2:
        return f"{win['winner']} (1 seed: no interval)"
    return f"{win['winner']} ({'separated' if win['separated'] else 'ties ' + ', '.join(win['ties'])})"


def fmt_diff(diff: list[float | None], with_interval: bool = True) -> str:
    """``+0.12 [+0.03, +0.20]*``: the star marks an interval that excludes 0; a single seed has none."""
    point, lo, hi = diff
    if lo is None or hi is None:
        return f"{point:+.2f} (1 seed)"
    return f"{point:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]" if with_interval else "") + ("*" if lo > 0 or hi < 0 else "")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def setup_table(cells: dict[str, Any]) -> list[str]:
    rows = []
    for c, d in cells.items():
        start = "—" if d["sft_start_success"] is None else f"{d['sft_start_success']:.2f}"
        dials = ", ".join(f"{k} {v}" for k, v in d["dials"].items()) or "(base)"
        rows.append(
            [c, dials, f"{d['budget_env_steps']:,}", f"{d['sft_noise']:.3f}", start, f"{d['threshold']:.2f}", d["why"]]
        )
    return table(["cell", "changed dials", "env steps per run", "SFT noise", "SFT start", "threshold", "why"], rows)


def metric_table(agg: dict[str, Any], estimators: tuple[str, ...], metric: str) -> list[str]:
    rows = []
    for cell, result in agg["cells"].items():
        by = result["estimators"]
        seeds = min(e["seeds"] for e in by.values())
        cols = [fmt_cell(by[e], metric) if e in by else "—" for e in estimators]
        rows.append([cell, *cols, fmt_winner(result[f"{metric}_winner"], seeds)])
    return table(["cell", *estimators, "winner"], rows)


def difference_table(vs_grpo: dict[str, dict[str, list[float | None]]]) -> list[str]:
    names = list(dict.fromkeys(c for by in vs_grpo.values() for c in by))
    rows = [[c, *(fmt_diff(vs_grpo[e][c]) if c in vs_grpo[e] else "—" for e in vs_grpo)] for c in names]
    return table(["cell", *vs_grpo], rows)


def markdown(summary: dict[str, Any], estimators: tuple[str, ...]) -> str:
    """The map: the cells; final success and steps to threshold per estimator with winners; differences from GRPO."""
    agg = summary["aggregate"]
    lines = [f"Base cell: {summary['base']}. {summary['note']}", "", *setup_table(summary["cells"]), ""]
    lines += ["**Final held-out success**, IQM [95 % CI] over seeds", "", *metric_table(agg, estimators, "final"), ""]
    lines += ["**Env steps to the cell's threshold**, IQM [95 % CI] over seeds (reached/seeds; n.r.: not reached)", ""]
    lines += metric_table(agg, estimators, "steps")
    if agg["vs_grpo"]:
        lines += ["", "**IQM difference from GRPO**, final held-out success [95 % CI] (*: excludes 0)", ""]
        lines += difference_table(agg["vs_grpo"])
    return "\n".join(lines)


def plot(vs_grpo: dict[str, dict[str, list[float | None]]], path: Path) -> None:
    """Heat map of each estimator's IQM difference from GRPO per cell; * where the interval excludes 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ests = list(vs_grpo)
    cells = list(dict.fromkeys(c for by in vs_grpo.values() for c in by))
    grid = np.array([[vs_grpo[e][c][0] if c in vs_grpo[e] else np.nan for e in ests] for c in cells])  # (cells, ests)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(ests), 1 + 0.45 * len(cells)))
    image = ax.imshow(grid, cmap="RdBu", vmin=-0.5, vmax=0.5, aspect="auto")
    for (i, c), (j, e) in itertools.product(enumerate(cells), enumerate(ests)):
        if c in vs_grpo[e]:
            ax.text(j, i, fmt_diff(vs_grpo[e][c], with_interval=False), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(ests)), ests)
    ax.set_yticks(range(len(cells)), cells)
    ax.set_title("final held-out success: IQM difference from GRPO")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
