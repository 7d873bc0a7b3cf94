"""Multi-hop search (issue 30): does RL lift 2-hop success, and which context carries what earlier turns found?

Usage: python benchmarks/search_study.py [--contexts window summary memory] [--seeds N] [--start SFT_DIR]
       [--out DIR] [--report-only]

``configs/search-2hop.yaml`` (2-hop questions over a generated 1,000-document corpus; ``search: q``, ``open: id``,
``answer: text``; exact match) trained once per context and seed: SFT on the scripted searcher (its demos rendered
in that context's prompts), then 40 GRPO iterations of 16 questions x 8; held-out success (256 questions on eval
seeds no training task uses, temperature 1) before RL (after SFT) and after, with Wilson 95 % intervals. Each step
of the expert's path needs only the current observation (the question, the hits, the person's document naming the
city, the city's document naming the country): a one-exchange window loses nothing the expert uses, so this
measures what a context costs, not what it adds (``env.kwargs.ask=either``, where the question itself falls out of
the window, is the task where it would add).

- ``window``: the last exchange and the current observation (``turns: 1``, the config's own);
- ``summary``: the policy writes a summary every 2 env turns that replaces the history (learned by RL alone: the
  expert's demos carry empty summaries);
- ``memory``: ``<memory>...</memory>`` blocks in actions keep a note beside the last exchange (also RL alone).

``--start SFT_DIR`` skips each run's own SFT and starts every context from that policy (``policy.model=SFT_DIR
sft.enabled=false``; a run's ``sft/policy``): one warm start shared by the arms, rendered in the window's prompts,
so the other contexts meet their own prompt layout first in RL (their before-RL evaluation shows what that costs).

Runs are cached by their overrides (``benchmarks/study.py``); ``--report-only`` reports what finished. Writes
``DIR/search.json`` and ``DIR/search.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from clew.store.run import atomic_write_text, read_jsonl
from machine import describe
from study import finished, study_key, train_run

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "search-2hop.yaml"
EPISODES = 256
CONTEXTS = {
    "window": "rollout.context={name: window, params: {turns: 1}}",
    "summary": "rollout.context={name: summary, params: {every: 2}}",
    "memory": "rollout.context={name: memory, params: {turns: 1}}",
}


def overrides(context: str, seed: int, start: Path | None = None) -> list[str]:
    shared = [f"policy.model={start}", "sft.enabled=false"] if start else []
    return [CONTEXTS[context], f"seed={seed}", "eval.every=0", "eval.at_start=true", f"eval.episodes={EPISODES}",
            "checkpoint_every=1000", *shared]  # fmt: skip


def evals(run: Path) -> list[dict[str, Any]]:
    """The run's held-out evaluations: before RL (iteration 0) and after."""
    return [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "eval"]


def cell(record: dict[str, Any]) -> str:
    return f"{record['eval/success_rate']:.1%} [{record['eval/success_low']:.1%}, {record['eval/success_high']:.1%}]"


def report(out: Path, contexts: list[str], seeds: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for context in contexts:
        for seed in range(seeds):
            run = out / f"{context}-s{seed}"
            if study_key(run):
                before, after = evals(run)[0], evals(run)[-1]
                rows.append({"context": context, "seed": seed, "before": before, "after": after,
                             "lift": after["eval/success_low"] > before["eval/success_high"]})  # fmt: skip
    lines = ["| context | seed | before RL (after SFT) | after RL | mean turns after | separated |", "|---" * 6 + "|"]
    for r in rows:
        turns = r["after"]["eval/mean_turns"]
        lines.append(f"| {r['context']} | {r['seed']} | {cell(r['before'])} | {cell(r['after'])} | {turns:.1f} | "
                     f"{'yes' if r['lift'] else 'no'} |")  # fmt: skip
    result = {"machine": describe(), "config": CONFIG.name, "episodes": EPISODES, "rows": rows}
    atomic_write_text(out / "search.json", json.dumps(result, indent=1))
    atomic_write_text(out / "search.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", nargs="+", default=list(CONTEXTS), choices=list(CONTEXTS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--start", type=Path, help="a policy every context starts from (no SFT of its own)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        for seed in range(args.seeds):
            for context in args.contexts:
                run = args.out / f"{context}-s{seed}"
                given = overrides(context, seed, args.start)
                if not finished(run, given):
                    train_run(run, given, args.threads, CONFIG)
    report(args.out, args.contexts, args.seeds)


if __name__ == "__main__":
    main()
