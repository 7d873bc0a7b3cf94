"""Judges in the loop (issue 31): two studies with SmolLM2-135M-Instruct as the local judge, on 2 CPU cores.

A. **A judge as the only reward** (``configs/judge-instruct.yaml``): instruct-v0 has no verifier; the tiny policy
   (after SFT on noisy reference answers), and SmolLM2 itself as the policy (LoRA, no SFT: it can answer such
   questions), are trained on the judge's scores alone. Reported per run: the judge's mean
   score per iteration, the exact-match rate of the very replies it scored (recomputed here from the stored
   trajectories against each task's reference, which training never used as a reward), and held-out judged success
   (score >= 5/10) at the start and the end.
B. **Process scores for a step-level estimator vs outcome-only GRPO** on toolcalc-v0 (one operation, 2-8 turns;
   ``configs/toolcalc-igpo.yaml``'s task, SFT and budget, 4 tasks x 8 episodes per iteration): ``grpo`` on the
   verifier's outcome vs ``turn_returns`` on the verifier's outcome plus SmolLM2's score of every step (weight 0.5,
   offset 0.5: an indifferent step is worth nothing), and ``turn_returns`` on the outcome alone (the estimator
   without the judge). Held-out success is the verifier's (128 episodes, the judge
   is not asked), Wilson intervals per run and a bootstrap over seeds of the mean.

Each run trains in a process of its own (a vLLM judge per run), cached by the overrides it was given
(``benchmarks/study.py``), so the study resumes. Writes ``DIR/judge_study.json`` and ``DIR/judge_study.md``.

    python benchmarks/judge_study.py --parts A B --seeds 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from clew.envs import make as make_env
from clew.eval.stats import bootstrap_interval
from clew.store.run import atomic_write_text, read_jsonl
from clew.store.trajectories import read_trajectories
from study import finished, study_key, train_run

ROOT = Path(__file__).resolve().parent.parent
PROCESS = ("{name: verifier}, {name: process, weight: 0.5, params: {offset: 0.5, engine: vllm, "
           "engine_params: {max_model_len: 2048}, max_tokens: 3}}")  # fmt: skip
TOOLCALC = [
    "tasks_per_iteration=4",
    "eval.every=0",
    "eval.episodes=128",
    "judging.on_eval=false",
    "sft.enabled=false",
    "eval.at_start=false",
]  # every B run starts from one shared SFT policy (B-sft-start: its held-out eval)
SFT_START = "B-sft-start"
ARMS: dict[str, tuple[Path, list[str]]] = {
    "A/judge-only": (ROOT / "configs/judge-instruct.yaml", []),
    "A/judge-only-smollm2-policy": (ROOT / "configs/judge-instruct.yaml", [
        "policy.model=smollm2-135m-instruct", "policy.lora={r: 16, alpha: 32, target_modules: all-linear}",
        "sft.enabled=false", "rollout.max_new_tokens=12", "train.lr=0.0002", "train.microbatch_rows=8"]),
    "B/grpo": (ROOT / "configs/toolcalc-igpo.yaml", ["preset=grpo", *TOOLCALC]),
    "B/turn_returns": (ROOT / "configs/toolcalc-igpo.yaml", ["preset=turn_returns", *TOOLCALC]),  # the estimator alone
    "B/turn_returns+process": (ROOT / "configs/toolcalc-igpo.yaml",
                               ["preset=turn_returns", f"rewards=[{PROCESS}]", *TOOLCALC]),
}  # fmt: skip


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def reference(env: Any, seed: int) -> str:
    env.reset(seed)
    return str(env.gold_reply() or "")


def exact_match_per_iteration(run: Path) -> list[float]:
    """The share of training replies equal to their task's reference (normalised), per iteration."""
    env = make_env("instruct-v0")
    shares = []
    for path in sorted((run / "trajectories").glob("iter_*.parquet")):
        turns = read_trajectories(path)
        hits = [normalise(t["action_text"]) == normalise(reference(env, int(t["seed"]))) for t in turns]
        shares.append(float(np.mean(hits)) if hits else float("nan"))
    return shares


