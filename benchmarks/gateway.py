"""Gateway overhead: a chat call through ``clew.gateway`` (HTTP, JSON, the chat template, recording) against
the same engine called directly.

Usage: python benchmarks/gateway.py [--quick] [--calls 300] [--concurrency 16]
Two engines:
- ``null``: answers every prompt at once with a fixed 4-token completion, so the gateway's own cost is all
  there is (the issue's goal: at most 5 ms added at p50);
- ``tiny``: clew's 1 M-parameter model on the ``hf`` engine, 4 new tokens, to put the overhead next to a real
  (small) model's sampling time.
Per engine: sequential calls (one at a time; latency p50/p99 and calls/s, direct vs through the gateway with
the OpenAI SDK's synchronous client, one session) and ``--concurrency`` clients at once (calls/s; the gateway
batches concurrent calls, the direct baseline sends the same number of prompts as one batch). Prompts: a
three-message chat rendered by the template (through the gateway) or pre-rendered once (direct).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import openai

from clew.envs.corpus import sample_texts
from clew.gateway import Gateway, GatewayConfig
from clew.gateway.render import Renderer
from clew.policy import Completion, HFPolicy, SamplingParams, TinyModelConfig, build_tiny, make_engine
from machine import busy_cores, describe, wait_for_quiet

MESSAGES = [
    {"role": "user", "content": "You are in a room with a locked door. What do you do?"},
    {"role": "assistant", "content": "look around"},
    {"role": "user", "content": "You see a key on the table."},
]


class NullEngine:
    """Answers at once: the same 4 ids for every prompt (the gateway's own cost is then all that is timed)."""

    max_model_len, continuous_batching = 1 << 20, False

    def __init__(self, eos_id: int) -> None:
        self.ids = [5, 6, 7, eos_id]

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]:
        return [Completion(list(self.ids), [-0.1] * 4, "stop", "abc") for _ in prompts]

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None: ...

    def close(self) -> None: ...


def timed(call: Callable[[], object], calls: int) -> tuple[list[float], float]:
    call()  # warm-up
    latencies, start = [], time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    return latencies, calls / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else values[0] * 1000


def bench(name: str, engine: Any, tokenizer: Any, calls: int, concurrency: int) -> list[str]:
    params = SamplingParams(1.0, 1.0, 4, (int(tokenizer.eos_token_id),))
    prompt = Renderer.of(tokenizer).chat(MESSAGES)
    direct, direct_rate = timed(lambda: engine.generate([prompt], params, [0]), calls)
    with Gateway(engine, tokenizer, GatewayConfig(max_tokens=4, open_on_demand=True)) as gateway:
        client = openai.OpenAI(base_url=gateway.base_url("bench"), api_key="unused", max_retries=0)
        through, through_rate = timed(lambda: client.chat.completions.create(model="m", messages=MESSAGES), calls)
        clients = [openai.OpenAI(base_url=gateway.base_url(f"c{i}"), api_key="unused", max_retries=0)
                   for i in range(concurrency)]  # fmt: skip
        rounds = max(1, calls // concurrency)
        with ThreadPoolExecutor(concurrency) as pool:
            start = time.perf_counter()
            for _ in range(rounds):
                list(pool.map(lambda c: c.chat.completions.create(model="m", messages=MESSAGES), clients))
            gateway_conc = rounds * concurrency / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(rounds):
        engine.generate([prompt] * concurrency, params, list(range(concurrency)))
    direct_conc = rounds * concurrency / (time.perf_counter() - start)
    added = pct(through, 50) - pct(direct, 50)
    return [
        f"| {name} | direct | {pct(direct, 50):.2f} | {pct(direct, 99):.2f} | {direct_rate:.1f} | "
        f"{direct_conc:.1f} | — |",
        f"| {name} | gateway | {pct(through, 50):.2f} | {pct(through, 99):.2f} | {through_rate:.1f} | "
        f"{gateway_conc:.1f} | **{added:+.2f} ms** |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    calls = 30 if args.quick else args.calls
    load = wait_for_quiet(timeout=5 if args.quick else 120)
    folder = build_tiny(tempfile.mkdtemp(), sample_texts(), TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2))
    policy = HFPolicy.from_pretrained(folder)
    rows = bench("null", NullEngine(policy.eos_id), policy.tokenizer, calls, args.concurrency)
    engine = make_engine("hf", policy.model, tokenizer=policy.tokenizer)
    rows += bench("tiny (hf)", engine, policy.tokenizer, calls, args.concurrency)
    print(f"{describe()}; other load {load:.2f} cores before, {busy_cores():.2f} after; {calls} sequential calls")
    print()
    print("| engine | path | p50 ms | p99 ms | calls/s (sequential) | calls/s "
          f"({args.concurrency} concurrent) | added p50 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
