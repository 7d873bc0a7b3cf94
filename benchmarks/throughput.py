"""Throughput: clew vs TRL's GRPOTrainer on the same tiny model, prompts, reward, G, lengths, batch.

Usage: python benchmarks/throughput.py [--quick] [--steps N] [--reps R]
Needs the benchmark extra for TRL (`pip install -c constraints.txt -e '.[bench]'`); without TRL
only clew is measured. Each (engine, repetition) runs in its own subprocess, alternating engines,
so peak RSS is per engine and neither warms the other's caches. Settings (shared/reference/
cpu-notes.md): 1.1 M-parameter Llama-style model (hidden 128, 4 layers, vocab 512), G = 8,
32 new tokens, batch 16 completions (2 prompts x 8), lr 1e-3, no KL, token-mean ("dapo") loss,
fp32, no gradient checkpointing. Step time excludes the first (warm-up) step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from machine import busy_cores, describe, wait_for_quiet

GROUP, NEW_TOKENS, PROMPTS_PER_STEP, LR = 8, 32, 2, 1e-3
TOPICS = ["a key", "a door", "a grid", "a calculator", "a corridor", "a lamp", "a branch", "a treasure"]


def prompt_text(i: int) -> str:
    return f"Write one sentence about {TOPICS[i % len(TOPICS)]}."


def reward(text: str) -> float:
    """The same toy reward for both engines: the share of vowels in the completion."""
    return sum(ch in "aeiou" for ch in text) / max(len(text), 1)


class PromptEnv:
    """A single-turn env serving ``prompt_text(seed)``; the reward is ``reward(action)``."""

    def reset(self, seed: int) -> str:
        self._done = False
        return prompt_text(seed)

    def step(self, action: str) -> Any:
        from clew.envs import StepResult

        return StepResult("done", reward(action), True, False, {})


def build_model(path: Path) -> Path:
    from clew.envs.corpus import sample_texts
    from clew.policy import TinyModelConfig, build_tiny

    return build_tiny(path, sample_texts(), TinyModelConfig())


def run_clew(model_dir: Path, steps: int) -> dict[str, float]:
    from clew.policy import HFPolicy, SamplingParams
    from clew.rollout import Framing, PolicyActor, RolloutConfig, Task, collect
    from clew.trainer.config import load_config
    from clew.trainer.loop import Trainer

    cfg = load_config(
        None,
        [
            "preset=grpo", f"policy.model={model_dir}", f"iterations={steps}",
            f"tasks_per_iteration={PROMPTS_PER_STEP}",
            "env.id=throughput:PromptEnv", f"rollout.group_size={GROUP}", "rollout.max_turns=1",
            f"rollout.max_new_tokens={NEW_TOKENS}", f"train.lr={LR}", "train.minibatch_rows=16",
            "train.microbatch_rows=16", "objective.aggregation=token_mean", "eval.every=0", "eval.episodes=1",
            f"checkpoint_every={steps}",
        ],
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(cfg, Path(tmp) / "run").fit()
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in records if r["kind"] == "iteration"][1:]
    tokens = []
    policy = HFPolicy.from_pretrained(model_dir)  # count generated tokens with a matching rollout
    for i in range(3):
        groups = collect(
            PolicyActor(policy, SamplingParams(max_new_tokens=NEW_TOKENS)),
            [Task("throughput:PromptEnv", i)],
            RolloutConfig(group_size=GROUP, max_turns=1, max_new_tokens=NEW_TOKENS),
            i,
            Framing(policy.tokenizer, policy.chat),
        )
        tokens += [len(t.action_ids) for g in groups for e in g.episodes for t in e.turns]
    step = statistics.median(r["time/iteration_s"] for r in iters)
    return {"step_s": step, "mean_completion_tokens": statistics.fmean(tokens)}


def run_trl(model_dir: Path, steps: int) -> dict[str, float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": prompt_text(i)}] for i in range(64)]})

    def reward_fn(completions: list[Any], **_: Any) -> list[float]:
        return [reward(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    times: list[float] = []
    lengths: list[float] = []

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.append(time.perf_counter() - self.start)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=GROUP * PROMPTS_PER_STEP, num_generations=GROUP,
        max_completion_length=NEW_TOKENS, learning_rate=LR, beta=0.0, loss_type="dapo", bf16=False,
        gradient_checkpointing=False, max_steps=steps, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward_fn, args=config, train_dataset=data, processing_class=tokenizer,
        callbacks=[Clock()],
    )  # fmt: skip
    trainer.train()
    return {"step_s": statistics.median(times[1:]), "mean_completion_tokens": statistics.fmean(lengths or [NEW_TOKENS])}


def child(engine: str, model_dir: Path, steps: int) -> None:
    import torch

    torch.set_num_threads(2)
    result = run_clew(model_dir, steps) if engine == "clew" else run_trl(model_dir, steps)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def measure(engine: str, model_dir: Path, steps: int) -> dict[str, float] | None:
    wait_for_quiet()
    cmd = [sys.executable, __file__, "--child", engine, "--model", str(model_dir), "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        print(f"[{engine} failed]\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(lines[-1][7:])
    result["other_load_cores"] = busy_cores(0.5)
    return result


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def have_trl() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def summarize(results: dict[str, list[dict[str, float]]]) -> None:
    print("| engine | completions/s | generated tokens/s | step time | peak RSS |")
    print("|---|---|---|---|---|")
    rates = {}
    for engine, runs in results.items():
        if not runs:
            continue
        step = statistics.median(r["step_s"] for r in runs)
        tokens = statistics.fmean(r["mean_completion_tokens"] for r in runs)
        rss = max(r["peak_rss_mb"] for r in runs)
        per_step = GROUP * PROMPTS_PER_STEP
        rates[engine] = per_step / step
        print(f"| {engine} | {per_step / step:.1f} | {per_step * tokens / step:,.0f} | {step:.3f} s | {rss:.0f} MB |")
    if len(rates) == 2:
        print(f"clew / TRL completions per second: {rates['clew'] / rates['trl']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--model")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.model), args.steps)
        return
    steps, reps = (3, 1) if args.quick else (args.steps, args.reps)
    engines = ["clew", "trl"] if have_trl() else ["clew"]
    print(f"machine: {describe()}; steps per run {steps}, repetitions {reps}, engines {engines}")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "tiny")
        results: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
        for _ in range(reps):
            for engine in engines:
                result = measure(engine, model_dir, steps)
                if result:
                    results[engine].append(result)
    summarize(results)


if __name__ == "__main__":
    main()
