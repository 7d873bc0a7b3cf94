"""`clew eval` with pass@k & co, several policies and seeds, and its JSON report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clew.cli import main
from clew.eval import iqm


def test_eval_reports_k_metrics_runs_and_their_aggregate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval.json"
    args = ["eval", "--env", "toolcalc-v0", "--episodes", "12", "--group-size", "4", "--k", "1", "4", "--seeds", "2"]
    assert main([*args, "--policy", "expert", "--policy", "random", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["k"] == [1, 4] and report["settings"]["group_size"] == 4
    runs = report["runs"]
    assert [(r["policy"], r["seed"]) for r in runs] == [("expert", 0), ("expert", 1), ("random", 0), ("random", 1)]
    expert, random = runs[0], runs[2]
    assert expert["success_rate"] == 1.0 and expert["at_k"]["pass@4"]["value"] == 1.0
    assert expert["at_k"]["maj@4"]["value"] == 1.0 and expert["at_k"]["pass@1"]["tasks"] == 3
    assert random["success_rate"] == random["at_k"]["mean@1"]["value"] == random["at_k"]["pass@1"]["value"]
    aggregate = report["aggregate"]
    scores = [r["success_rate"] for r in runs]
    assert aggregate["runs"] == 4 and aggregate["scores"] == scores
    assert aggregate["iqm"] == pytest.approx(iqm(scores)) and aggregate["mean"] == pytest.approx(sum(scores) / 4)
    low, high = aggregate["iqm_interval"]
    assert low <= aggregate["iqm"] <= high
    printed = capsys.readouterr().out
    assert "pass@4 100.0%" in printed and "over 4 runs: mean success" in printed


def test_one_run_has_no_aggregate_and_pass_at_k_is_at_least_pass_at_1(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["eval", "--env", "keydoor-v0", "--env-arg", "width=3", "--env-arg", "height=3", "--policy", "random"]
    assert main([*args, "--episodes", "16", "--group-size", "4", "--k", "2", "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert json.loads(out.read_text())["aggregate"] is None  # one run
    assert 0.0 <= run["at_k"]["pass@2"]["value"] <= 1.0 and run["at_k"]["pass@2"]["tasks"] == 4
