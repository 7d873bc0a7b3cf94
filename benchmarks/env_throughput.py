"""ScienceWorld env steps per second: in-process (one shared JVM) vs worker processes (``clew.envs.pool``).

Usage: python benchmarks/env_throughput.py [--quick] [--env scienceworld/find-living-thing]
Each mode steps K envs with random valid actions (never ``focus on``, which ends the task early)
for a fixed time; an episode that ends is reset to the env's next seed (seeds 0, K, 2K, ... for env
0, 1, K+1, ... for env 1), so resets are part of the cost, as in a rollout. Modes:

- ``in-process, 1 thread``: the K envs stepped in turn (they share one JVM);
- ``in-process, K threads``: one thread per env; calls into the shared JVM are serialised;
- ``N workers``: K pooled envs (one process and JVM each) stepped by N threads.

Every step includes listing the valid actions (which costs ScienceWorld more than the step). Needs
``pip install 'clew[scienceworld]'`` and java. ``--quick`` takes about 20 s.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from clew.envs import Closeable, make
from clew.envs.pool import make_pooled
from machine import busy_cores, describe, wait_for_quiet


def drive(envs: Sequence[Any], threads: int, seconds: float) -> tuple[int, float]:
    """Step ``envs`` (split over ``threads``) for ``seconds``; return (steps, elapsed)."""
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def run(worker: int) -> None:
        mine = list(range(worker, len(envs), threads))
        rngs = {i: random.Random(i) for i in mine}
        episode = dict.fromkeys(mine, 0)
        while time.perf_counter() < deadline:
            for i in mine:
                env = envs[i]
                choices = [a for a in env.valid_actions() if not a.startswith("focus on")]
                result = env.step(rngs[i].choice(choices))
                counts[worker] += 1
                if result.terminated or result.truncated:
                    episode[i] += 1
                    env.reset(i + len(envs) * episode[i])

    start = time.perf_counter()
    pool = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts), time.perf_counter() - start


def measure(label: str, envs: Sequence[Any], threads: int, seconds: float) -> tuple[str, int, int, int, float]:
    for i, env in enumerate(envs):
        env.reset(i)  # start (and warm) every env before the clock runs
    steps, elapsed = drive(envs, threads, seconds)
    for env in envs:
        if isinstance(env, Closeable):
            env.close()
    return label, len(envs), threads, steps, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--env", default="scienceworld/find-living-thing")
    parser.add_argument("--step-limit", type=int, default=50)
    args = parser.parse_args()
    envs_k, seconds = (2, 4.0) if args.quick else (4, 30.0)
    workers = (2,) if args.quick else (2, 4)
    kwargs = {"step_limit": args.step_limit}
    load = wait_for_quiet()
    rows = [measure("in-process, 1 thread", [make(args.env, **kwargs) for _ in range(envs_k)], 1, seconds)]
    if not args.quick:
        rows.append(
            measure(f"in-process, {envs_k} threads", [make(args.env, **kwargs) for _ in range(envs_k)], envs_k, seconds)
        )
    for n in workers:
        pooled = [make_pooled(args.env, timeout_s=120, **kwargs) for _ in range(envs_k)]
        rows.append(measure(f"{n} workers", pooled, n, seconds))
    print(f"machine: {describe()}; other processes: {load:.2f} cores at start, {busy_cores():.2f} after")
    print(f"{args.env}, step_limit {args.step_limit}, random valid actions (no 'focus on'), {seconds:.0f} s per mode")
    print("| mode | envs | threads | steps | seconds | steps/s |")
    print("|---|---|---|---|---|---|")
    for label, k, threads, steps, elapsed in rows:
        print(f"| {label} | {k} | {threads} | {steps} | {elapsed:.1f} | {steps / elapsed:.1f} |")


if __name__ == "__main__":
    main()
