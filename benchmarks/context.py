"""Long-horizon context: prompt length, per-turn latency and memory over 1,000-turn episodes, per strategy.

Usage: python benchmarks/context.py [--turns 1000] [--strategies full,window,summary,memory,markovian] [--json OUT]

One keydoor-v0 episode per strategy on a large layout (24 x 24, ``corners``, ``max_steps`` = turns, so
an untrained policy never ends it early), played by clew's default tiny model (random init, ~1 M
parameters, the ``hf`` engine, 2 threads), temperature 1, ``max_prompt_tokens`` 4,000. Every token id
stops an action, so actions and summaries are one token: an untrained model rarely samples its end
token, and an action cut at ``max_new_tokens`` would end the episode long before turn 1,000. The
prompt lengths therefore come from the observations and framing (about 85 tokens an exchange). Each
strategy runs in its own subprocess, so RSS is its own. Per-turn numbers come from the rollout's progress
callback (one episode: one callback per sampled turn, summaries included):

- prompt tokens: the length of the prompt each turn was sampled from, median over the first 100 turns
  ("early") and over the last 100 ("late"); a window of 100 spans whole summary and chunk cycles, which
  turn 10 alone would not (a summary context's prompt grows between summaries and drops after one);
- latency: wall time between consecutive callbacks (sampling + env step), same windows, in ms, and its
  median per block of 100 turns (printed below the table, with the process's CPU time per turn, which
  the machine's other tenants do not move);
- RSS: the process's resident set (VmRSS) at turn 100 and at the end, and its peak (VmHWM).

``full`` keeps the whole chat and stops at the prompt budget (its episode ends with ``max_prompt_tokens``):
its row shows where that happened. Parameters: summary ``every 16``; memory ``turns 2``; window ``turns 2``;
markovian ``chunk_tokens 512, carry_tokens 128``. The tiny model never writes ``<memory>`` blocks, so
the memory row measures the mechanism (task + memory + window), not a learned memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, wait_for_quiet

STRATEGIES: dict[str, dict[str, Any]] = {
    "full": {},
    "window": {"turns": 2},
    "summary": {"every": 16},
    "memory": {"turns": 2},
    "markovian": {"chunk_tokens": 512, "carry_tokens": 128},
}
STOPS = tuple(range(512))  # every id of the tiny vocabulary ends an action: one-token actions and summaries
WINDOW = 100  # turns per median
LAYOUT = {"width": 24, "height": 24, "layout": "corners"}


def _rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(name: str, turns: int) -> dict[str, Any]:
    import torch

    from clew.envs.corpus import sample_texts
    from clew.policy import HFPolicy, SamplingParams, TinyModelConfig, build_tiny, make_engine
    from clew.rollout import Framing, PolicyActor, RolloutConfig, Task, collect

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        policy = HFPolicy.from_pretrained(build_tiny(Path(tmp), sample_texts(), TinyModelConfig()))
    engine = make_engine("hf", policy.model, tokenizer=policy.tokenizer)
    actor = PolicyActor(engine, SamplingParams(temperature=1.0, max_new_tokens=4, stop_token_ids=STOPS))
    cfg = RolloutConfig(
        group_size=1, max_turns=turns, max_new_tokens=4, max_prompt_tokens=4000,
        context={"name": name, "params": STRATEGIES[name]},
    )  # fmt: skip
    stamps: list[float] = [time.perf_counter()]
    cpu: list[float] = [time.process_time()]
    rss: dict[int, float] = {}

    def on_turn(done: int, active: int) -> None:
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())
        if done in (10, 100):
            rss[done] = _rss_mib()

    task = Task("keydoor-v0", 7, {**LAYOUT, "max_steps": turns})
    episode = collect(actor, [task], cfg, seed=0, framing=Framing(policy.tokenizer, policy.chat), on_turn=on_turn)
    ep = episode[0].episodes[0]
    return {
        "prompt_tokens": [len(t.prompt_ids) for t in ep.turns],
        "latency_ms": [1000 * (b - a) for a, b in itertools.pairwise(stamps)],
        "cpu_ms": [1000 * (b - a) for a, b in itertools.pairwise(cpu)],
        "env_turns": sum("context_edit" not in t.info for t in ep.turns),
        "edits": sum("context_edit" in t.info for t in ep.turns),
        "ended": ep.truncation_reason or ("success" if ep.success else "terminated"),
        "rss_mib": {**rss, "end": _rss_mib()},
        "peak_rss_mib": _rss_mib("VmHWM"),
    }


def _median(values: list[float], lo: int, hi: int) -> float:
    window = values[lo:hi]
    return statistics.median(window) if window else float("nan")


def row(name: str, r: dict[str, Any]) -> str:
    p, lat = r["prompt_tokens"], r["latency_ms"]
    p10, p_end = _median(p, 0, WINDOW), _median(p, -WINDOW, None)  # type: ignore[arg-type]
    l10, l_end = _median(lat, 0, WINDOW), _median(lat, -WINDOW, None)  # type: ignore[arg-type]
    rss = {str(k): v for k, v in r["rss_mib"].items()}  # JSON turned the turn numbers into strings
    return (
        f"| {name} | {r['env_turns']} + {r['edits']} | {r['ended']} | {p10:.0f} | {p_end:.0f} | {p_end / p10:.2f} | "
        f"{l10:.1f} | {l_end:.1f} | {l_end / l10:.2f} | {rss.get('100', float('nan')):.0f} | {rss['end']:.0f} | "
        f"{r['peak_rss_mib']:.0f} | {r['load']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.turns)), flush=True)
        return
    names = args.strategies.split(",")
    unknown = sorted(set(names) - set(STRATEGIES))
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    print(f"machine: {describe()}; date {dt.date.today()}; {args.turns}-turn keydoor episodes {LAYOUT}")
    results: dict[str, Any] = {}
    for name in names:
        load = wait_for_quiet()
        start = time.time()
        out = subprocess.run(
            [sys.executable, __file__, "--child", name, "--turns", str(args.turns)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
        results[name] = {**json.loads(line[7:]), "wall_s": time.time() - start, "load": load}
    print(
        "| context | env turns + edits | ended | prompt tokens early | late | ratio | latency ms early | late | ratio "
        "| RSS MiB @100 | @end | peak | other load before |\n|" + "---|" * 13
    )
    for name, r in results.items():
        print(row(name, r))
    for name, r in results.items():
        lat = r["latency_ms"]
        blocks = [statistics.median(lat[i : i + WINDOW]) for i in range(0, len(lat), WINDOW)]
        cpu = [statistics.median(r["cpu_ms"][i : i + WINDOW]) for i in range(0, len(lat), WINDOW)]
        print(f"- {name}: median latency per {WINDOW} turns (ms): " + ", ".join(f"{b:.1f}" for b in blocks))
        print(f"  {name}: median CPU time per {WINDOW} turns (ms, both threads): " + ", ".join(f"{b:.1f}" for b in cpu))
    if args.json:
        Path(args.json).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
