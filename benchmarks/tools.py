"""Sandboxed Python tool calls per second and latency: a fresh bubblewrap sandbox per call vs the warm pool.

Usage: python benchmarks/tools.py [--quick] [--calls 200]
Each mode runs the same small program (``print(sum(range(1000)))``) ``--calls`` times in a row, one
call at a time, through ``clew.tools.python.Sandbox``; latency is the wall time of ``Sandbox.run``
as the caller sees it (sandbox start or hand-over, the program, reaping). Modes:

- ``cold``: ``pool_size=0``, bwrap + the interpreter start inside every call;
- ``warm pool (k)``: ``pool_size=k`` workers kept started; a call takes one, and its replacement boots
  while the call runs;
- ``unsafe_local``: the same bootstrap in a plain subprocess (no sandbox), for reference.

Needs ``bwrap`` (apt-get install bubblewrap). ``--quick`` makes 30 calls per mode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from clew.tools import Sandbox, ToolResult, UnsafeLocalWarning, run
from machine import busy_cores, describe, wait_for_quiet

PROGRAM = "print(sum(range(1000)))"


def measure(label: str, call: Callable[[], ToolResult], calls: int) -> tuple[str, int, float, float, float]:
    """(label, calls, calls/s, p50 ms, p99 ms) of ``calls`` sequential calls; every call must print 499500."""
    call()  # warm-up: imports, first sandbox, page cache
    latencies = []
    start = time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        result = call()
        latencies.append(time.perf_counter() - t0)
        if result.stdout != "499500\n":
            raise RuntimeError(f"{label}: unexpected result {result}")
    elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return label, calls, calls / elapsed, cuts[49] * 1000, cuts[98] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    calls = 30 if args.quick else args.calls
    load = wait_for_quiet()
    rows = []
    for label, pool in (("cold (fresh sandbox per call)", 0), ("warm pool (1)", 1), ("warm pool (2)", 2)):
        box = Sandbox(pool_size=pool)
        rows.append(measure(label, lambda box=box: box.run(PROGRAM), calls))  # type: ignore[misc]
        box.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeLocalWarning)
        rows.append(measure("unsafe_local (no sandbox)", lambda: run(PROGRAM, unsafe_local=True), calls))
    print(f"machine: {describe()}; other processes: {load:.2f} cores at start, {busy_cores():.2f} after")
    print(f"{calls} sequential calls per mode of {PROGRAM!r}")
    print("| mode | calls | calls/s | p50 latency | p99 latency |")
    print("|---|---|---|---|---|")
    for label, n, rate, p50, p99 in rows:
        print(f"| {label} | {n} | {rate:.1f} | {p50:.1f} ms | {p99:.1f} ms |")


if __name__ == "__main__":
    main()
