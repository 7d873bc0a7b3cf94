"""What a turn of ``search/synthetic`` costs at each corpus size (issue 30): generating the corpus, building its BM25
index (first use on a machine) and loading it (every later process), the process's resident memory, a ``search``
(k = 3) and an ``open``, and expert episodes per second in-process vs in worker processes (``clew.envs.pool``).

    python benchmarks/search_cost.py --sizes 1000 100000 1000000

Each size runs in a fresh process with an empty index cache of its own (so "build" is a first use).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe


def _episodes_per_s(make: Any, seconds: float, hops: int) -> float:
    env, done, seed = make(), 0, 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        env.reset(seed)
        result = None
        while result is None or not (result.terminated or result.truncated):
            result = env.step(env.expert_action())
        done, seed = done + 1, seed + 1
    return done / (time.perf_counter() - start)


def measure(size: int, hops: int, seconds: float) -> dict[str, Any]:
    os.environ["CLEW_CACHE"] = tempfile.mkdtemp(prefix="clew-search-")
    from clew.envs import make
    from clew.envs.library import search as search_env
    from clew.envs.library.search_corpus import synthetic_corpus
    from clew.envs.pool import make_pooled
    from clew.paths import set_cache_root
    from clew.tools.search import SearchIndex

    set_cache_root(os.environ["CLEW_CACHE"])
    start = time.perf_counter()
    corpus = synthetic_corpus(size, 0)
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    index = SearchIndex.cached(corpus.docs, Path(os.environ["CLEW_CACHE"]) / "search")
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    SearchIndex.cached(corpus.docs, Path(os.environ["CLEW_CACHE"]) / "search")
    load_s = time.perf_counter() - start
    queries = [corpus.titles[corpus.people[i % len(corpus.people)]] for i in range(200)]
    search_ms = []
    for q in queries:
        t = time.perf_counter()
        index.search(q, 3)
        search_ms.append(1000 * (time.perf_counter() - t))
    search_env._synthetic(size, 0)  # the env's own cached collection (loads the saved index)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    in_process = _episodes_per_s(lambda: make("search/synthetic", size=size, hops=hops), seconds, hops)
    pooled = make_pooled("search/synthetic", size=size, hops=hops)
    try:
        pooled.reset(0)  # the worker loads (or builds) its index before the clock starts
        worker = _episodes_per_s(lambda: pooled, seconds, hops)
    finally:
        pooled.close()
    return {"size": size, "docs": len(corpus.docs), "generate_s": generate_s, "build_s": build_s, "load_s": load_s,
            "search_ms": statistics.median(search_ms), "rss_gb": rss_gb, "episodes_per_s": in_process,
            "episodes_per_s_worker": worker, "steps_per_episode": 2 * hops + 1}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 100_000, 1_000_000])
    parser.add_argument("--hops", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(describe())
    print("| documents | generate | index build (first use) | index load | search k=3 (median) | peak RSS | expert "
          "episodes/s in-process | in a worker process |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            r = pool.submit(measure, size, args.hops, args.seconds).result()
        print(f"| {r['docs']:,} | {r['generate_s']:.1f} s | {r['build_s']:.1f} s | {r['load_s']:.1f} s | "
              f"{r['search_ms']:.2f} ms | {r['rss_gb']:.2f} GB | {r['episodes_per_s']:.1f} "
              f"({r['episodes_per_s'] * r['steps_per_episode']:.0f} steps/s) | {r['episodes_per_s_worker']:.1f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
