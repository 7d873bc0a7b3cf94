"""Multi-turn RL throughput: clew against TRL's own multi-turn path, in env turns trained per second.

Usage: python benchmarks/multiturn_trl.py [--quick] [--models tiny,llama-75m,smollm2] [--steps N] [--reps R]
       [--engine hf|vllm] [--wait S]

Both frameworks train GRPO on ``keydoor-v0`` with the full chat history as every turn's context. One RL step
= roll out ``tasks x G`` episodes, then update; a step's env turns are the env actions of its episodes, all
of them trained on. Measured per framework: the median step time (the first, warm-up step excluded), env
turns per step, **env turns trained per second** (= turns per step / median step time), training rows per
step, the rollout's share of the step and the child's peak RSS; then clew / TRL turns per second.

Settings (``--quick`` in brackets): 2 [1] tasks x G 8 [4] per step, ``keydoor-v0`` 8x8 [6x6] with
``max_steps`` 16 [10] and the same turn budget, 4 new tokens per action at T = 1, lr 1e-3, no KL,
token-mean ("dapo") loss, fp32, no gradient checkpointing, one optimizer step per RL step, 12 [3] steps,
3 [1] repetitions, ``--models`` tiny (see ``throughput.py``: ``tiny``, ``llama-75m``, ``smollm2``).
A random model's 4 tokens are never a valid action, so every episode runs exactly ``max_steps`` turns
(the env truncates it) and every reward is 0: the advantages are 0, but both frameworks still do all the
work of a step. A random model also almost never samples the end token, and clew ends an episode whose
action hits ``max_new_tokens``; so clew's actor here hands its completions back marked ``stop`` (ids and
log-probs unchanged; the same trick as ``multiturn_rollout.py``), and the TRL loop below ignores the cut
too. Each (framework, repetition) runs in its own subprocess, alternating, after waiting (up to ``--wait``
seconds) for other processes to go quiet; "other load" is the cores they used meanwhile.

Rows:
- ``clew (per-turn rows)``: clew's default, one training row per turn (its full-history prompt as context);
- ``clew (merged rows)``: ``train.merge_prefix=true``, one row per episode, like TRL's;
- ``TRL (rollout_func)``: ``GRPOTrainer`` 1.16.0 with a ``rollout_func`` that plays each episode.

Which TRL hook (facts from ``trl/trainer/grpo_trainer.py``, 1.16.0):
- ``environment_factory`` exposes an env's methods as tools. ``__init__`` (l. 641-651) refuses a tokenizer
  whose chat template cannot render a tool call (``supports_tool_calling``): clew's tiny tokenizer and
  SmolLM2-135M-Instruct's template both fail that check (they read only ``role`` and ``content``). Its turns
  would also come from ``_tool_call_loop`` (l. 1945), which continues only while the model emits parseable
  tool calls, which a random model never does.
- ``rollout_func(prompts, trainer)`` (docstring l. 258-264; called in ``_generate`` l. 2200-2216) returns
  ``prompt_ids``, ``completion_ids`` and ``logprobs`` per row (``logprobs`` may be None: without vLLM
  they only feed the vLLM importance-sampling correction, l. 2660); any other key goes to the reward
  functions, except ``env_mask``, which becomes the ``tool_mask`` (l. 2270-2272) that multiplies the loss
  mask (l. 2497). The ``prompts`` it gets are the sampler's rows, each prompt repeated G times
  (``RepeatSampler``, l. 1309), so it returns one episode per row. This benchmark uses it: each row is one
  episode, its prompt the first observation, its completion every action and every later observation
  (``env_mask`` 0 on the observations). Actions are sampled by ``trainer._generate_single_turn`` (l. 1763),
  TRL's own non-vLLM generation (``model.generate`` on a left-padded batch with the trainer's generation
  config), on all running episodes at once; the ids after an action are sliced out of the chat template
  rendered around the observation, as TRL's tool loop does (``_get_tool_suffix_ids``, l. 1893). TRL always
  generates this way here: ``--engine vllm`` switches clew's engine only (TRL's vLLM modes need a server or
  a GPU).

Fairness: both sample with their own engine from the same weights and train on exactly the sampled action
tokens with token-mean GRPO; clew's per-turn rows recompute each turn's history (many more forward tokens),
its merged rows and TRL's rows compute each episode once. clew also runs its defaults (a step guard, the
parity probe after the first sync; TIS with vllm). Step time is clew's ``time/iteration_s`` (rollout to
sync, before writing trajectories) and, for TRL, ``on_step_begin`` to ``on_step_end`` (generation, loss
and optimizer step).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).parent))
from machine import busy_cores, describe, wait_for_quiet
from throughput import MODELS, build_model, cpu_seconds, other_load

ENV_ID, NEW_TOKENS, LR = "keydoor-v0", 4, 1e-3
FRAMEWORKS = {"clew": "clew (per-turn rows)", "clew-merged": "clew (merged rows)", "trl": "TRL (rollout_func)"}


class Size(NamedTuple):
    """Tasks per step, group size G, the grid side and the turns of every episode (= the env's max_steps)."""

    tasks: int
    group: int
    grid: int
    turns: int

    @property
    def env_kwargs(self) -> dict[str, int]:
        return {"width": self.grid, "height": self.grid, "max_steps": self.turns}


FULL, QUICK = Size(2, 8, 8, 16), Size(1, 4, 6, 10)


# --- clew child ----------------------------------------------------------------------------------------
def uncut_trainer() -> type:
    """clew's ``Trainer`` rolling out with a ``PolicyActor`` that hands every completion back marked ``stop``
    (so an action cut at ``max_new_tokens`` does not end its episode): the session builds its actor from
    ``clew.trainer.session.PolicyActor``, which this child process replaces."""
    from clew.policy.base import Completion
    from clew.rollout import PolicyActor
    from clew.trainer import session
    from clew.trainer.loop import Trainer

    class UncutActor(PolicyActor):
        def poll(self) -> list[tuple[int, Completion | Exception]]:
            done = super().poll()
            return [(key, c if isinstance(c, Exception) else replace(c, finish_reason="stop")) for key, c in done]

    session.PolicyActor = UncutActor  # type: ignore[misc]
    return Trainer


def run_clew(model_dir: Path, size: Size, steps: int, engine: str, merged: bool) -> dict[str, float]:
    from clew.trainer.config import load_config

    trainer_cls = uncut_trainer()
    kwargs = ", ".join(f"{k}: {v}" for k, v in size.env_kwargs.items())
    rows = size.tasks * size.group * size.turns  # per-turn rows of a step: one optimizer step takes them all
    overrides = [
        "preset=grpo", f"policy.model={model_dir}", f"iterations={steps}", f"tasks_per_iteration={size.tasks}",
        f"env.id={ENV_ID}", f"env.kwargs={{{kwargs}}}", f"rollout.group_size={size.group}",
        f"rollout.max_turns={size.turns}", f"rollout.max_new_tokens={NEW_TOKENS}", "rollout.context=full",
        f"rollout.engine={engine}", f"train.lr={LR}", f"train.minibatch_rows={rows}",
        f"train.microbatch_rows={size.tasks * size.group}", f"train.merge_prefix={str(merged).lower()}",
        "objective.aggregation=token_mean", "eval.every=0", "eval.at_start=false", "eval.at_end=false",
        f"checkpoint_every={steps}",
    ]  # fmt: skip
    if engine == "vllm":
        overrides.append("rollout.engine_params={kv_cache_gib: 1}")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        trainer_cls(load_config(None, overrides), run).fit()
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in records if r["kind"] == "iteration"][1:]
    played = {r["rollout/env_steps"] for r in iters}
    if played != {size.tasks * size.group * size.turns}:  # an episode ended early: the two sides would differ
        raise RuntimeError(
            f"clew played {sorted(played)} env turns per step, not {size.tasks * size.group * size.turns}"
        )
    return {
        "step_s": statistics.median(r["time/iteration_s"] for r in iters),
        "turns_per_step": statistics.fmean(r["rollout/env_steps"] for r in iters),
        "rows_per_step": statistics.fmean(r["train/rows"] for r in iters),
        "rollout_share": sum(r["time/rollout_s"] for r in iters) / sum(r["time/iteration_s"] for r in iters),
    }


