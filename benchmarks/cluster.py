"""Ray against one process: rollout throughput per number of rollout workers, and the demo's overhead.

Usage: python benchmarks/cluster.py [--quick] [--tasks 16] [--iterations 30] [--skip-demo]

1. Rollout throughput: ``--tasks`` keydoor-v0 tasks (the demo's 6 x 6, 16-turn layout) x 8 episodes,
   sampled by ``--model`` (e.g. ``runs/demo/sft/policy``, the demo's SFT policy, whose episodes run
   ~15 turns; default: the demo's tiny model at random init) through ``clew.rollout.collect``:
   in one process with the ``hf`` engine (1 and 2 torch threads), then through ``RayEngines`` with 1
   and 2 rollout workers (1 torch thread each) on a local Ray instance. Env turns per second and
   sampled tokens per second; every configuration collects the same seeds.
2. The demo (``configs/keydoor-demo.yaml``, ``--iterations`` of RL) in one process and on Ray with
   2 rollout workers and 2 learner ranks: wall time, median iteration, and the final held-out success
   (the same seed gives the same rollouts, so the success should match).

Ray's start (the Ray processes, then every actor importing torch and loading the model) is timed
separately: it is paid once per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import ray
import torch

from clew.envs.corpus import sample_texts
from clew.policy import HFPolicy, SamplingParams, TinyModelConfig, build_tiny, make_engine
from clew.policy.remote import RayEngines
from clew.rollout import Framing, PolicyActor, RolloutConfig, Task, collect
from clew.trainer import Trainer, load_config
from machine import busy_cores, describe, wait_for_quiet

ROOT = Path(__file__).resolve().parents[1]
ENV = {"width": 6, "height": 6, "max_steps": 16}
ROLLOUT = RolloutConfig(group_size=8, max_turns=16, max_new_tokens=4, context="window")


def rollout_rate(actor: PolicyActor, policy: HFPolicy, tasks: int) -> tuple[float, float, float]:
    """(env turns/s, sampled tokens/s, seconds) of one rollout of ``tasks`` tasks."""
    work = [Task("keydoor-v0", 1000 + i, ENV) for i in range(tasks)]
    start = time.perf_counter()
    groups = collect(actor, work, ROLLOUT, 0, Framing(policy.tokenizer, policy.chat))
    elapsed = time.perf_counter() - start
    turns = [t for g in groups for e in g.episodes for t in e.turns]
    return len(turns) / elapsed, sum(len(t.action_ids) for t in turns) / elapsed, elapsed


def throughput(model_dir: Path, tasks: int) -> list[tuple[str, float, float, float, str]]:
    policy = HFPolicy.from_pretrained(model_dir)
    params = SamplingParams(temperature=1.0, max_new_tokens=4)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        engine = make_engine("hf", policy.model, tokenizer=policy.tokenizer)
        rollout_rate(PolicyActor(engine, params), policy, 2)  # warm-up
        rows.append(
            (
                f"one process, hf engine, {threads} thread(s)",
                *rollout_rate(PolicyActor(engine, params), policy, tasks),
                "—",
            )
        )
    torch.set_num_threads(2)
    for workers in (1, 2):
        start = time.perf_counter()
        engines = RayEngines.start(workers, "hf", str(model_dir), {}, threads=1, num_cpus=0)
        startup = time.perf_counter() - start
        rollout_rate(PolicyActor(engines, params), policy, 2)  # warm-up
        rate = rollout_rate(PolicyActor(engines, params), policy, tasks)
        rows.append((f"Ray, {workers} rollout worker(s) x 1 thread", *rate, f"{startup:.1f} s"))
        engines.close()
    return rows


def demo(iterations: int, episodes: int, out: Path) -> list[tuple[str, float, float, float, str]]:
    base = [f"iterations={iterations}", "eval.every=0", "eval.at_start=false", f"eval.episodes={episodes}"]
    rows = []
    for label, extra in (
        ("one process", []),
        ("Ray: 2 rollout workers, 2 learner ranks", ["cluster={rollout_workers: 2, learners: 2, worker_cpus: 0}"]),
    ):
        run = out / label.split(":")[0].replace(" ", "-")
        start = time.perf_counter()
        summary = Trainer(load_config(ROOT / "configs" / "keydoor-demo.yaml", base + extra), run).fit()
        wall = time.perf_counter() - start
        its = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        per_it = statistics.median(r["time/iteration_s"] for r in its if r.get("kind") == "iteration")
        success = summary["last_eval"]["eval/success_rate"]
        rows.append((label, wall, per_it, success, f"{summary['env_steps']:,}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--model", type=Path, help="policy for the throughput part (default: a fresh tiny model)")
    args = parser.parse_args()
    tasks, iterations, episodes = (2, 1, 8) if args.quick else (args.tasks, args.iterations, 128)
    load = wait_for_quiet()
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny(
            Path(tmp) / "tiny", sample_texts(env_id="keydoor-v0", env_kwargs=ENV), TinyModelConfig()
        )
        print(
            f"## Rollout throughput: {tasks} keydoor tasks x 8 episodes, policy {args.model or 'tiny (random init)'}\n"
        )
        print("| rollout | env turns/s | sampled tokens/s | rollout s | actors' start |")
        print("|---|---|---|---|---|")
        for label, turns, toks, secs, startup in throughput(model, tasks):
            print(f"| {label} | {turns:.0f} | {toks:.0f} | {secs:.1f} | {startup} |")
        if not args.skip_demo:
            print(f"\n## The demo config, {iterations} RL iteration(s), held-out on {episodes} episodes\n")
            print(
                "| run | wall s (SFT, start, eval included) | median iteration s | final held-out success | env steps |"
            )
            print("|---|---|---|---|---|")
            for label, wall, per_it, success, steps in demo(iterations, episodes, Path(tmp)):
                print(f"| {label} | {wall:.0f} | {per_it:.2f} | {success:.1%} | {steps} |")
    ray.shutdown()
    print(f"\n{describe()}; other processes' load before: {load:.2f} cores, after: {busy_cores():.2f}")


if __name__ == "__main__":
    main()
