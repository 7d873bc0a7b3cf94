"""Long-horizon rollouts with the full history: the hf engine (re-prefills every turn) vs vllm (prefix caching).

Usage: python benchmarks/multiturn_rollout.py [--quick]

Settings: 64 episodes (8 tasks x group 8) of exactly 40 turns on ``keydoor-v0`` (30x30 grid,
``max_steps=200``: invalid actions do not end an episode and a random model never opens the door),
``rollout.context=full``, 4 new tokens a turn at T = 1, ``max_prompt_tokens=8192``; the tiny model
(``TinyModelConfig()``: hidden 128, 4 layers, random init; ``max_positions=8192``), built once.
The vllm engine gets a 2 GiB KV cache (64 histories of ~3,700 tokens need ~0.9 GiB, so no cached
prefix is evicted). Each engine runs in its own subprocess.

A random model almost never samples the end token within 4 tokens, and ``collect`` ends an episode
whose action hit ``max_new_tokens``; the timing wrapper therefore reports every completion as
stopped (the sampled ids are unchanged) so that every episode runs all its turns.

Measured per engine: wall time of ``collect`` (engine start-up and one warm-up call on 8 unrelated
prompts excluded, printed separately), generated tokens/s, and the per-turn latency of a request at
turns 1, 10 and 40 (the time from ``submit`` to its completion coming back from ``poll``, averaged over
the requests of that turn) with the mean prompt length there, and the mean number of cores other
processes used meanwhile. The hf engine decodes all 64 episodes as one left-padded batch: at turn 40
that is a ~3,700-token prefill per row (~0.5 s and ~110 MB a row here), so its run takes ~10 minutes
and peaks near 8 GB. ``--quick``: 8 episodes x 10 turns, turns 1, 5 and 10.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, wait_for_quiet
from throughput import cpu_seconds, other_load

GROUP, NEW_TOKENS, MAX_PROMPT, KV_CACHE_GIB = 8, 4, 8192, 2.0
ENV_ID, ENV_KWARGS = "keydoor-v0", {"width": 30, "height": 30, "max_steps": 200}


class Size(NamedTuple):
    """Episodes, turns per episode and the turns whose latency is reported."""

    episodes: int
    turns: int
    report: tuple[int, ...]


FULL, QUICK = Size(64, 40, (1, 10, 40)), Size(8, 10, (1, 5, 10))


@dataclass
class TimedActor:
    """Delegates to a ``PolicyActor``; records each request's turn, prompt length and latency.

    A request's turn is the count of its key's submissions; its latency runs from ``submit`` to the
    ``poll`` that returns it. Completions come back marked ``stop`` (see the module docstring).
    """

    inner: Any
    samples: list[tuple[int, int, float]] = field(default_factory=list)  # (turn, prompt tokens, latency s)
    _turns: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    _open: dict[int, tuple[int, int, float]] = field(default_factory=dict)

    @property
    def max_model_len(self) -> int:
        return int(self.inner.max_model_len)

    @property
    def continuous_batching(self) -> bool:
        return bool(self.inner.continuous_batching)

    def submit(self, key: int, prompt: list[int], env: Any, seed: int) -> None:
        self._turns[key] += 1
        self._open[key] = (self._turns[key], len(prompt), time.perf_counter())
        self.inner.submit(key, prompt, env, seed)

    def poll(self) -> list[tuple[int, Any]]:
        done = self.inner.poll()
        now = time.perf_counter()
        for key, _ in done:
            turn, prompt_len, start = self._open.pop(key)
            self.samples.append((turn, prompt_len, now - start))
        return [(key, replace(c, finish_reason="stop")) for key, c in done]

    def pending(self) -> int:
        return int(self.inner.pending())


def open_engine(name: str, model_dir: Path) -> tuple[Any, Any]:
    """The engine and the framing (tokenizer + chat format) of ``model_dir``."""
    from transformers import AutoTokenizer

    from clew.policy import ChatFormat, HFPolicy, make_engine
    from clew.rollout import Framing

    if name == "hf":
        policy = HFPolicy.from_pretrained(model_dir)
        return make_engine("hf", policy.model, tokenizer=policy.tokenizer), Framing(policy.tokenizer, policy.chat)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine = make_engine("vllm", model_dir, kv_cache_gib=KV_CACHE_GIB)
    return engine, Framing(tokenizer, ChatFormat.from_tokenizer(tokenizer))


def run(name: str, model_dir: Path, episodes: int, turns: int) -> dict[str, Any]:
    """Roll out ``episodes`` x ``turns`` with engine ``name``; timings and per-turn latencies."""
    from clew.policy import SamplingParams
    from clew.rollout import PolicyActor, RolloutConfig, Task, collect

    params = SamplingParams(temperature=1.0, max_new_tokens=NEW_TOKENS)
    start = time.perf_counter()
    engine, framing = open_engine(name, model_dir)
    warm_up = [framing.chat.first_segment(framing.tokenizer, f"Warm-up prompt {i}.") for i in range(GROUP)]
    engine.generate(warm_up, params, list(range(GROUP)))  # first calls initialise kernels (vllm: ~2 s)
    startup_s = time.perf_counter() - start
    actor = TimedActor(PolicyActor(engine, params))
    cfg = RolloutConfig(
        group_size=GROUP, max_turns=turns, max_new_tokens=NEW_TOKENS, max_prompt_tokens=MAX_PROMPT,
        temperature=1.0, context="full", engine=name,
    )  # fmt: skip
    tasks = [Task(ENV_ID, seed, dict(ENV_KWARGS)) for seed in range(episodes // GROUP)]
    start = time.perf_counter()
    groups = collect(actor, tasks, cfg, seed=0, framing=framing)
    wall_s = time.perf_counter() - start
    engine.close()
    eps = [e for g in groups for e in g.episodes]
    return {
        "startup_s": startup_s, "wall_s": wall_s, "samples": actor.samples,
        "generated": sum(len(t.action_ids) for e in eps for t in e.turns),
        "min_turns": min(len(e.turns) for e in eps), "endings": sorted({str(e.truncation_reason) for e in eps}),
    }  # fmt: skip


def at_turn(samples: list[tuple[int, int, float]], turn: int) -> tuple[float, float]:
    """Mean latency (s) and mean prompt tokens of the requests at ``turn``."""
    rows = [s for s in samples if s[0] == turn]
    return statistics.fmean(s[2] for s in rows), statistics.fmean(s[1] for s in rows)


def measure(name: str, model_dir: Path, quick: bool) -> dict[str, Any] | None:
    wait_for_quiet()
    cmd = [sys.executable, __file__, "--child", name, "--model", str(model_dir)] + (["--quick"] if quick else [])
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    before = cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    load = other_load(before, cpu_seconds())
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        print(f"[{name} failed]\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(lines[-1][7:])
    result["load_during"] = load
    return result


def table(results: dict[str, dict[str, Any] | None], report: tuple[int, ...]) -> None:
    lat = " | ".join(f"latency t{t}" for t in report)
    print(f"| engine | wall s | gen tok/s | {lat} | prompt tokens t{report[-1]} |")
    print("|---" * (4 + len(report)) + "|")
    for name, r in results.items():
        if r is None:
            print(f"| {name} | failed |" + " |" * (2 + len(report)))
            continue
        cells = [at_turn(r["samples"], t) for t in report]
        lats = " | ".join(f"{c[0]:.3f} s" for c in cells)
        print(f"| {name} | {r['wall_s']:.1f} | {r['generated'] / r['wall_s']:,.0f} | {lats} | {cells[-1][1]:,.0f} |")
    print()
    for name, r in results.items():
        if r is None:
            continue
        first, last = at_turn(r["samples"], report[0]), at_turn(r["samples"], report[-1])
        print(
            f"- {name}: latency t{report[-1]} / t{report[0]} = {last[0] / first[0]:.1f}x; start-up "
            f"{r['startup_s']:.1f} s; every episode ran >= {r['min_turns']} turns "
            f"(ended by {', '.join(r['endings'])}); "
            f"other processes used {r['load_during']:.2f} cores meanwhile"
        )


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--model")
    parser.add_argument("--engines", nargs="*", choices=["hf", "vllm"], help="measure only these engines")
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    if args.child:
        import torch

        torch.set_num_threads(2)
        result = run(args.child, Path(args.model), size.episodes, size.turns)
        print("RESULT " + json.dumps(result))
        return
    engines = ["hf", "vllm"] if vllm_installed() else ["hf"]
    engines = [e for e in engines if e in (args.engines or engines)]
    print(
        f"machine: {describe()}; {size.episodes} episodes x {size.turns} turns, {ENV_ID} {ENV_KWARGS}, "
        f"context=full, {NEW_TOKENS} new tokens a turn, tiny model"
    )
    if not vllm_installed():
        print("- vLLM is not installed (`pip install -e '.[vllm]'`): its row is skipped.")
    from transformers.utils import logging as hf_logging

    from clew.envs.corpus import sample_texts
    from clew.policy import TinyModelConfig, build_tiny

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(Path(tmp) / "tiny", sample_texts(), TinyModelConfig(max_positions=MAX_PROMPT))
        results = {name: measure(name, model_dir, args.quick) for name in engines}
    print()
    table(results, size.report)


if __name__ == "__main__":
    main()
