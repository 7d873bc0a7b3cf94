"""The ``clew`` command line: envs, check-env, eval, sft, train, plot, view, models."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
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
    from clew.envs import families, registered

    table = Table("id", "entry point", "description", title="built-in envs")
    for spec in registered():
        table.add_row(spec.env_id, spec.entry_point, spec.description)
    console.print(table)
    table = Table("ids", "description", "examples", "installed", "install", title="env families (any prefix/<name>)")
    for family in families():
        installed = "yes" if family.installed else "no"
        install = escape(f"pip install 'clew[{family.extra}]'")  # not rich markup
        table.add_row(f"{family.prefix}/...", escape(family.description), ", ".join(family.ids()), installed, install)
    console.print(table)
    console.print("any other env: --env module:Class (a class with reset(seed) and step(action))")
    return 0


def cmd_check_env(args: argparse.Namespace) -> int:
    from clew.envs import make
    from clew.envs.checker import EnvCheckError, check_env

    try:
        report = check_env(make(args.env_id, **parse_kv(args.env_arg)))
    except EnvCheckError as exc:
        console.print(f"[red]FAIL[/red] {escape(str(exc))}")
        return 1
    console.print(f"[green]OK[/green] {args.env_id}: {report.episodes} episodes, {report.steps} steps, replay exact")
    return 0


def build_actor(spec: str, temperature: float, max_new_tokens: int, engine: str = "hf") -> tuple[Any, Any]:
    """``expert`` / ``random`` (scripted) or a model path/name sampled by ``engine`` -> (actor, framing)."""
    from clew.policy import HFPolicy, SamplingParams, make_engine
    from clew.rollout import Framing, PolicyActor, ScriptedActor

    if spec in ("expert", "random"):
        return ScriptedActor(spec), None
    path = _model_dir(spec)
    policy = HFPolicy.from_pretrained(path)  # a LoRA checkpoint loads its base with the adapter (peft)
    if engine != "hf" and (Path(path) / "adapter_config.json").exists():
        path = _merged_copy(policy, path)
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
    sampler = (
        make_engine("hf", policy.model, tokenizer=policy.tokenizer) if engine == "hf" else make_engine(engine, path)
    )
    return PolicyActor(sampler, params), Framing(policy.tokenizer, policy.chat)


def _merged_copy(policy: Any, adapter_dir: str) -> str:
    """A LoRA checkpoint merged into its base in a temporary folder, for engines that load plain weights."""
    import json
    import tempfile

    from clew.policy import HFPolicy
    from clew.policy.lora import merged_weights

    base_dir = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = HFPolicy.from_pretrained(base_dir)
    base.model.load_state_dict(dict(merged_weights(policy.model)))  # load_state_dict copies
    folder = tempfile.mkdtemp(prefix="clew-merged-")
    base.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    return folder


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
    from clew.envs import Closeable, make
    from clew.eval import diagnose, ending_shares, eval_tasks, evaluate
    from clew.eval.diagnose import EVAL_KNOBS
    from clew.rollout import RolloutConfig, ScriptedActor

    env_kwargs = parse_kv(args.env_arg)
    try:  # an unknown id or an env that cannot be built fails here, before any model loads
        env = make(args.env, **env_kwargs)
    except (TypeError, RuntimeError, OSError) as exc:
        raise ValueError(f"env {args.env} with {env_kwargs} cannot be built: {exc}") from exc
    if args.policy in ("expert", "random"):
        ScriptedActor(args.policy).check(env)
    if isinstance(env, Closeable):
        env.close()
    actor, framing = build_actor(args.policy, args.temperature, args.max_new_tokens, args.engine)
    tasks = eval_tasks(args.env, args.episodes, args.group_size, env_kwargs)
    cfg = RolloutConfig(
        group_size=args.group_size,
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        context={"name": args.context, "params": context_params(args)},
    )
    with progress() as bar:
        job = bar.add_task(f"eval {args.policy} on {args.env}", total=len(tasks) * args.group_size)
        result, groups = evaluate(
            actor, tasks, cfg, args.seed, framing, on_progress=lambda n: bar.update(job, completed=n)
        )
    console.print(result.summary())
    episodes = [e for g in groups for e in g.episodes]
    budgets = cfg.model_dump(include={"max_new_tokens", "max_turns", "max_prompt_tokens"})
    line = diagnose(ending_shares(episodes), budgets, EVAL_KNOBS)
    if line:
        error = next((e.error for e in episodes if e.error), None)
        example = f" (first: {error[:200]})" if error and line.endswith(EVAL_KNOBS["error"]) else ""
        console.print(line + example, style="yellow", markup=False)
    return 0


def context_params(args: argparse.Namespace) -> dict[str, Any]:
    params = parse_kv(args.context_param)
    if args.window_turns is not None:
        params["turns"] = args.window_turns
    return params


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="registered env id or module:Class")
    p.add_argument("--env-arg", action="append", default=[], help="env kwarg as key=value (repeatable)")
    p.add_argument("--policy", default="expert", help="expert | random | model path/name | run dir")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--group-size", type=int, default=1)
    p.add_argument("--max-turns", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--context", default="window", help="context strategy: full | window | summary | memory | markovian")
    p.add_argument("--context-param", action="append", default=[], help="strategy parameter key=value (repeatable)")
    p.add_argument("--window-turns", type=int, default=None, help="shorthand for --context-param turns=N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="rollout engine for a model policy")


def cmd_train(args: argparse.Namespace) -> int:
    from clew.trainer import Trainer, load_config
    from clew.viz.plots import plot_run

    if args.resume:
        run_dir = Path(args.resume)
        extra = [args.config] if args.config else []  # with --resume every positional is an override
        cfg = load_config(run_dir / "config.yaml", [*extra, *args.overrides])
    else:
        if not args.config:
            raise SystemExit("clew train needs a CONFIG (or --resume RUN)")
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.out or Path("runs") / Path(args.config).stem)
    if args.sft_only:
        cfg = cfg.model_copy(update={"iterations": 0, "sft": cfg.sft.model_copy(update={"enabled": True})})
    console.print(f"run directory: {run_dir}")
    with progress() as bar:
        job = bar.add_task("train", total=cfg.iterations)
        summary = Trainer(cfg, run_dir, report=_reporter(bar, job)).fit(resume=bool(args.resume))
    _print_summary(summary)
    console.print(f"curves: {plot_run(run_dir)}")
    if summary.get("diagnosis"):
        console.print(summary["diagnosis"], style="yellow", markup=False)
    return 0


def _reporter(bar: Progress, job: Any) -> Any:
    def report(kind: str, record: dict[str, float]) -> None:
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
    from clew.policy.models import materialize

    print(materialize(args.name, Path(args.out) if args.out else None))  # the last line is the path, unwrapped
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from clew.viz.plots import plot_run

    console.print(str(plot_run(Path(args.run))))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """Serve the browser view of run directories, or export one iteration as a single HTML file (torch-free)."""
    if args.export:
        from clew.viz.export import export_html

        if args.iteration is None or len(args.runs) != 1:
            raise ValueError("clew view --export RUN_DIR --iteration N OUT.html")
        console.print(str(export_html(Path(args.export), args.iteration, Path(args.runs[0]))))
        return 0
    from clew.viz.server import serve

    if not args.runs:
        raise ValueError("clew view needs at least one RUN_DIR")
    serve([Path(r) for r in args.runs], args.host, args.port)
    return 0


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
    tr = sub.add_parser("train", help="SFT warm start (optional) then RL, into a run directory")
    tr.add_argument("config", nargs="?", help="YAML run config (may name a preset)")
    tr.add_argument("overrides", nargs="*", help="dotted overrides, e.g. credit.name=grpo seed=3")
    tr.add_argument("--out", help="run directory (default runs/CONFIG_STEM)")
    tr.add_argument("--resume", help="continue the run in this directory from its last checkpoint")
    tr.add_argument("--sft-only", action="store_true", help=argparse.SUPPRESS)
    tr.set_defaults(fn=cmd_train)
    sft = sub.add_parser("sft", help="only the SFT warm start of a config (iterations=0)")
    sft.add_argument("config")
    sft.add_argument("overrides", nargs="*")
    sft.add_argument("--out")
    sft.set_defaults(fn=cmd_train, resume=None, sft_only=True)
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
    pl.set_defaults(fn=cmd_plot)
    vw = sub.add_parser("view", help="browse runs, groups, episodes and per-token credit in a local web UI")
    vw.add_argument("runs", nargs="*", help="run directories (with --export: the output .html file)")
    vw.add_argument("--port", type=int, default=8765)
    vw.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    vw.add_argument("--export", metavar="RUN_DIR", help="write one self-contained HTML file instead of serving")
    vw.add_argument("--iteration", type=int, help="the iteration to export")
    vw.set_defaults(fn=cmd_view, torch_free=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "torch_free", False):  # importing clew.policy (for EngineError) would import torch
        try:
            return int(args.fn(args))
        except ValueError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            return 2
    from clew.policy.base import EngineError

    try:
        return int(args.fn(args))
    except ValueError as exc:  # invalid configs and arguments: a clear message, no traceback
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    except EngineError as exc:  # engine not installed, model that does not load, failed sync or rollout
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 3


if __name__ == "__main__":
    sys.exit(main())
