"""``clew view`` on a 1 M-turn run: time to open an iteration's group page (the HTTP API call the page makes).

Usage: python benchmarks/viewer.py [--iterations 100] [--turns 10000] [--keep DIR] [--json OUT]

A synthetic run is written through clew's own store (``TurnTable.from_groups`` + ``write_trajectories``,
schema version 2, zstd Parquet): ``--iterations`` files of ``--turns`` turns each (default 100 x 10,000 =
1,000,000 turns). An iteration holds 125 groups of 8 episodes; episode lengths vary from 1 to 19 turns (mean
10: pairs of episodes trade lengths, so every file has exactly ``--turns`` rows); a turn has a 48-token prompt,
a 6-token action with log-probs, per-token advantages and entropies, a state key and short texts. This is
the shape of a long run: many iterations of a few thousand to ten thousand turns, which is what the viewer
reads per page (one iteration file; the runs page reads every file).

The server runs in this process on a free port; each number is the wall time of one HTTP GET with
``http.client`` (request, DuckDB query, JSON, transfer). cold = the first request after the server started
(fresh DuckDB database: no cached Parquet metadata); warm = median of 5 later requests. The OS file cache is
warm in both (the files were just written). Other processes' load is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from clew.store.trajectories import turn_records, write_trajectories
from clew.table import TurnTable
from clew.types import Episode, Group, Turn
from clew.viz.server import make_server
from machine import busy_cores, describe, wait_for_quiet

GROUP_SIZE = 8
PROMPT_TOKENS = 48
ACTION_TOKENS = 6
VOCAB = 512
ACTIONS = ("go north", "go south", "take key", "open door", "look")


def episode_lengths(episodes: int, mean: int, rng: np.random.Generator) -> np.ndarray:
    """``episodes`` lengths in [1, 2 mean - 1] summing to exactly ``episodes * mean`` (pairs trade turns)."""
    lengths = np.full(episodes, mean, dtype=np.int64)
    shift = rng.integers(0, mean, size=episodes // 2)
    lengths[0::2][: len(shift)] += shift
    lengths[1::2][: len(shift)] -= shift
    return lengths


def synthetic_groups(turns: int, seed: int) -> list[Group]:
    """One iteration: ``turns // 10`` episodes in groups of 8, mean 10 turns."""
    rng = np.random.default_rng(seed)
    lengths = episode_lengths(turns // 10, 10, rng)
    groups = []
    for g in range(len(lengths) // GROUP_SIZE):
        episodes = [synthetic_episode(g, int(n), rng) for n in lengths[g * GROUP_SIZE : (g + 1) * GROUP_SIZE]]
        groups.append(Group(g, f"keydoor-v0#{g}", g, episodes))
    return groups


def synthetic_episode(group: int, n: int, rng: np.random.Generator) -> Episode:
    turns = []
    for t in range(n):
        ids = rng.integers(2, VOCAB, size=ACTION_TOKENS).tolist()
        info = {"token_entropies": rng.random(ACTION_TOKENS).round(3).tolist()}
        prompt = rng.integers(2, VOCAB, size=PROMPT_TOKENS).tolist()
        text = ACTIONS[int(rng.integers(len(ACTIONS)))]
        obs = f"Grid 6x6. You are at ({t % 6},{t // 6}). Key: at (0,0). Door: locked."
        turns.append(
            Turn(prompt, ids, (-rng.random(ACTION_TOKENS)).tolist(), text, 0.0, obs, f"{t % 6},{t // 6},0", info)
        )
    success = bool(rng.random() < 0.4)
    ending = {"terminated": success, "truncated": not success, "truncation_reason": None if success else "max_turns"}
    return Episode(f"keydoor-v0#{group}", group, group, turns, float(success), first_observation="Grid 6x6.", **ending)


def write_run(root: Path, iterations: int, turns: int) -> float:
    """Write the run; returns the seconds it took."""
    start = time.perf_counter()
    (root / "trajectories").mkdir(parents=True, exist_ok=True)
    (root / "base").mkdir(exist_ok=True)
    Tokenizer(WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0")).save(str(root / "base" / "tokenizer.json"))
    metrics = []
    for it in range(1, iterations + 1):
        table = TurnTable.from_groups(synthetic_groups(turns, it))
        rng = np.random.default_rng(it)
        n_tokens = int(table.token_offsets[-1])
        adv, ret = rng.normal(size=table.n_turns), rng.random(table.n_turns)
        write_trajectories(
            root / "trajectories" / f"iter_{it:06d}.parquet",
            turn_records(table, it, adv, ret, rng.normal(size=n_tokens)),
        )
        metrics.append({"kind": "iteration", "iteration": it, "rollout/env_steps_total": it * turns,
                        "rollout/success_rate": float(rng.random())})  # fmt: skip
    (root / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return time.perf_counter() - start


def timed_get(port: int, path: str) -> tuple[float, int]:
    """(seconds, response bytes) of one GET."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return time.perf_counter() - start, len(body)


def measure(root: Path, path: str) -> dict[str, Any]:
    """Cold (first request on a fresh server) and warm (median of 5) time of ``path``."""
    server = make_server([root])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cold, size = timed_get(server.server_address[1], path)
        warm = statistics.median(timed_get(server.server_address[1], path)[0] for _ in range(5))
    finally:
        server.shutdown()
        server.server_close()
        server.app.close()  # type: ignore[attr-defined]
    return {"path": path, "cold_s": cold, "warm_s": warm, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--turns", type=int, default=10_000, help="turns per iteration (a multiple of 80)")
    parser.add_argument("--keep", help="write the run here (default: a temporary folder, deleted after)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clew-viewer-") as tmp:
        root = Path(args.keep or tmp) / "synthetic"
        write_s = write_run(root, args.iterations, args.turns)
        load = wait_for_quiet()
        mid = args.iterations // 2
        name = root.name
        pages = {
            "group page (iteration {mid})": f"/api/runs/{name}/iterations/{mid}/groups",
            "group page, search 'open door'": f"/api/runs/{name}/iterations/{mid}/groups?q=open%20door&status=failure",
            "episode page": f"/api/runs/{name}/iterations/{mid}/episodes/7",
            "runs page curves (all files)": f"/api/runs/{name}/curves",
        }
        results = {label.format(mid=mid): measure(root, path) for label, path in pages.items()}
        size_mb = sum(p.stat().st_size for p in (root / "trajectories").iterdir()) / 2**20
        after = busy_cores()
    total = args.iterations * args.turns
    print(f"machine: {describe()}; date {dt.date.today()}; other load {load:.2f} / {after:.2f} cores")
    print(f"run: {total:,} turns = {args.iterations} x {args.turns:,}; {size_mb:.0f} MiB, {write_s:.0f} s to write")
    print("| request | cold | warm (median of 5) | response |\n|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['cold_s']:.3f} s | {r['warm_s']:.3f} s | {r['bytes'] / 1024:.0f} KiB |")
    if args.json:
        Path(args.json).write_text(json.dumps({"turns": total, "results": results, "machine": describe()}, indent=1))


if __name__ == "__main__":
    main()