# --- TRL child -----------------------------------------------------------------------------------------
def render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    )
    return [int(i) for i in ids]


@dataclass
class TemplateTurns:
    """Token ids the chat template puts around observations, taken from renders of the template itself."""

    tokenizer: Any
    eos_id: int = field(init=False)
    _head: list[dict[str, str]] = field(init=False)
    _cut: int = field(init=False)

    def __post_init__(self) -> None:
        self.eos_id = int(self.tokenizer.eos_token_id)
        self._head = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
        head = render(self.tokenizer, self._head, generation_prompt=False)
        if self.eos_id not in head:
            raise ValueError("the chat template does not close an assistant message with the end token")
        self._cut = len(head) - head[::-1].index(self.eos_id)  # just past the assistant's end token

    def opening(self, observation: str) -> list[int]:
        """The first prompt: the observation as the user message, then the generation prompt."""
        return render(self.tokenizer, [{"role": "user", "content": observation}], generation_prompt=True)

    def after_action(self, action_ids: list[int], observation: str) -> list[int]:
        """Ids between a sampled action and the next one: the end token unless it was sampled, then the
        observation as a user message and the generation prompt."""
        full = render(self.tokenizer, [*self._head, {"role": "user", "content": observation}], generation_prompt=True)
        close = [] if action_ids and action_ids[-1] == self.eos_id else [self.eos_id]
        return close + full[self._cut :]