def summarise(run: Path, arm: str) -> dict[str, Any]:
    records = read_jsonl(run / "metrics.jsonl")
    its = [r for r in records if r.get("kind") == "iteration"]
    evals = [r for r in records if r.get("kind") == "eval"]
    out: dict[str, Any] = {"commit": (study_key(run) or {}).get("commit"), "evals": []}
    for e in evals:
        out["evals"].append({"iteration": e["iteration"], "success": float(e["eval/success_rate"]),
                             "n": int(e["eval/episodes"]), "interval": [e["eval/success_low"], e["eval/success_high"]],
                             "judge_mean": e.get("eval/rewards/judge/mean")})  # fmt: skip
    out["train_success"] = [r.get("rollout/success_rate") for r in its]
    out["judge_mean"] = [r.get("rewards/judge/mean") or r.get("rewards/process/mean") for r in its]
    out["judge_failed_share"] = [r.get("rewards/judge_failed_share") for r in its]
    out["judge_wait_s"] = [r.get("time/judge_wait_s") for r in its]
    out["iteration_s"] = [r.get("time/iteration_s") for r in its]
    if arm.startswith("A/"):
        out["exact_match"] = exact_match_per_iteration(run)
    return out


def _train(run: Path, overrides: list[str], threads: int, config: Path) -> None:
    if not finished(run, overrides):
        context = multiprocessing.get_context("spawn")  # a fresh process per run: its own vLLM judge
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            pool.submit(train_run, run, overrides, threads, config).result()


def sft_start(out: Path, threads: int) -> Path:
    """Part B's shared start: the toolcalc config's SFT, its held-out evaluation, no RL."""
    run = out / SFT_START
    _train(
        run,
        ["iterations=0", "eval.episodes=128", "tasks_per_iteration=4"],
        threads,
        ROOT / "configs/toolcalc-igpo.yaml",
    )
    return run / "sft" / "policy"


def run_arm(out: Path, arm: str, seed: int, threads: int) -> Path:
    config, overrides = ARMS[arm]
    run = out / arm.replace("/", "-") / f"seed{seed}"
    overrides = [*overrides, f"seed={seed}"]
    if arm.startswith("B/"):
        overrides.append(f"policy.model={sft_start(out, threads)}")
    _train(run, overrides, threads, config)
    return run


def markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| arm | seed | held-out start | held-out end | judge mean (first → last it.) | exact match (first → "
             "last it.) | judge wait per it. |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, runs in results.items():
        for seed, r in enumerate(runs):
            ev = r["evals"]
            fmt = lambda e: f"{100 * e['success']:.1f} % [{100 * e['interval'][0]:.1f}, {100 * e['interval'][1]:.1f}]"  # noqa: E731
            start = fmt(ev[0]) if len(ev) > 1 else (fmt(r["start"]) if r.get("start") else "—")
            end = fmt(ev[-1]) if ev else "—"
            judge = [x for x in r["judge_mean"] if x is not None]
            em = r.get("exact_match") or []
            waits = [x for x in r["judge_wait_s"] if x is not None]
            lines.append(f"| {arm} | {seed} | {start} | {end} | "
                         + (f"{judge[0]:.2f} → {judge[-1]:.2f}" if judge else "—") + " | "
                         + (f"{em[0]:.2f} → {em[-1]:.2f}" if em else "—") + " | "
                         + (f"{np.mean(waits):.1f} s" if waits else "—") + " |")  # fmt: skip
        ends = [r["evals"][-1]["success"] for r in runs if r["evals"]]
        if len(ends) > 1:
            lo, hi = bootstrap_interval(np.array(ends), np.mean, seed=0)
            lines.append(f"| {arm} | mean | | {100 * np.mean(ends):.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="*", default=["A", "B"], choices=["A", "B"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seeds-a", type=int, default=1, help="seeds of part A (a demonstration, not a comparison)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/judge_study"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    results: dict[str, list[dict[str, Any]]] = {}
    for seed in range(max(args.seeds, args.seeds_a)):  # seed-major: every arm gets seed 0 first
        for arm in ARMS:
            if arm[0] not in args.parts or seed >= (args.seeds_a if arm.startswith("A/") else args.seeds):
                continue
            run = out / arm.replace("/", "-") / f"seed{seed}"
            if not args.report_only:
                run = run_arm(out, arm, seed, args.threads)
            if (run / "summary.json").exists():
                results.setdefault(arm, []).append(summarise(run, arm))
                if arm.startswith("B/") and (out / SFT_START / "summary.json").exists():
                    results[arm][-1]["start"] = summarise(out / SFT_START, arm)["evals"][0]
                atomic_write_text(out / "judge_study.json", json.dumps(results, indent=1, default=float))
                atomic_write_text(out / "judge_study.md", markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
