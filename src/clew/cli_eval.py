"""What ``clew eval`` builds from its arguments: the actor (scripted, or a model on a named engine), the
rollout config, ``key=value`` parameters. Torch loads only inside ``build_actor``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from clew.cli_checks import UsageError, int_at_least, is_model_folder, key_value, non_negative_float
from clew.policy.base import engines
from clew.rollout.context import CONTEXTS


def parse_kv(items: Sequence[str]) -> dict[str, Any]:
    """``["width=8", "layout=corners"]`` -> ``{"width": 8, "layout": "corners"}`` (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def build_actor(spec: str, temperature: float, max_new_tokens: int, engine: str = "hf") -> tuple[Any, Any]:
    """``expert`` / ``random`` (scripted) or a model path/name sampled by ``engine`` -> (actor, framing)."""
    from clew.policy import SamplingParams
    from clew.rollout import Framing, PolicyActor, ScriptedActor

    if spec in ("expert", "random"):
        return ScriptedActor(spec), None
    sampler, policy = build_engine(spec, engine)
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
    return PolicyActor(sampler, params), Framing(policy.tokenizer, policy.chat)


def build_player(args: argparse.Namespace, spec: str, tasks: Any, cfg: Any) -> Any:
    """``(seed, on_progress) -> (EvalResult, groups)`` for ``spec``: an ``openai:URL`` endpoint plays through chat
    messages (``clew.eval.api``), anything else through ``collect`` with its actor."""
    from clew.eval import evaluate
    from clew.eval.api import PREFIX, evaluate_text, parse_policy

    if spec.startswith(PREFIX):
        api = parse_policy(spec, args.model, args.temperature, args.max_new_tokens)
        return lambda seed, report: evaluate_text(
            api, tasks, args.group_size, args.max_turns, seed, args.concurrency, on_progress=report
        )
    actor, framing = build_actor(spec, args.temperature, args.max_new_tokens, args.engine)
    return lambda seed, report: evaluate(actor, tasks, cfg, seed, framing, on_progress=report)


def build_engine(spec: str, engine: str = "hf") -> tuple[Any, Any]:
    """The model ``spec`` (a path, a run directory or a registered name) on ``engine`` -> (engine, policy)."""
    from clew.policy import HFPolicy, engine_spec, make_engine

    path = _model_dir(spec)
    policy = HFPolicy.from_pretrained(path)  # a LoRA checkpoint loads its base with the adapter (peft)
    in_process = engine_spec(engine).shares_learner_weights
    if not in_process and (Path(path) / "adapter_config.json").exists():
        path = _merged_copy(policy, path)
    sampler = make_engine(engine, policy.model, tokenizer=policy.tokenizer) if in_process else make_engine(engine, path)
    return sampler, policy


def _merged_copy(policy: Any, adapter_dir: str) -> str:
    """A LoRA checkpoint merged into its base in a temporary folder, for engines that load plain weights."""
    import json
    import tempfile

    from clew.trainer.export import merged_model

    base_dir = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["base_model_name_or_path"]
    folder = tempfile.mkdtemp(prefix="clew-merged-")
    merged_model(policy.model, base_dir).save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    return folder


def _model_dir(spec: str) -> str:
    """A run directory resolves to its latest policy weights; anything else is passed to HF."""
    from clew.store.run import latest_policy_dir

    path = Path(spec)
    if path.is_dir() and not is_model_folder(path):
        found = latest_policy_dir(path)
        if found is None:
            raise UsageError(f"argument --policy: {spec} has no config.json and no saved policy")
        return str(found)
    return spec


def rollout_config(args: argparse.Namespace) -> Any:
    """The eval's ``RolloutConfig``; a context it refuses is named by its flag."""
    from pydantic import ValidationError

    from clew.rollout import RolloutConfig

    try:
        return RolloutConfig(
            group_size=args.group_size,
            max_turns=args.max_turns,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            context={"name": args.context, "params": context_params(args)},
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "context"
        flag = f"--{field.replace('_', '-')}"
        if field == "context" and (args.context_param or args.window_turns is not None):
            flag = "--context-param"
        raise UsageError(f"argument {flag}: {str(error['msg']).removeprefix('Value error, ')}") from None


def context_params(args: argparse.Namespace) -> dict[str, Any]:
    params = parse_kv(args.context_param)
    if args.window_turns is not None:
        params["turns"] = args.window_turns
    return params


# --- results of `clew eval`: one record per (policy, seed), an aggregate over them ------------------------------


def eval_record(spec: str, seed: int, result: Any, metrics: Sequence[Any]) -> dict[str, Any]:
    """One evaluation run as JSON: the policy, its sampling seed, the summary metrics and pass@k & co."""
    at_k = {
        m.name: {"value": m.value, "low": _finite(m.low), "high": _finite(m.high), "tasks": m.tasks} for m in metrics
    }
    return {"policy": spec, "seed": seed, **result.as_dict(), "at_k": at_k}


def _finite(value: float) -> float | None:
    """NaN (no interval from one task) as JSON's null: strict parsers refuse NaN."""
    return None if value != value else value


def eval_report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every run and, with more than one, the aggregate of their success rates (``aggregate_runs``)."""
    settings = {"env": args.env, "env_args": parse_kv(args.env_arg), "episodes": args.episodes,
                "group_size": args.group_size, "temperature": args.temperature, "k": list(args.k)}  # fmt: skip
    return {"settings": settings, "runs": runs, "aggregate": aggregate_runs(runs) if len(runs) > 1 else None}


def aggregate_runs(runs: Sequence[dict[str, Any]], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Success over runs (policies x sampling seeds, each run one score): mean and interquartile mean with 95 %
    bootstrap intervals over runs, as rliable reports them (Agarwal et al., arXiv 2108.13264; one env is one
    stratum, so the stratified bootstrap resamples the runs)."""
    import numpy as np

    from clew.eval import iqm, stratified_bootstrap

    scores = [float(r["success_rate"]) for r in runs]
    mean = lambda a: float(np.mean(a))  # noqa: E731
    return {
        "runs": len(scores), "scores": scores,
        "mean": mean(scores), "mean_interval": list(stratified_bootstrap([scores], mean, resamples, seed=seed)),
        "iqm": iqm(np.array(scores)), "iqm_interval": list(stratified_bootstrap([scores], iqm, resamples, seed=seed)),
    }  # fmt: skip


def aggregate_line(agg: dict[str, Any]) -> str:
    (lo, hi), (ilo, ihi) = agg["mean_interval"], agg["iqm_interval"]
    return (
        f"over {agg['runs']} runs: mean success {agg['mean']:.1%} [{lo:.1%}, {hi:.1%}], "
        f"IQM {agg['iqm']:.1%} [{ilo:.1%}, {ihi:.1%}] (95 % bootstrap over runs)"
    )


# --- `clew compare` --------------------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    """Group runs into methods by a config key; print final IQMs and P(X > Y); plot curves; optionally JSON."""
    import json

    from rich.console import Console

    from clew.eval.compare import improvements, load_run, summarise
    from clew.eval.plots import plot_comparison
    from clew.store.run import atomic_write_text

    console = Console()
    methods = summarise([load_run(Path(path), args.by) for path in args.runs])
    console.print(_methods_table(methods, args.by))
    pairs = improvements(methods)
    for pair in pairs:
        low, high = pair["interval"]
        console.print(f"P({pair['x']} > {pair['y']}) = {pair['p']:.2f} [{low:.2f}, {high:.2f}]", markup=False)
    out = Path(args.out)
    console.print(f"wrote {plot_comparison(methods, out)}", markup=False)
    if args.json:
        report = {"by": args.by, "methods": [_method_json(m) for m in methods], "improvements": pairs}
        atomic_write_text(Path(args.json), json.dumps(report, indent=2))
        console.print(f"wrote {args.json}", markup=False)
    return 0


def _methods_table(methods: Sequence[Any], by: str) -> Any:
    from rich.table import Table

    table = Table(title=f"runs grouped by {by}: final held-out success (95 % bootstrap over runs)")
    for column in (by, "runs", "IQM", "mean", "training success at the last shared env step"):
        table.add_column(column)
    for m in methods:
        cells = [_with_interval(m.final, key) for key in ("iqm", "mean")]
        last = f"{m.curve[-1]:.1%} at {m.grid[-1]:,.0f}" if m.curve else "-"
        table.add_row(m.name, str(len(m.runs)), *cells, last)
    return table


def _with_interval(final: dict[str, Any], key: str) -> str:
    if not final["runs"]:
        return "-"
    low, high = final[f"{key}_interval"]
    return f"{final[key]:.1%} [{low:.1%}, {high:.1%}]"


def _method_json(m: Any) -> dict[str, Any]:
    curve = {"env_steps": m.grid, "success_mean": m.curve, "band": [list(b) for b in m.band]}
    return {"name": m.name, "runs": [str(r.path) for r in m.runs], "final": m.final, "curve": curve}


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="registered env id or module:Class")
    p.add_argument("--env-arg", type=key_value, action="append", default=[], help="env kwarg as key=value (repeatable)")
    p.add_argument(
        "--policy",
        action="append",
        help="expert | random | model path/name | run dir | openai:URL (repeatable: runs of one method)",
    )
    p.add_argument("--seeds", type=int_at_least(1), default=1, help="sampling seeds per policy: --seed, --seed+1, ...")
    p.add_argument("--model", help="the model an openai:URL policy names in its requests")
    p.add_argument("--concurrency", type=int_at_least(1), default=8, help="episodes in flight for an openai:URL policy")
    p.add_argument("--k", type=int_at_least(1), nargs="+", default=[], help="pass@k, mean@k, maj@k (k <= --group-size)")
    p.add_argument("--json", type=Path, help="write every result and the aggregate over runs to this JSON file")
    p.add_argument("--episodes", type=int_at_least(1), default=100)
    p.add_argument("--group-size", type=int_at_least(1), default=1)
    p.add_argument("--max-turns", type=int_at_least(1), default=64)
    p.add_argument("--max-new-tokens", type=int_at_least(1), default=16)
    p.add_argument("--temperature", type=non_negative_float, default=1.0)
    p.add_argument("--context", default="window", help=f"context strategy: {' | '.join(CONTEXTS.available())}")
    p.add_argument(
        "--context-param", type=key_value, action="append", default=[], help="strategy parameter key=value (repeatable)"
    )
    p.add_argument("--window-turns", type=int_at_least(0), default=None, help="shorthand for --context-param turns=N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", default="hf", choices=engines(), help="rollout engine for a model policy")
