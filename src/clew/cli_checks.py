"""The command line's argument checks: each bad input is a ``UsageError`` naming its argument (exit 2).

Everything here runs before torch is imported or a model is loaded, so ``clew eval --policy /typo``
answers at once, and with no Hugging Face lookup.
"""

from __future__ import annotations

import argparse
import errno
import math
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import yaml

RUN_FILES = ("config.yaml", "metrics.jsonl", "trajectories")  # a run directory holds at least one
_HF_ID = re.compile(r"(?:\w(?:[\w.-]*\w)?/)?\w(?:[\w.-]*\w)?")  # what the Hub accepts as a repo id
POLICIES = "expert, random, a model folder, a run directory, a registered model name or a Hugging Face id"
MODELS = "tiny, a registered model name (clew models), a model folder or a Hugging Face id"


class UsageError(Exception):
    """A bad command-line argument: one line on stderr and exit code 2, never a traceback."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``clew eval: error: argument --episodes: ...`` (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` (to ``high``)."""
    allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value

    return parse


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def key_value(text: str) -> str:
    """An argparse type: ``key=value`` with a YAML value (parsed later by ``parse_kv``)."""
    problem = kv_problem(text, "key=value")
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def kv_problem(text: str, form: str) -> str | None:
    """Why ``text`` is not ``form`` (``key=value``) with a YAML value, or None."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        return f"expected {form}, got {text!r}"
    try:
        yaml.safe_load(value)
    except yaml.YAMLError as exc:
        return f"the value of {text!r} is not valid YAML: {yaml_problem(exc)}"
    return None


def yaml_problem(exc: Exception) -> str:
    """The first line of a YAML (or decoding) error, with its line and column."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else str(problem)


def check_env_id(env_id: str, flag: str) -> None:
    """An unknown id, a family whose package is missing or a ``module:Class`` that does not import."""
    from clew.envs.registry import resolve

    try:
        resolve(env_id)
    except ValueError as exc:
        raise UsageError(f"argument {flag}: {exc}") from None


def check_eval(args: argparse.Namespace) -> None:
    check_env_id(args.env, "--env")
    args.policy = args.policy or ["expert"]
    for spec in args.policy:
        if spec.startswith("openai:"):
            _check_api(spec, args)
        else:
            check_policy(spec)
    too_big = [k for k in args.k if k > args.group_size]
    if too_big:
        raise UsageError(
            f"argument --k: {too_big[0]} is more than --group-size {args.group_size}: pass@k, mean@k and maj@k "
            "are estimated from the group's samples of each task, so --group-size must be at least the largest k"
        )


def _check_api(spec: str, args: argparse.Namespace) -> None:
    from clew.eval.api import parse_policy

    try:
        parse_policy(spec, args.model, args.temperature, args.max_new_tokens)
    except ValueError as exc:
        raise UsageError(f"argument --policy: {exc}") from None


def check_policy(spec: str, flag: str = "--policy") -> None:
    """``--policy``: a scripted actor, a run with a saved policy, a model folder or a model name."""
    from clew.store.run import latest_policy_dir

    if spec in ("expert", "random") and flag == "--policy":
        return
    check_model_source(spec, f"argument {flag}", "run or model", POLICIES if flag == "--policy" else MODELS)
    path = Path(spec)
    if path.is_dir() and not is_model_folder(path) and latest_policy_dir(path) is None:
        if (path / "config.yaml").is_file():
            raise UsageError(f"argument {flag}: run {spec} has no saved policy yet (no checkpoint, no sft/policy)")
        raise UsageError(f"argument {flag}: {spec} is neither a model folder (no config.json) nor a run directory")


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def check_model_source(spec: str, flag: str, what: str, allowed: str) -> None:
    """A path that does not exist fails here, before the Hub is asked about it (or torch imported).

    Anything the Hub would refuse as a repo id is a path; so is ``a/b`` when folder ``a`` exists here.
    """
    path = Path(spec)
    if path.is_file():
        raise UsageError(f"{flag}: {spec} is a file; expected {allowed}")
    if path.exists():
        return
    hub_id = _HF_ID.fullmatch(spec) and len(spec) <= 96 and "--" not in spec and ".." not in spec
    if not hub_id or (path.parent != Path(".") and path.parent.is_dir()):
        raise UsageError(f"{flag}: no such {what}: {spec} (expected {allowed})")


