"""Expert and random success per environment family, with 95 % Wilson intervals and mean turns.

Usage: python benchmarks/env_baselines.py [--quick] [--episodes N] [--only PREFIX ...]
Each row plays N held-out seeds (the eval seeds) with the env's scripted expert and with uniformly
random valid actions (where the env lists them), max 100 turns. Families whose package is not
installed are reported as such. This is what an RL run on the env should be compared against.
"""

from __future__ import annotations

import argparse
import time

from clew.envs import HasExpert, HasValidActions, families, make
from clew.eval import eval_tasks, evaluate
from clew.rollout import RolloutConfig, ScriptedActor

ENVS: list[tuple[str, dict[str, object]]] = [
    ("keydoor-v0", {"width": 6, "height": 6, "max_steps": 16}),
    ("rg/chain_sum", {"max_attempts": 3}),
    ("gym/FrozenLake-v1", {"map_size": 5}),
    ("gym/Taxi-v4", {}),
    ("textarena/TicTacToe-v0", {"opponent": "random"}),
    ("textarena/Mastermind-v0", {}),
    ("twx/coin", {}),
    ("twx/arithmetic", {}),
    ("textworld/coin_collector", {}),
    ("scienceworld/find-living-thing", {"step_limit": 50}),
    ("crafter/collect_wood", {}),
    ("crafter/make_wood_pickaxe", {}),
    ("minihack/Room-Random-5x5-v0", {}),
    ("minihack/Room-15x15-v0", {}),
    ("minihack/Corridor-R2-v0", {}),
    ("search/synthetic", {"hops": 2}),
    ("search/synthetic", {"hops": 4}),
    ("gem/game:GuessTheNumber-v0-easy", {}),
    ("gem/game:Mastermind-v0-easy", {}),
    ("gem/game:TowerofHanoi-v0-easy", {}),
    ("gem/game:Minesweeper-v0-easy", {}),
]


def installed(env_id: str) -> bool:
    prefix = env_id.partition("/")[0]
    return all(f.installed for f in families() if f.prefix == prefix)


def row(env_id: str, kwargs: dict[str, object], kind: str, episodes: int) -> str:
    env = make(env_id, **kwargs)
    if (kind == "expert" and not isinstance(env, HasExpert)) or (
        kind == "random" and not isinstance(env, HasValidActions)
    ):
        return f"| {env_id} | {kind} | — (the env has no {'expert' if kind == 'expert' else 'valid actions'}) | | |"
    cfg = RolloutConfig(group_size=1, max_turns=100, env_workers=1)
    start = time.perf_counter()
    result, _ = evaluate(ScriptedActor(kind), eval_tasks(env_id, episodes, 1, kwargs), cfg, seed=0)
    took = time.perf_counter() - start
    return (
        f"| {env_id} | {kind} | {result.success_rate:.1%} [{result.success_low:.1%}, {result.success_high:.1%}] "
        f"| {result.mean_turns:.1f} | {took:.0f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--only", nargs="*", help="the rows whose env id starts with one of these")
    args = parser.parse_args()
    episodes = 4 if args.quick else args.episodes
    envs = ENVS[:4] if args.quick else ENVS
    envs = [e for e in envs if not args.only or e[0].startswith(tuple(args.only))]
    print(f"{episodes} held-out episodes per row, at most 100 turns")
    print("| env | policy | success [95 % CI] | mean turns | wall |")
    print("|---|---|---|---|---|")
    for env_id, kwargs in envs:
        if not installed(env_id):
            print(f"| {env_id} | — | not installed | | |")
            continue
        for kind in ("expert", "random"):
            print(row(env_id, kwargs, kind, episodes), flush=True)


if __name__ == "__main__":
    main()
