"""Self-play (issue 34): does playing both seats of Nim lift the win rate against held-out fixed opponents?

Usage: python benchmarks/selfplay_study.py [--config YAML] [--seeds N] [--iterations N] [--extend] [--out DIR]
[--report-only]

One SFT start (the game's scripted demos with noise; ``configs/selfplay-nim.yaml`` by default, or
``configs/selfplay-tictactoe.yaml``), evaluated before RL; then, per seed and per credit, self-play RL from it: the
tiny model plays both seats, each seat its own episode and group.

- ``grpo``: the plain per-seat GRPO baseline (groups per (task, seat)).
- ``mars``: MARS's agent-normalised turn-level credit (``turn_returns``, ``normalize: agent``; credit.md section 9).
- ``grpo-strict``, ``mars-strict``: the same with ``shaping.invalid_action_penalty=0.5`` (the config's 0.1 left
  the tiny model's invalid-move rate near 45 % through 40 iterations of Nim): not in the default ``--credits``.

Held-out evaluation, each 256 games on seeds no training task uses, temperature 1, seats alternating by seed:
against a uniformly random opponent twice (the run's own final eval, and ``clew eval`` at sampling seed 1: two
independent samples of the same policy, also pooled to 512 games) and against the game's scripted player (Nim's
xor rule, TicTacToe's minimax; ``clew eval``).
The training never meets either: its opponent is itself. Reported per run with Wilson 95 % intervals, and the
start. Runs are cached by their overrides (``benchmarks/study.py``); ``--report-only`` reports what finished.
Runs of other than 15 iterations are named ``<credit>-s<seed>-i<N>``; with ``--extend`` such a run continues a
copy of the finished 15-iteration run (``clew train --resume``: the learning rate is constant and a resumed run
repeats an uninterrupted one, so only the 15 iterations' final held-out eval is extra).
Writes ``DIR/selfplay.json`` and ``DIR/selfplay.md`` (``selfplay-i<N>.*`` with ``--iterations N``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from clew.eval.stats import wilson_interval
from clew.store.run import atomic_write_text, read_jsonl
from clew.trainer.config import RunConfig, load_config
from machine import describe
from study import commit, finished, study_key, train_run

ROOT = Path(__file__).resolve().parent.parent
EPISODES = 256
BASE_ITERATIONS = 15
COMMON = ["eval.every=0", f"eval.episodes={EPISODES}", "checkpoint_every=1000"]
MARS = ["credit.name=turn_returns", "credit.params={normalize: agent}"]
STRICT = ["shaping.invalid_action_penalty=0.5"]  # an invalid move costs half a win, not a tenth
CREDITS = {"grpo": ["credit.name=grpo"], "mars": MARS, "grpo-strict": ["credit.name=grpo", *STRICT],
           "mars-strict": [*MARS, *STRICT]}  # fmt: skip
OPPONENTS = ("random-own", "random", "random-pooled", "scripted")
HEADERS = ("vs random: the run's eval", "vs random: clew eval", "vs random: both (512)", "vs scripted: clew eval")


def start_run(config: Path, out: Path, threads: int) -> Path:
    run, overrides = out / "sft-start", [*COMMON, "iterations=0", "eval.at_start=true"]
    if not finished(run, overrides):
        train_run(run, overrides, threads, config)
    return run


def rl_overrides(out: Path, credit: str, seed: int, iterations: int) -> list[str]:
    start = out / "sft-start" / "sft" / "policy"
    return [*COMMON, *CREDITS[credit], f"policy.model={start}", "sft.enabled=false", f"seed={seed}",
            f"iterations={iterations}", "eval.at_start=false"]  # fmt: skip


def run_name(credit: str, seed: int, iterations: int) -> str:
    return f"{credit}-s{seed}" + ("" if iterations == BASE_ITERATIONS else f"-i{iterations}")


def rl_run(config: Path, out: Path, credit: str, seed: int, iterations: int, threads: int, extend: bool) -> Path:
    overrides, run = rl_overrides(out, credit, seed, iterations), out / run_name(credit, seed, iterations)
    base = out / run_name(credit, seed, BASE_ITERATIONS)
    if finished(run, overrides):
        return run
    if extend and iterations > BASE_ITERATIONS and finished(base, rl_overrides(out, credit, seed, BASE_ITERATIONS)):
        extend_run(base, run, overrides, threads)
    else:
        train_run(run, overrides, threads, config)
    return run


def extend_run(base: Path, run: Path, overrides: list[str], threads: int) -> None:
    """Continue a copy of the finished ``base`` run to the iterations ``overrides`` name (``clew train --resume``)."""
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base, run, ignore=shutil.ignore_patterns("eval-*.json", "study.json", "summary.json"))
    iterations = next(o for o in overrides if o.startswith("iterations="))
    cmd = [sys.executable, "-m", "clew.cli", "train", "--resume", str(run), iterations, f"threads={threads}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    key = {"overrides": overrides, "commit": commit(), "extended_from": base.name}
    atomic_write_text(run / "study.json", json.dumps(key))


def held_out(cfg: RunConfig, run: Path, opponent: str, policy: Path) -> dict[str, Any]:
    """``EPISODES`` games of ``policy`` against ``opponent``: against ``random`` the run's own last held-out eval
    (``eval.env_kwargs``), else ``clew eval`` (cached in the run as ``eval-<opponent>.json``) with the run's env
    kwargs and budgets."""
    own = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "eval"]
    if opponent == "random-own" and own and own[-1]["eval/episodes"] == EPISODES:
        last = own[-1]
        return {"win": last["eval/success_rate"], "low": last["eval/success_low"], "high": last["eval/success_high"],
                "episodes": EPISODES}  # fmt: skip
    if opponent == "random-pooled":
        parts = [held_out(cfg, run, o, policy) for o in ("random-own", "random")]
        wins, n = sum(round(p["win"] * p["episodes"]) for p in parts), sum(p["episodes"] for p in parts)
        low, high = wilson_interval(wins, n)
        return {"win": wins / n, "low": low, "high": high, "episodes": n}
    opponent = opponent.removesuffix("-own")
    path = run / f"eval-{opponent}.json"
    if not path.exists():
        kwargs = {**cfg.env.kwargs, "opponent": opponent, "seat": "alternate"}
        env_args = [x for key, value in kwargs.items() for x in ("--env-arg", f"{key}={value}")]
        budgets = ["--max-turns", str(cfg.rollout.max_turns), "--max-new-tokens", str(cfg.rollout.max_new_tokens)]
        cmd = [sys.executable, "-m", "clew.cli", "eval", "--env", cfg.env.id, *env_args, "--policy", str(policy),
               "--episodes", str(EPISODES), *budgets, "--window-turns", "0", "--seed", "1",
               "--json", str(path)]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(path.read_text())["runs"][0]
    wins = round(result["success_rate"] * result["episodes"])
    low, high = wilson_interval(wins, result["episodes"])
    return {"win": result["success_rate"], "low": low, "high": high, "episodes": result["episodes"]}


def report(config: Path, out: Path, credits: list[str], seeds: int, iterations: int) -> dict[str, Any]:
    """The table over the start and every finished run of ``BASE_ITERATIONS`` and of ``iterations``, with a summary
    line per (credit, iterations); written to ``selfplay.*`` (``selfplay-i<N>.*`` for other iteration counts)."""
    cfg, rows, counts = load_config(config, []), dict[str, Any](), sorted({BASE_ITERATIONS, iterations})
    start = out / "sft-start"
    if study_key(start):
        rows["start"] = {o: held_out(cfg, start, o, start / "sft" / "policy") for o in OPPONENTS}
    groups = {
        (credit, n): [out / run_name(credit, seed, n) for seed in range(seeds)] for credit in credits for n in counts
    }
    for runs in groups.values():
        rows.update({run.name: {o: held_out(cfg, run, o, run) for o in OPPONENTS} for run in runs if study_key(run)})
    result = {"machine": describe(), "config": config.name, "episodes": EPISODES, "rows": rows}
    lines = ["| policy | " + " | ".join(HEADERS) + " |", "|---" * (len(HEADERS) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{row[o]['win']:.1%} [{row[o]['low']:.1%}, {row[o]['high']:.1%}]" for o in OPPONENTS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for (credit, n), names in groups.items():  # over seeds: the mean and whether each run's interval clears the start's
        runs = [rows[run.name] for run in names if run.name in rows]
        if runs and "start" in rows:
            cells = []
            for o in OPPONENTS:
                mean = sum(r[o]["win"] for r in runs) / len(runs)
                clear = sum(r[o]["low"] > rows["start"][o]["high"] for r in runs)
                cells.append(f"mean {mean:.1%}; {clear} of {len(runs)} above the start's interval")
            lines.append(f"| {credit}, {n} iterations, {len(runs)} seeds | " + " | ".join(cells) + " |")
    stem = "selfplay" + ("" if iterations == BASE_ITERATIONS else f"-i{iterations}")
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=1))
    atomic_write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "selfplay-nim.yaml")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=BASE_ITERATIONS)
    parser.add_argument("--extend", action="store_true", help="continue the 15-iteration runs (a copy of each)")
    parser.add_argument("--credits", nargs="+", default=["grpo", "mars"], choices=list(CREDITS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "selfplay")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        start_run(args.config, args.out, args.threads)
        for seed in range(args.seeds):
            for credit in args.credits:
                rl_run(args.config, args.out, credit, seed, args.iterations, args.threads, args.extend)
    report(args.config, args.out, args.credits, args.seeds, args.iterations)


if __name__ == "__main__":
    main()