def check_train(args: argparse.Namespace) -> None:
    """``clew train`` / ``clew sft``: the config file, ``--resume``, ``--out`` and the overrides' syntax."""
    if args.resume:
        check_run(args.resume, "--resume", needs="config.yaml")
        if args.config and "=" not in args.config:
            raise UsageError(
                f"argument config: --resume continues with the run's own config.yaml; drop {args.config} "
                "(only dotted overrides may follow)"
            )
        if args.out:
            raise UsageError(f"argument --out: not allowed with --resume; the run continues in {args.resume}")
    elif not args.config:
        raise UsageError("the following arguments are required: config (a YAML run config), or --resume RUN_DIR")
    else:
        check_config_file(args.config)
        out = Path(args.out or Path("runs") / Path(args.config).stem)
        if out.exists() and not out.is_dir():
            raise UsageError(f"argument --out: {out} is a file, not a run directory")
    for item in train_overrides(args):
        problem = kv_problem(item, "dotted.key=value")
        if problem:
            raise UsageError(f"argument overrides: {problem}")


def train_overrides(args: argparse.Namespace) -> list[str]:
    """With ``--resume`` every positional is an override (the run's own config.yaml is the config)."""
    return [*([args.config] if args.resume and args.config else []), *args.overrides]


def check_config_file(text: str) -> None:
    """A YAML file holding a mapping (``seed: 0``, ``rollout: {...}``)."""
    path = Path(text)
    if path.is_dir():
        hint = f"; continue that run with --resume {text}" if (path / "config.yaml").is_file() else ""
        raise UsageError(f"argument config: {text} is a directory, not a YAML run config{hint}")
    if not path.is_file():
        hint = " (the config comes first, overrides after it)" if "=" in text else ""
        if Path(f"{text}.yaml").is_file():
            hint = f"; did you mean {text}.yaml?"
        raise UsageError(f"argument config: no such file: {text}{hint}")
    try:
        tree = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"argument config: {text} is not valid YAML: {yaml_problem(exc)}") from None
    if tree is not None and not isinstance(tree, dict):
        kind = type(tree).__name__
        raise UsageError(f"argument config: {text} must be a YAML mapping (seed: 0, rollout: ...), not a {kind}")


def check_run(text: str, flag: str, needs: str | None = None) -> Path:
    """A run directory: it holds ``needs`` (else any of ``RUN_FILES``); names the runs inside a parent folder."""
    path = Path(text)
    if not path.exists():
        raise UsageError(f"argument {flag}: no such run directory: {text}")
    if not path.is_dir():
        raise UsageError(f"argument {flag}: {text} is a file, not a run directory")
    wanted = (needs,) if needs else RUN_FILES
    if not any((path / name).exists() for name in wanted):
        inner = [p.name for p in sorted(path.iterdir()) if p.is_dir() and any((p / n).exists() for n in RUN_FILES)]
        hint = f"; runs inside it: {', '.join(inner[:5])}" if inner else ""
        raise UsageError(f"argument {flag}: {text} is not a run directory (no {' or '.join(wanted)}){hint}")
    return path


def check_view(args: argparse.Namespace) -> None:
    """``--export RUN_DIR --iteration N OUT.html``, or run directories and an address to listen on."""
    from clew.viz.runs import iteration_files

    if args.export:
        usage = "(clew view --export RUN_DIR --iteration N OUT.html)"
        if args.iteration is None:
            raise UsageError(f"argument --iteration: required with --export {usage}")
        if len(args.runs) != 1:
            raise UsageError(f"argument --export: expected one OUT.html, got {len(args.runs)} paths {usage}")
        found = sorted(iteration_files(check_run(args.export, "--export")))
        if args.iteration not in found:
            shown = ", ".join(map(str, found)) if len(found) <= 6 else f"{found[0]} to {found[-1]} ({len(found)})"
            roles = Path(args.export, "roles")
            team = f" (a team run: export a role, {roles}/<role>)" if roles.is_dir() else ""
            have = f"iterations {shown}" if found else f"no trajectories at all{team}"
            raise UsageError(f"argument --iteration: {args.export} has no iteration {args.iteration}; it has {have}")
        if Path(args.runs[0]).is_dir():
            raise UsageError(f"argument runs: {args.runs[0]} is a folder; name the .html file to write")
        return
    if args.iteration is not None:
        raise UsageError("argument --iteration: only with --export RUN_DIR")
    if not args.runs:
        raise UsageError("the following arguments are required: runs (one or more run directories)")
    for run in args.runs:
        check_run(run, "runs")
    check_listen(args.host, args.port)


def check_listen(host: str, port: int) -> None:
    """Bind and release ``(host, port)`` as the viewer will, so a bad host or a busy port is one line."""
    with socket.socket() as sock:  # IPv4 TCP, like the viewer's ThreadingHTTPServer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # its allow_reuse_address
        try:
            sock.bind((host, port))
        except (socket.gaierror, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
            reason = getattr(exc, "strerror", None) or exc
            raise UsageError(f"argument --host: cannot resolve {host!r}: {reason}") from None
        except OSError as exc:
            flag = "--host" if exc.errno == errno.EADDRNOTAVAIL else "--port"
            raise UsageError(f"argument {flag}: cannot listen on {host}:{port}: {exc.strerror}") from None
