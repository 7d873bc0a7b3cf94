"""Judge throughput (issue 31): judgements per second of a local SmolLM2-135M-Instruct judge on each engine, by
batch (the service's ``backend.batch``), for pointwise judgements of instruct-v0 episodes and process judgements
of toolcalc-v0 steps (longer transcripts, shared prefixes), plus what the cache saves; and, from finished runs of
``benchmarks/judge_study.py``, the judges' cost as a share of an RL iteration.

    python benchmarks/judge_throughput.py --engines hf vllm --batches 1 8 32 --n 64

Each engine is measured in a process of its own (vLLM's CPU engine binds threads). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from clew.envs import make as make_env
from clew.rewards import prompts
from clew.rewards.parse import parse_score
from clew.rewards.service import JudgeService
from clew.rewards.sources import JudgeParams, parse_params
from clew.store.run import read_jsonl
from clew.trainer.judging import SCORE_PREFIX, build_backend
from clew.types import Episode, Turn

ROOT = Path(__file__).resolve().parent.parent


def instruct_messages(n: int, backend: Any, params: JudgeParams) -> list[prompts.Messages]:
    env = make_env("instruct-v0")
    out = []
    for seed in range(n):
        question = env.reset(seed)
        answer = ["Paris", "I am not sure, maybe it is the big one", "cold"][seed % 3]
        episode = Episode("instruct", 0, seed, [Turn([1], [2], [-1.0], answer)], first_observation=question,
                          gold_reply=env.gold_reply())  # fmt: skip
        text = prompts.transcript(episode, reference=True)
        out.append(prompts.pointwise(params.rubric, text, params.scale, backend.context_tokens, params.max_tokens,
                                     backend.count, backend.special_tokens))  # fmt: skip
    return out


def process_messages(n: int, backend: Any, params: JudgeParams) -> list[prompts.Messages]:
    """Steps of scripted toolcalc episodes (two operations), every step judged on the transcript up to it."""
    env = make_env("toolcalc-v0", n_ops=2)
    out: list[prompts.Messages] = []
    seed = 0
    while len(out) < n:
        first = env.reset(seed)
        episode = Episode("toolcalc", 0, seed, first_observation=first)
        done = False
        while not done:
            action = env.expert_action()
            result = env.step(action)
            episode.turns.append(Turn([1], [2], [-1.0], action, observation=result.observation))
            done = result.terminated or result.truncated
            text = prompts.transcript(episode)
            out.append(prompts.pointwise(params.rubric, text, params.scale, backend.context_tokens,
                                         params.max_tokens, backend.count, backend.special_tokens,
                                         template=prompts.PROCESS))  # fmt: skip
        seed += 1
    return out[:n]


def measure(engine: str, batches: list[int], n: int, threads: int) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    params = parse_params("judge", {"engine": engine, "max_tokens": 3, "reference": True,
                                    "engine_params": {"max_model_len": 2048} if engine == "vllm" else {}})  # fmt: skip
    assert isinstance(params, JudgeParams)
    start = time.perf_counter()
    backend = build_backend(params)
    load_s = time.perf_counter() - start
    rows = []
    parse = lambda reply: None if (s := parse_score(reply, params.scale)) is None else [s]  # noqa: E731
    for kind, make in (("pointwise", instruct_messages), ("process", process_messages)):
        messages = make(n, backend, params)
        tokens = statistics.mean(sum(backend.count(m["content"]) for m in msgs) for msgs in messages)
        backend.complete(messages[:2], 0.0, 3, [0, 1], SCORE_PREFIX)  # warm-up
        for batch in batches:
            backend.batch = batch  # type: ignore[misc]
            service = JudgeService(backend, concurrency=1, timeout_s=3600, max_tokens=3)
            start = time.perf_counter()
            verdicts = service.results(
                [service.submit(kind, m, parse, i, SCORE_PREFIX) for i, m in enumerate(messages)]
            )
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            service.results([service.submit(kind, m, parse, i, SCORE_PREFIX) for i, m in enumerate(messages)])
            cached_s = time.perf_counter() - start
            rows.append({"engine": engine, "kind": kind, "batch": batch, "n": n, "prompt_tokens": tokens,
                         "judgements_per_s": n / seconds, "parsed": sum(v.scores is not None for v in verdicts) / n,
                         "cached_per_s": n / max(cached_s, 1e-9), "load_s": load_s})  # fmt: skip
            service.stop()
    backend.close()
    return rows


def run_costs(study: Path) -> list[dict[str, Any]]:
    """Per finished judge-study run: the mean iteration time, the wait for judges after the rollout, and the judge
    engine's busy seconds per iteration (busy overlaps the rollout)."""
    out = []
    for metrics in sorted(study.glob("*/seed*/metrics.jsonl")):
        its = [r for r in read_jsonl(metrics) if r.get("kind") == "iteration" and r.get("judge/calls")]
        if len(its) < 2:
            continue
        busy = [b["judge/busy_s"] - a["judge/busy_s"] for a, b in itertools.pairwise(its)]
        out.append({"run": f"{metrics.parent.parent.name}/{metrics.parent.name}",
                    "iteration_s": statistics.mean(r["time/iteration_s"] for r in its),
                    "judge_wait_s": statistics.mean(r["time/judge_wait_s"] for r in its),
                    "judge_busy_s": statistics.mean(busy),
                    "judgements": statistics.mean(r["rewards/judgements"] for r in its)})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="*", default=["hf", "vllm"])
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8, 32])
    parser.add_argument("--n", type=int, default=64, help="judgements per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--study", default=str(ROOT / "benchmarks/results/judge_study"))
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for engine in args.engines:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows += pool.submit(measure, engine, args.batches, args.n, args.threads).result()
    print("| engine | judgement | batch | prompt tokens | judgements/s | parsed | cached judgements/s | load s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["engine"], r["kind"], r["batch"], f"{r['prompt_tokens']:.0f}", f"{r['judgements_per_s']:.2f}",
                 f"{100 * r['parsed']:.0f} %", f"{r['cached_per_s']:.0f}", f"{r['load_s']:.0f}"]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    costs = run_costs(Path(args.study))
    if costs:
        print("\n| run | s / iteration | judgements / it. | judge busy s / it. | wait after rollout s / it. | share |")
        print("|---|---|---|---|---|---|")
        for c in costs:
            print(f"| {c['run']} | {c['iteration_s']:.1f} | {c['judgements']:.0f} | {c['judge_busy_s']:.1f} | "
                  f"{c['judge_wait_s']:.1f} | {100 * c['judge_wait_s'] / c['iteration_s']:.0f} % |")  # fmt: skip
    json.dump({"rows": rows, "costs": costs}, sys.stderr, default=float)


if __name__ == "__main__":
    main()
