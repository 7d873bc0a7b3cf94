"""The ``clew`` command line: envs, check-env, eval, sft, train, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def parse_kv(items: Sequence[str]) -> dict[str, Any]:
    """``["width=8", "layout=corners"]`` -> ``{"width": 8, "layout": "corners"}`` (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def cmd_envs(args: argparse.Namespace) -> int:
    from clew.envs import registered

    table = Table("id", "entry point", "description")
    for spec in registered():
        table.add_row(spec.env_id, spec.entry_point, spec.description)
    console.print(table)
    return 0


def cmd_check_env(args: argparse.Namespace) -> int:
    from clew.envs import make
    from clew.envs.checker import EnvCheckError, check_env

    try:
        report = check_env(make(args.env_id, **parse_kv(args.env_arg)))
    except EnvCheckError as exc:
        console.print(f"[red]FAIL[/red] {exc}")
        return 1
    console.print(f"[green]OK[/green] {args.env_id}: {report.episodes} episodes, {report.steps} steps, replay exact")
    return 0


def build_actor(spec: str, temperature: float, max_new_tokens: int) -> tuple[Any, Any]:
    """``expert`` / ``random`` (scripted) or a model path/name -> (actor, framing)."""
    from clew.policy import HFPolicy, SamplingParams
    from clew.rollout import Framing, PolicyActor, ScriptedActor

    if spec in ("expert", "random"):
        return ScriptedActor(spec), None
    policy = HFPolicy.from_pretrained(_model_dir(spec))
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
    return PolicyActor(policy, params), Framing(policy.tokenizer, policy.chat)


def _model_dir(spec: str) -> str:
    """A run directory resolves to its latest policy weights; anything else is passed to HF."""
    from clew.store.run import latest_policy_dir

    path = Path(spec)
    if path.is_dir() and not (path / "config.json").exists():
        found = latest_policy_dir(path)
        if found is None:
            raise SystemExit(f"{spec} has no config.json and no saved policy")
        return str(found)
    return spec


def cmd_eval(args: argparse.Namespace) -> int:
    from clew.eval import eval_tasks, evaluate
    from clew.rollout import RolloutConfig

    actor, framing = build_actor(args.policy, args.temperature, args.max_new_tokens)
    tasks = eval_tasks(args.env, args.episodes, args.group_size, parse_kv(args.env_arg))
    cfg = RolloutConfig(
        group_size=args.group_size,
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        context=args.context,
        window_turns=args.window_turns,
    )
    with progress() as bar:
        job = bar.add_task(f"eval {args.policy} on {args.env}", total=len(tasks) * args.group_size)
        result, _ = evaluate(actor, tasks, cfg, args.seed, framing, on_progress=lambda n: bar.update(job, completed=n))
    console.print(result.summary())
    return 0


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="registered env id or module:Class")
    p.add_argument("--env-arg", action="append", default=[], help="env kwarg as key=value (repeatable)")
    p.add_argument("--policy", default="expert", help="expert | random | model path/name | run dir")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--group-size", type=int, default=1)
    p.add_argument("--max-turns", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--context", default="window", choices=["full", "window"])
    p.add_argument("--window-turns", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clew", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("envs", help="list registered environments").set_defaults(fn=cmd_envs)
    check = sub.add_parser("check-env", help="run the conformance checker on an env")
    check.add_argument("env_id")
    check.add_argument("--env-arg", action="append", default=[])
    check.set_defaults(fn=cmd_check_env)
    ev = sub.add_parser("eval", help="evaluate a policy on held-out seeds")
    add_eval_args(ev)
    ev.set_defaults(fn=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