@dataclass
class TrlEpisode:
    """One row for TRL: the first prompt, then actions (``env_mask`` 1) and observations (0) as its completion."""

    env: Any
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    reward: float = 0.0
    turns: int = 0
    done: bool = False

    def step(self, action_ids: list[int], chat: TemplateTurns, max_turns: int) -> None:
        result = self.env.step(chat.tokenizer.decode(action_ids, skip_special_tokens=True))
        self.completion_ids += action_ids
        self.env_mask += [1] * len(action_ids)
        self.reward += float(result.reward)
        self.turns += 1
        self.done = result.terminated or result.truncated or self.turns >= max_turns
        if not self.done:
            after = chat.after_action(action_ids, result.observation)
            self.completion_ids += after
            self.env_mask += [0] * len(after)


def make_rollout_func(size: Size, log: list[tuple[int, float]]) -> Any:
    """A TRL ``rollout_func`` playing one keydoor episode per prompt row (a prompt is ``keydoor-v0#<seed>``),
    all running episodes sampled in one batch per turn; appends (env turns, seconds) to ``log`` per call."""
    from clew.envs import make

    def rollout(prompts: list[str], trainer: Any) -> dict[str, Any]:
        start = time.perf_counter()
        chat = TemplateTurns(trainer.processing_class)
        episodes = []
        for prompt in prompts:
            env = make(ENV_ID, **size.env_kwargs)
            episodes.append(TrlEpisode(env, chat.opening(env.reset(int(prompt.rsplit("#", 1)[1])))))
        while running := [e for e in episodes if not e.done]:
            contexts = [e.prompt_ids + e.completion_ids for e in running]
            actions, _ = trainer._generate_single_turn(contexts, None, {}, size.group)
            for episode, ids in zip(running, actions, strict=True):
                episode.step(list(ids), chat, size.turns)
        log.append((sum(e.turns for e in episodes), time.perf_counter() - start))
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.completion_ids for e in episodes],
            "logprobs": None,
            "env_mask": [e.env_mask for e in episodes],
            "env_reward": [e.reward for e in episodes],
        }

    return rollout


def run_trl(model_dir: Path, size: Size, steps: int) -> dict[str, float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    data = Dataset.from_dict({"prompt": [f"{ENV_ID}#{seed}" for seed in range(1000)]})
    log: list[tuple[int, float]] = []
    times: list[float] = []

    def env_reward(completions: list[Any], env_reward: list[float], **_: Any) -> list[float | None]:
        return [float(r) for r in env_reward]  # the episode's summed env reward, from the rollout_func

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.append(time.perf_counter() - self.start)

    per_step = size.tasks * size.group
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=per_step, num_generations=size.group,
            max_completion_length=NEW_TOKENS, learning_rate=LR, beta=0.0, loss_type="dapo", bf16=False,
            gradient_checkpointing=False, max_steps=steps, logging_steps=1, report_to="none", save_strategy="no",
            use_cpu=True, seed=0, dataloader_num_workers=0, temperature=1.0,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=model, reward_funcs=env_reward, args=config, train_dataset=data, processing_class=tokenizer,
            callbacks=[Clock()], rollout_func=make_rollout_func(size, log),
        )  # fmt: skip
        trainer.train()
    measured = log[1 : len(times)]
    return {
        "step_s": statistics.median(times[1:]),
        "turns_per_step": statistics.fmean(turns for turns, _ in measured),
        "rows_per_step": float(per_step),
        "rollout_share": sum(s for _, s in measured) / sum(times[1:]),
    }


