"""Smoke test: every benchmark runs end to end in --quick mode (no timing assertions)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_quick(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "quick.md").read_text()
    names = [
        "credit_scaling",
        "multiturn_rows",
        "learner_mfu",
        "throughput",
        "multiturn_rollout",
        "learning_efficiency",
        "memory",
        "lora_sync",
        "credit_map",
    ]
    for name in names:
        assert f"## {name}" in report
    assert "gradients identical" in report and "| gigpo |" in report
    assert "| 75m | LoRA + checkpointing |" in report and "failed:" not in report.split("## memory")[1]
    credit_map = report.split("## credit_map")[1]
    assert "4/4 runs finished" in credit_map and "| horizon-10 |" in credit_map and "| base |" in credit_map
    ledger = (tmp_path / "credit_map_quick" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 4 and all("<out>" in line for line in ledger)  # every run, portable to a fresh checkout
