"""`clew compare`: methods from run directories, final IQMs, curves over env steps, P(X > Y)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from clew.cli import main
from clew.eval import iqm
from clew.eval.compare import load_run, probability_of_improvement, summarise


def _run(root: Path, name: str, credit: str, curve: list[float], final: float | None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"credit": {"name": credit}, "seed": 0}))
    lines = [
        {"kind": "iteration", "iteration": i, "rollout/env_steps_total": 100 * (i + 1), "rollout/success_rate": s}
        for i, s in enumerate(curve)
    ]
    if final is not None:
        lines.append({"kind": "eval", "iteration": len(curve), "eval/success_rate": final})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def test_probability_of_improvement_matches_rliable() -> None:
    rliable = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(0)
    for nx, ny in ((3, 3), (5, 4), (10, 7)):
        x, y = rng.integers(0, 5, nx) / 4, rng.integers(0, 5, ny) / 4  # ties on purpose
        assert probability_of_improvement(x, y) == pytest.approx(
            rliable.probability_of_improvement(x[:, None], y[:, None]), abs=1e-12
        )
    assert probability_of_improvement([1.0, 1.0], [0.0]) == 1.0 and probability_of_improvement([0.5], [0.5]) == 0.5


def test_runs_group_by_a_config_key_and_curves_average_on_a_shared_grid(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path, "a0", "grpo", [0.0, 0.2, 0.4], 0.5),
        _run(tmp_path, "a1", "grpo", [0.2, 0.4, 0.6, 0.8], 0.7),  # longer: the grid stops at the shorter run
        _run(tmp_path, "b0", "gigpo", [0.5, 0.5, 0.5], 0.9),
        _run(tmp_path, "b1", "gigpo", [0.5, 0.5, 0.5], None),  # no eval: in the curve, not in the final scores
    ]
    grpo, gigpo = summarise([load_run(r, "credit.name") for r in runs], resamples=500)
    assert (grpo.name, gigpo.name) == ("grpo", "gigpo")
    assert grpo.final["scores"] == [0.5, 0.7] and grpo.final["iqm"] == pytest.approx(iqm(np.array([0.5, 0.7])))
    assert gigpo.final["runs"] == 1 and gigpo.final["iqm_interval"] == [0.9, 0.9]
    assert grpo.grid[0] == 100 and grpo.grid[-1] == 300
    assert grpo.curve[0] == pytest.approx(0.1) and grpo.curve[-1] == pytest.approx(0.5)  # (0.4 + 0.6) / 2
    middle = grpo.grid.index(min(grpo.grid, key=lambda s: abs(s - 150)))
    assert grpo.curve[middle] == pytest.approx(np.mean([np.interp(grpo.grid[middle], [100, 200, 300], c)
                                                       for c in ([0.0, 0.2, 0.4], [0.2, 0.4, 0.6])]))  # fmt: skip
    assert all(lo <= m <= hi for m, (lo, hi) in zip(grpo.curve, grpo.band))
    assert gigpo.curve == pytest.approx([0.5] * len(gigpo.grid)) and gigpo.band[0] == pytest.approx((0.5, 0.5))


def test_clew_compare_writes_a_table_a_plot_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run(tmp_path, f"g{i}", "grpo", [0.1, 0.3], s) for i, s in enumerate((0.4, 0.5, 0.6))]
    runs += [_run(tmp_path, f"t{i}", "turn_returns", [0.2, 0.6], s) for i, s in enumerate((0.6, 0.7, 0.8))]
    out, report = tmp_path / "cmp.png", tmp_path / "cmp.json"
    assert main(["compare", *map(str, runs), "--out", str(out), "--json", str(report)]) == 0
    assert out.stat().st_size > 10_000
    data = json.loads(report.read_text())
    assert [m["name"] for m in data["methods"]] == ["grpo", "turn_returns"]
    pairs = {(p["x"], p["y"]): p for p in data["improvements"]}
    assert pairs[("turn_returns", "grpo")]["p"] == pytest.approx(8.5 / 9)  # 8 of 9 pairs won, 0.6 vs 0.6 tied
    assert pairs[("grpo", "turn_returns")]["p"] == pytest.approx(1 - pairs[("turn_returns", "grpo")]["p"])
    printed = capsys.readouterr().out
    assert "P(turn_returns > grpo)" in printed and "grpo" in printed


def test_clew_compare_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tmp_path)]) == 2
    assert "argument runs" in capsys.readouterr().err
