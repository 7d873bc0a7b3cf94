"""Env steps per second: in-process vs worker processes (``clew.envs.pool``), for any env id or a suite of them.

Usage: python benchmarks/env_throughput.py [--quick] [--env ID] [--env-arg KEY=VALUE ...] [--policy random|expert]
       python benchmarks/env_throughput.py --suite worlds [--quick]

Each mode steps K envs for a fixed time, with random valid actions (``--policy random``; never ScienceWorld's
``focus on``, which ends the task early) or the env's scripted expert (``--policy expert``: the search env's
expert searches, opens documents and answers, the turns a search agent takes); an episode that ends is reset to
the env's next seed (seeds 0, K, 2K, ... for env 0, 1, K+1, ... for env 1), so resets are part of the cost, as in a
rollout. Modes:

- ``in-process, 1 thread``: the K envs stepped in turn;
- ``in-process, K threads``: one thread per env (ScienceWorld's calls into its shared JVM are serialised);
- ``N workers``: K pooled envs (one process each) stepped by N threads.

Every step includes choosing the action (listing the valid actions costs ScienceWorld more than the step).
``--suite worlds`` measures issue 30's long-horizon and search envs one after another: Crafter, MiniHack,
NetHack, and ``search/synthetic`` at 1 k, 10 k and 100 k documents (the index is built, or read from the cache,
before the clock runs; its build time is printed). ``--quick`` takes about 20 s per env.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from clew.envs import Closeable, HasExpert, HasValidActions, make
from clew.envs.pool import make_pooled
from machine import busy_cores, describe, wait_for_quiet

SUITE: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("crafter/default", {}, "random"),
    ("minihack/Room-5x5-v0", {}, "random"),
    ("nethack/score", {}, "random"),
    ("search/synthetic", {"size": 1_000}, "expert"),
    ("search/synthetic", {"size": 10_000}, "expert"),
    ("search/synthetic", {"size": 100_000}, "expert"),
)
Row = tuple[str, int, int, int, float]


def chooser(policy: str) -> Callable[[Any, random.Random], str]:
    """The action rule: a random valid action, or the env's expert."""

    def pick(env: Any, rng: random.Random) -> str:
        if policy == "expert":
            if not isinstance(env, HasExpert):
                raise SystemExit("--policy expert needs an env with a scripted expert")
            return env.expert_action()
        if not isinstance(env, HasValidActions):
            raise SystemExit("--policy random needs an env that lists its valid actions")
        return rng.choice([a for a in env.valid_actions() if not a.startswith("focus on")])

    return pick


def drive(envs: Sequence[Any], threads: int, seconds: float, policy: str) -> tuple[int, float]:
    """Step ``envs`` (split over ``threads``) for ``seconds``; return (steps, elapsed)."""
    counts, pick = [0] * threads, chooser(policy)
    deadline = time.perf_counter() + seconds

    def run(worker: int) -> None:
        mine = list(range(worker, len(envs), threads))
        rngs = {i: random.Random(i) for i in mine}
        episode = dict.fromkeys(mine, 0)
        while time.perf_counter() < deadline:
            for i in mine:
                env = envs[i]
                result = env.step(pick(env, rngs[i]))
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


def measure(label: str, envs: Sequence[Any], threads: int, seconds: float, policy: str) -> Row:
    for i, env in enumerate(envs):
        env.reset(i)  # start (and warm) every env before the clock runs
    steps, elapsed = drive(envs, threads, seconds, policy)
    for env in envs:
        if isinstance(env, Closeable):
            env.close()
    return label, len(envs), threads, steps, elapsed


def modes(env_id: str, kwargs: dict[str, Any], policy: str, quick: bool, seconds: float) -> list[Row]:
    envs_k = 2 if quick else 4
    build = time.perf_counter()
    first = make(env_id, **kwargs)
    first.reset(0)  # builds (or loads) what the env shares, e.g. the search index, before the clock runs
    print(f"{env_id} {kwargs}: first build and reset {time.perf_counter() - build:.1f} s")
    rows = [measure("in-process, 1 thread", [first, *(make(env_id, **kwargs) for _ in range(envs_k - 1))], 1, seconds,
                    policy)]  # fmt: skip
    if not quick:
        threaded = [make(env_id, **kwargs) for _ in range(envs_k)]
        rows.append(measure(f"in-process, {envs_k} threads", threaded, envs_k, seconds, policy))
    for n in (2,) if quick else (2, 4):
        pooled = [make_pooled(env_id, timeout_s=120, **kwargs) for _ in range(envs_k)]
        rows.append(measure(f"{n} workers", pooled, n, seconds, policy))
    return rows


def table(title: str, rows: list[Row]) -> None:
    print(title)
    print("| mode | envs | threads | steps | seconds | steps/s |")
    print("|---|---|---|---|---|---|")
    for label, k, threads, steps, elapsed in rows:
        print(f"| {label} | {k} | {threads} | {steps} | {elapsed:.1f} | {steps / elapsed:.1f} |")


def parse_args(text: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in text:
        key, _, value = item.partition("=")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--env", default="scienceworld/find-living-thing")
    parser.add_argument("--env-arg", nargs="*", default=[], help="the env's kwargs, KEY=VALUE")
    parser.add_argument("--policy", choices=("random", "expert"), default="random")
    parser.add_argument("--step-limit", type=int, default=50, help="ScienceWorld's step_limit")
    parser.add_argument("--suite", choices=("worlds",), help="measure a suite of envs instead of --env")
    parser.add_argument("--seconds", type=float, help="per mode (default 30; 4 with --quick)")
    args = parser.parse_args()
    kwargs = parse_args(args.env_arg)
    if args.env.startswith("scienceworld/"):
        kwargs.setdefault("step_limit", args.step_limit)
    runs = list(SUITE) if args.suite else [(args.env, kwargs, args.policy)]
    load = wait_for_quiet()
    seconds = args.seconds or (4.0 if args.quick else 30.0)
    results = [(env_id, kw, policy, modes(env_id, kw, policy, args.quick, seconds)) for env_id, kw, policy in runs]
    print(f"machine: {describe()}; other processes: {load:.2f} cores at start, {busy_cores():.2f} after")
    for env_id, kw, policy, rows in results:
        table(f"\n{env_id} {kw or ''}, {policy} actions, {seconds:.0f} s per mode", rows)


if __name__ == "__main__":
    main()
