"""Generate the TextWorld games shipped as test fixtures (or warm a cache): ``python scripts/make_textworld_games.py``.

Each game is tw-make's output for a preset, its settings and a seed, compiled to ``<key>.z8`` plus
``<key>.json`` (the json gives TextWorld the facts and the winning policy). The fixtures are small
games, two seeds per preset, about 0.4-0.5 MB each: ``tests/data/textworld``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from clew.envs.adapters.textworld import PRESETS, TextWorld, default_cache_dir

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "textworld"
FIXTURE_GAMES: dict[str, dict[str, int]] = {
    "coin_collector": {"level": 5},
    "treasure_hunter": {"level": 1},
    "simple": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"cache dir (default: the fixtures, {FIXTURES})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--presets", nargs="+", default=list(FIXTURE_GAMES), choices=list(PRESETS))
    parser.add_argument("--level", type=int, default=None, help="level for coin_collector / treasure_hunter")
    args = parser.parse_args()
    if args.out != FIXTURES:
        print(f"warming {args.out} (the adapter's default cache is {default_cache_dir()})")
    for preset in args.presets:
        kwargs = dict(FIXTURE_GAMES.get(preset, {}))
        if args.level is not None and preset != "simple":
            kwargs["level"] = args.level
        env = TextWorld(preset, cache_dir=args.out, **kwargs)
        for seed in args.seeds:
            start = time.perf_counter()
            path = env.game_path(seed)
            print(f"{path.name}: {path.stat().st_size // 1024} KB, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
