"""The ``clew`` command line: envs, check-env, eval, sft, train, plot, compare, export, view, models, serve,
check-template."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clew.cli_checks import (
    MODELS,
    Parser,
    UsageError,
    check_env_id,
    check_eval,
    check_model_source,
    check_policy,
    check_run,
    check_train,
    check_view,
    int_at_least,
    key_value,
    train_overrides,
)
from clew.cli_eval import (
    add_eval_args,
    aggregate_line,
    build_player,
    cmd_compare,
    eval_record,
    eval_report,
    parse_kv,
    rollout_config,
)
from clew.cli_runs import cmd_export, cmd_plot, cmd_view
from clew.cli_serve import add_serve_args, cmd_check_template, cmd_serve
from clew.paths import root_from_environment, set_cache_root
from clew.plugins import load_plugins
from clew.policy.base import engines
from clew.store.run import atomic_write_text

console = Console()


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def cmd_envs(args: argparse.Namespace) -> int:
    from clew.envs import families, registered

    table = Table("id", "entry point", "description", title="built-in envs")
    for spec in registered():
        table.add_row(spec.env_id, spec.entry_point, spec.description)
    console.print(table)
    table = Table("ids", "description", "examples", "installed", "install", title="env families (any prefix/<name>)")
    long_lines = []  # the --no-deps lines of the hubs: whole, below the table, never wrapped
    for family in families():
        installed = "yes" if family.installed else "no"
        install = f"pip install 'clew[{family.extra}]'" if not family.install else f"below ({family.prefix})"
        table.add_row(f"{family.prefix}/...", escape(family.description), ", ".join(family.ids()), installed,
                      escape(install))  # fmt: skip
        if family.install:
            long_lines.append(f"{family.prefix}: {family.install}")
    console.print(table)
    for line in long_lines:
        console.print(line, markup=False, soft_wrap=True)
    console.print("any other env: --env module:Class (a class with reset(seed) and step(action))")
    return 0


def make_env(env_id: str, env_args: Sequence[str], flag: str) -> Any:
    """Build the env, blaming ``--env-arg`` (or ``flag`` without any) for a constructor that refuses."""
    from clew.envs import make

    kwargs = parse_kv(env_args)
    try:
        return make(env_id, **kwargs)
    except (TypeError, ValueError, RuntimeError, OSError) as exc:
        blamed, given = ("--env-arg", f" with {kwargs}") if kwargs else (flag, "")
        raise UsageError(f"argument {blamed}: env {env_id}{given} cannot be built: {exc}") from None


def cmd_check_env(args: argparse.Namespace) -> int:
    from clew.envs.checker import EnvCheckError, check_env

    try:
        report = check_env(make_env(args.env_id, args.env_arg, "env_id"))
    except EnvCheckError as exc:
        console.print(f"[red]FAIL[/red] {escape(str(exc))}")
        return 1
    restores = ", snapshot restores exact" if report.snapshots else ""
    console.print(f"[green]OK[/green] {args.env_id}: {report.episodes} episodes, {report.steps} steps, replay exact"
                  f"{restores}")  # fmt: skip
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from clew.envs import Closeable
    from clew.eval import eval_tasks
    from clew.rollout import ScriptedActor

    env = make_env(args.env, args.env_arg, "--env")  # everything is checked before any model loads
    try:
        for spec in args.policy:
            if spec in ("expert", "random"):
                ScriptedActor(spec).check(env)
    except ValueError as exc:
        raise UsageError(f"argument --policy: {exc}") from None
    finally:
        if isinstance(env, Closeable):
            env.close()
    cfg = rollout_config(args)
    tasks = eval_tasks(args.env, args.episodes, args.group_size, parse_kv(args.env_arg))
    runs = []
    for spec in args.policy:
        play = build_player(args, spec, tasks, cfg)  # loads the model, once per policy
        for seed in range(args.seed, args.seed + args.seeds):
            runs.append(_eval_one(args, spec, seed, play, tasks, cfg))
    report = eval_report(args, runs)
    if report["aggregate"]:
        console.print(aggregate_line(report["aggregate"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
        console.print(f"wrote {args.json}")
    return 0


def _eval_one(args: argparse.Namespace, spec: str, seed: int, play: Any, tasks: Any, cfg: Any) -> Any:
    """One policy at one sampling seed: the summary, pass@k lines and the diagnosis; returns its record."""
    from clew.eval import at_k, diagnose, ending_shares
    from clew.eval.diagnose import EVAL_KNOBS

    with progress() as bar:
        job = bar.add_task(f"eval {spec} on {args.env} (seed {seed})", total=len(tasks) * args.group_size)
        result, groups = play(seed, lambda n: bar.update(job, completed=n))
    console.print(result.summary(), markup=False)
    metrics = at_k(groups, args.k, seed)
    if metrics:
        console.print("; ".join(m.summary() for m in metrics) + f" over {len(groups)} tasks", markup=False)
    episodes = [e for g in groups for e in g.episodes]
    budgets = cfg.model_dump(include={"max_new_tokens", "max_turns", "max_prompt_tokens"})
    line = diagnose(ending_shares(episodes), budgets, EVAL_KNOBS)
    if line:
        error = next((e.error for e in episodes if e.error), None)
        example = f" (first: {error[:200]})" if error and line.endswith(EVAL_KNOBS["error"]) else ""
        console.print(line + example, style="yellow", markup=False)
    return eval_record(spec, seed, result, metrics)


def cmd_train(args: argparse.Namespace) -> int:
    from clew.trainer import Trainer, load_config
    from clew.trainer.team import TeamTrainer

    if args.resume:
        run_dir = Path(args.resume)
        cfg = load_config(run_dir / "config.yaml", train_overrides(args))
    else:
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.out or Path("runs") / Path(args.config).stem)
    check_model_source(cfg.policy.model, "policy.model", "model", MODELS)
    if args.sft_only:
        cfg = cfg.model_copy(update={"iterations": 0, "sft": cfg.sft.model_copy(update={"enabled": True})})
    console.print(f"run directory: {run_dir}")
    with progress() as bar:
        job = bar.add_task("train", total=cfg.iterations)
        trainer = TeamTrainer if cfg.roles else Trainer  # a team: one policy per seat (roles)
        summary = trainer(cfg, run_dir, report=_reporter(bar, job)).fit(resume=bool(args.resume))
    for role, own in summary.get("roles", {"": summary}).items():
        where = run_dir / "roles" / role if role else run_dir
        console.print(f"role {role}: {where}" if role else "", markup=False, end="\n" if role else "")
        _print_summary(own)
        console.print(f"curves: {where / 'curves.png'}")
        if own.get("diagnosis"):
            console.print(own["diagnosis"], style="yellow", markup=False)
    return 0


def _reporter(bar: Progress, job: Any) -> Any:
    sft_job = None  # a second bar, added when SFT reports its first steps

    def report(kind: str, record: dict[str, float]) -> None:
        nonlocal sft_job
        if kind == "iteration":
            text = (
                f"it {record['iteration']:>3}  success {record['rollout/success_rate']:.2f}  "
                f"return {record['rollout/mean_return']:+.2f}  loss {record.get('train/loss', 0.0):+.3f}"
            )
            bar.update(job, completed=record["iteration"], description=text)
        elif kind == "eval":
            bar.console.print(
                f"eval after {record['iteration']} iterations: success {record['eval/success_rate']:.1%} "
                f"[{record['eval/success_low']:.1%}, {record['eval/success_high']:.1%}]"
            )
        elif kind == "warning":
            bar.console.print(f"warning: {record['message']}", style="yellow", markup=False)
        elif kind == "sft_step":
            if sft_job is None:
                sft_job = bar.add_task("SFT", total=record["sft/steps"])
            bar.update(sft_job, completed=record["sft/step"], description=f"SFT  loss {record['sft/loss']:.3f}")
        elif kind == "sft":
            bar.console.print(
                f"SFT: {record['sft/rows']} rows, loss {record['sft/loss_first']:.3f} -> {record['sft/loss_last']:.3f}"
            )

    return report


def _print_summary(summary: dict[str, Any]) -> None:
    first, last = summary.get("first_eval"), summary.get("last_eval")
    if not first or not last:
        return
    table = Table("policy", "held-out success", "95% interval", "mean turns", "episodes")
    for name, rec in (("before RL", first), ("after RL", last)):
        table.add_row(
            f"{name} (iteration {rec['iteration']})",
            f"{rec['eval/success_rate']:.1%}",
            f"[{rec['eval/success_low']:.1%}, {rec['eval/success_high']:.1%}]",
            f"{rec['eval/mean_turns']:.1f}",
            f"{int(rec['eval/episodes'])}",
        )
    console.print(table)


def cmd_models(args: argparse.Namespace) -> int:
    from clew.policy.models import available, cached

    table = Table(title="registered models")
    table.add_column("name", no_wrap=True)
    table.add_column("description", overflow="fold")
    table.add_column("license", no_wrap=True)
    table.add_column("cached", overflow="fold")
    for name, spec in available().items():
        path = cached(name)
        table.add_row(name, escape(spec.description), spec.license, escape(str(path)) if path else "no")
    console.print(table)
    console.print("build one: clew models get NAME [--out DIR]; use it as policy.model=NAME or --policy NAME")
    return 0


def cmd_models_get(args: argparse.Namespace) -> int:
    from clew.policy.models import MANIFEST, get_spec, materialize

    try:
        get_spec(args.name)
    except ValueError as exc:
        raise UsageError(f"argument name: {exc}") from None
    out = Path(args.out).expanduser() if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: {out} is a file; name a folder to build into")
    if out is not None and out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise UsageError(f"argument --out: {out} is a non-empty folder that clew did not write; choose another")
    print(materialize(args.name, Path(args.out) if args.out else None))  # the last line is the path, unwrapped
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="clew", description=__doc__)
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="PATH_OR_MODULE",
        help="load a plug-in (engines, contexts, estimators, objectives, envs) before the command; repeatable",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("envs", help="list registered environments").set_defaults(fn=cmd_envs)
    check = sub.add_parser("check-env", help="run the conformance checker on an env")
    check.add_argument("env_id")
    check.add_argument("--env-arg", type=key_value, action="append", default=[])
    check.set_defaults(fn=cmd_check_env, check=lambda a: check_env_id(a.env_id, "env_id"))
    ev = sub.add_parser("eval", help="evaluate a policy on held-out seeds")
    add_eval_args(ev)
    ev.set_defaults(fn=cmd_eval, check=check_eval)
    tr = sub.add_parser("train", help="SFT warm start (optional) then RL, into a run directory")
    tr.add_argument("config", nargs="?", help="YAML run config (may name a preset)")
    tr.add_argument("overrides", nargs="*", help="dotted overrides, e.g. credit.name=grpo seed=3")
    tr.add_argument("--out", help="run directory (default runs/CONFIG_STEM)")
    tr.add_argument("--resume", help="continue the run in this directory from its last checkpoint")
    tr.add_argument("--sft-only", action="store_true", help=argparse.SUPPRESS)
    tr.set_defaults(fn=cmd_train, check=check_train)
    sft = sub.add_parser("sft", help="only the SFT warm start of a config (iterations=0)")
    sft.add_argument("config")
    sft.add_argument("overrides", nargs="*")
    sft.add_argument("--out")
    sft.set_defaults(fn=cmd_train, check=check_train, resume=None, sft_only=True)
    models = sub.add_parser("models", help="list registered models; `models get NAME` builds one offline")
    models.set_defaults(fn=cmd_models)
    get = models.add_subparsers(dest="models_command").add_parser("get", help="materialise a model, print its path")
    get.add_argument("name", help="a registered model name (see `clew models`)")
    get.add_argument(
        "--out", help="folder to build into (default: $CLEW_CACHE/models/NAME, else ~/.cache/clew/models/NAME)"
    )
    get.set_defaults(fn=cmd_models_get)
    pl = sub.add_parser("plot", help="write curves.png for a run directory")
    pl.add_argument("run")
    pl.set_defaults(fn=cmd_plot, check=lambda a: check_run(a.run, "run", needs="metrics.jsonl"))
    cp = sub.add_parser("compare", help="runs grouped into methods: final IQMs, P(X > Y), curves with intervals")
    cp.add_argument("runs", nargs="+", help="run directories (the seeds of each method)")
    cp.add_argument("--by", default="credit.name", help="the config key whose value names a run's method")
    cp.add_argument("--out", default="compare.png", help="the plot to write (default: compare.png)")
    cp.add_argument("--json", help="write the methods, their curves and P(X > Y) to this JSON file")
    cp.set_defaults(fn=cmd_compare, check=lambda a: [check_run(r, "runs", needs="metrics.jsonl") for r in a.runs])
    ex = sub.add_parser("export", help="a run's policy as a model folder transformers, peft and vLLM load")
    ex.add_argument("run", help="a run directory (its latest policy) or a saved policy folder")
    ex.add_argument("--to", required=True, help="the new model folder")
    ex.add_argument("--adapter", action="store_true", help="a LoRA policy's adapter alone (default: merged)")
    ex.set_defaults(fn=cmd_export, check=lambda a: check_policy(a.run, "run"))
    vw = sub.add_parser("view", help="browse runs, groups, episodes and per-token credit in a local web UI")
    vw.add_argument("runs", nargs="*", help="run directories (with --export: the output .html file)")
    vw.add_argument("--port", type=int_at_least(0, 65535), default=8765)
    vw.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    vw.add_argument("--export", metavar="RUN_DIR", help="write one self-contained HTML file instead of serving")
    vw.add_argument("--iteration", type=int_at_least(0), help="the iteration to export")
    vw.set_defaults(fn=cmd_view, check=check_view, torch_free=True)
    sv = sub.add_parser("serve", help="an OpenAI-compatible endpoint on a model that records every call as a turn")
    add_serve_args(sv, engines())
    sv.set_defaults(fn=lambda a: cmd_serve(a, console.print), check=lambda a: check_policy(a.model, "model"))
    ct = sub.add_parser("check-template", help="check a model's chat template for multi-turn RL (exit 1 on a failure)")
    ct.add_argument("model", help="model folder or registered name")
    ct.set_defaults(
        fn=lambda a: cmd_check_template(a, console),
        check=lambda a: check_model_source(a.model, "argument model", "model", MODELS),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; a bad argument is one line on stderr and exit code 2 (3: a model or engine failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    set_cache_root(root_from_environment(os.environ))  # the one place clew reads environment variables
    try:
        load_plugins(plugin_args(argv))  # before the parser: its choices and listings include the plug-ins
    except ValueError as exc:
        return fail("clew", exc, 2)
    args = build_parser().parse_args(argv)
    prog = " ".join(["clew", args.command, *([args.models_command] if getattr(args, "models_command", None) else [])])
    engine_errors: tuple[type[Exception], ...] = ()
    try:
        getattr(args, "check", lambda a: None)(args)  # files, folders, ids, values: before torch or a model loads
        if not getattr(args, "torch_free", False):  # importing clew.policy (for EngineError) imports torch
            from clew.policy.base import EngineError

            engine_errors = (EngineError,)
        return int(args.fn(args))
    except (UsageError, ValueError) as exc:  # bad arguments and invalid configs: a clear message, no traceback
        return fail(prog, exc, 2)
    except engine_errors as exc:  # engine not installed, model that does not load, failed sync or rollout
        return fail(prog, exc, 3)


def plugin_args(argv: Sequence[str]) -> list[str]:
    """The values of ``--plugin X`` / ``--plugin=X`` before the command (read ahead of the parser)."""
    names, rest = [], iter(argv)
    for arg in rest:
        if arg == "--plugin":
            names.append(next(rest, ""))
        elif arg.startswith("--plugin="):
            names.append(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            break  # the command: later arguments are its own
    return names


def fail(prog: str, exc: Exception, code: int) -> int:
    """Print ``clew train: error: ...`` on stderr as one line (an indented list joins as ``a: b; c``)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    for line in lines[1:]:
        message += (" " if message.endswith(":") else "; ") + line
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