def child(kind: str, model_dir: Path, size: Size, steps: int, engine: str) -> None:
    import torch

    torch.set_num_threads(2)
    if kind == "trl":
        result = run_trl(model_dir, size, steps)
    else:
        result = run_clew(model_dir, size, steps, engine, merged=kind == "clew-merged")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


# --- parent ---------------------------------------------------------------------------------------------
def measure(kind: str, model_dir: Path, steps: int, opts: argparse.Namespace) -> dict[str, float] | None:
    """Run one child after waiting for a quiet machine; ``None`` (and its stderr) when it fails."""
    wait_for_quiet(timeout=opts.wait)
    cmd = [sys.executable, __file__, "--child", kind, "--model", str(model_dir), "--steps", str(steps)]
    cmd += ["--engine", opts.engine] + (["--quick"] if opts.quick else [])
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1"}
    before = cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    load = other_load(before, cpu_seconds())
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        print(f"[{kind} failed]\n{out.stderr[-3000:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(lines[-1][7:])
    result["load_during"] = load
    return result


def table(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Print one model's table; return env turns trained per second per framework."""
    print("| framework | step time | env turns / step | env turns trained / s | rows / step | rollout share "
          "| peak RSS | other load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    rates = {}
    for kind, results in runs.items():
        if not results:
            print(f"| {FRAMEWORKS[kind]} | failed | | | | | | |")
            continue
        step = statistics.median(r["step_s"] for r in results)
        turns = statistics.fmean(r["turns_per_step"] for r in results)
        rates[kind] = turns / step
        print(
            f"| {FRAMEWORKS[kind]} | {step:.2f} s | {turns:.0f} | {rates[kind]:.1f} "
            f"| {statistics.fmean(r['rows_per_step'] for r in results):.0f} "
            f"| {statistics.fmean(r['rollout_share'] for r in results):.0%} "
            f"| {max(r['peak_rss_mb'] for r in results):,.0f} MB | {max(r['load_during'] for r in results):.2f} |"
        )
    return rates


def bench_model(name: str, model_dir: Path, steps: int, reps: int, opts: argparse.Namespace) -> None:
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in FRAMEWORKS}
    for _ in range(reps):
        for kind in FRAMEWORKS:
            if result := measure(kind, model_dir, steps, opts):
                runs[kind].append(result)
    print(f"\n### {name} ({MODELS[name]})\n")
    rates = table(runs)
    for kind in ("clew", "clew-merged"):
        if kind in rates and "trl" in rates:
            print(f"- {name}: {FRAMEWORKS[kind]} / TRL env turns trained per second: {rates[kind] / rates['trl']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 steps, 1 repetition, a smaller grid")
    parser.add_argument("--models", default="tiny", help=f"comma-separated: {','.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=12, help="RL steps per run (the first is not measured)")
    parser.add_argument("--reps", type=int, default=3, help="runs per framework, alternating")
    parser.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="clew's rollout engine")
    parser.add_argument("--wait", type=float, help="seconds to wait for a quiet machine (default 120, --quick 5)")
    parser.add_argument("--child")
    parser.add_argument("--model")
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    if args.child:
        child(args.child, Path(args.model), size, args.steps, args.engine)
        return
    for module, extra in (("trl", "bench"), *([("vllm", "vllm")] if args.engine == "vllm" else [])):
        if importlib.util.find_spec(module) is None:
            sys.exit(f"{module} is not installed: pip install -e '.[{extra}]'")
    steps, reps, models = (3, 1, ["tiny"]) if args.quick else (args.steps, args.reps, args.models.split(","))
    args.wait = args.wait if args.wait is not None else (5.0 if args.quick else 120.0)
    print(f"machine: {describe()}; {steps} steps per run (first excluded), {reps} repetition(s)")
    print(
        f"{ENV_ID} {size.env_kwargs}, {size.tasks} tasks x G {size.group} per step, {size.turns} turns per episode, "
        f"context=full, {NEW_TOKENS} new tokens per action; clew engine {args.engine}, TRL HF generate"
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            bench_model(name, build_model(name, Path(tmp) / name), steps, reps, args)
    print(f"\nother processes' load at the end: {busy_cores(0.5):.2f} cores")


if __name__ == "__main__":
    main()
