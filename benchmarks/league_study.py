"""The league on Nim (issue 34, item 3): self-play against a pool of the policy's own snapshots, rated by Elo.

Usage: python benchmarks/league_study.py [--start DIR] [--iterations N] [--out DIR] [--episodes N]

Trains ``configs/selfplay-nim.yaml`` with ``league.snapshot_every=3``, half of the tasks self-play and half against
a pool member (``pick: rating``, PFSP), from ``--start`` (an SFT start, e.g. the self-play study's) or from a fresh
SFT. Then reports the league's Elo table (every snapshot ever taken, from the metrics; the pool's last ratings from
the final checkpoint) and each snapshot's held-out win rate against the random and xor-rule players (``clew eval``,
Wilson 95 % intervals), which anchors the Elo scale. Writes ``DIR/league.json`` and ``DIR/league.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from clew.eval.stats import wilson_interval
from clew.store.run import atomic_write_text, checkpoints, read_jsonl
from machine import describe
from study import finished, train_run

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "selfplay-nim.yaml"
LEAGUE = ["league.snapshot_every=3", "league.self_share=0.5", "league.pick=rating", "league.pool_size=4"]


def held_out(policy: Path, opponent: str, episodes: int, cache: Path) -> dict[str, Any]:
    if not cache.exists():
        cmd = [sys.executable, "-m", "clew.cli", "eval", "--env", "textarena/Nim-v0", "--env-arg",
               f"opponent={opponent}", "--env-arg", "max_steps=30", "--policy", str(policy), "--episodes",
               str(episodes), "--max-turns", "15", "--max-new-tokens", "8", "--window-turns", "0", "--seed", "1",
               "--json", str(cache)]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    run = json.loads(cache.read_text())["runs"][0]
    low, high = wilson_interval(round(run["success_rate"] * run["episodes"]), run["episodes"])
    return {"win": run["success_rate"], "low": low, "high": high}


def report(run: Path, episodes: int) -> dict[str, Any]:
    records = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "iteration"]
    last = json.loads((checkpoints(run)[-1] / "league.json").read_text())
    first_seen = {k.removeprefix("league/rating/"): r["iteration"] for r in reversed(records) for k in r
                  if k.startswith("league/rating/")}  # fmt: skip
    final = {m["name"]: m for m in last["members"]}
    rows = []
    for name in sorted(first_seen):
        seen = [r[f"league/rating/{name}"] for r in records if f"league/rating/{name}" in r]
        member = final.get(name)
        rating = member["rating"] if member else seen[-1]
        games = member["games"] if member else None
        policy = run / "league" / name
        vs = {o: held_out(policy, o, episodes, run / f"eval-{name}-{o}.json") for o in ("random", "scripted")}
        rows.append({"snapshot": name, "rating": rating, "games": games, "in_pool": member is not None, **vs})
    result = {"machine": describe(), "policy_rating": last["rating"], "policy_games": last["games"], "rows": rows,
              "rating_curve": [(r["iteration"], r["league/rating"]) for r in records]}  # fmt: skip
    atomic_write_text(run.parent / "league.json", json.dumps(result, indent=1))
    lines = ["| player | Elo | league games | vs random: win [95 % CI] | vs xor rule: win [95 % CI] |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        cells = [f"{row[o]['win']:.1%} [{row[o]['low']:.1%}, {row[o]['high']:.1%}]" for o in ("random", "scripted")]
        games = "left the pool" if row["games"] is None else str(row["games"])
        lines.append(f"| snapshot {row['snapshot']} | {row['rating']:.0f} | {games} | {cells[0]} | {cells[1]} |")
    lines.append(f"| policy (final) | {last['rating']:.0f} | {last['games']} | | |")
    atomic_write_text(run.parent / "league.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=Path, help="an SFT start (a model directory); default: SFT in the run")
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "league")
    args = parser.parse_args()
    start = [f"policy.model={args.start}", "sft.enabled=false"] if args.start else []
    overrides = [*LEAGUE, *start, f"iterations={args.iterations}", "eval.every=0", "eval.at_start=false",
                 "eval.episodes=128", "checkpoint_every=1"]  # fmt: skip
    run = args.out / "run"
    if not finished(run, overrides):
        train_run(run, overrides, args.threads, CONFIG)
    report(run, args.episodes)


if __name__ == "__main__":
    main()
