"""Bad command-line input, as a new user types it: one line on stderr naming the argument, exit code 2.

Every verb is covered. ``{run}`` and the other braces are paths made by the ``paths`` fixture.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clew.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "keydoor-demo.yaml")
OUT = ["--out", "{tmp}/out"]
MODEL = "smollm2-135m-instruct"

CASES = [
    # the top level and `envs`
    ([], "the following arguments are required: command"),
    (["nosuchverb"], "argument command: invalid choice: 'nosuchverb'"),
    (["envs", "extra"], "unrecognized arguments: extra"),
    # check-env
    (["check-env"], "the following arguments are required: env_id"),
    (["check-env", "nosuch-v0"], "argument env_id: unknown env 'nosuch-v0'"),
    (["check-env", "nosuch_module_xyz:Env"], "argument env_id: cannot import env module 'nosuch_module_xyz'"),
    (["check-env", "keydoor-v0", "--env-arg", "colour"], "argument --env-arg: expected key=value, got 'colour'"),
    (["check-env", "keydoor-v0", "--env-arg", "colour=red"], "argument --env-arg: env keydoor-v0 with {'colour'"),
    (["check-env", "keydoor-v0", "--env-arg", "width=-3"], "argument --env-arg: env keydoor-v0 with {'width': -3}"),
    # eval
    (["eval"], "the following arguments are required: --env"),
    (["eval", "--env", "nosuch-v0"], "argument --env: unknown env 'nosuch-v0'"),
    (["eval", "--env", "keydoor-v0", "--policy", "/nonexistent"], "argument --policy: no such run or model"),
    (["eval", "--env", "keydoor-v0", "--policy", "./nonexistent"], "argument --policy: no such run or model"),
    (["eval", "--env", "keydoor-v0", "--policy", "{notrun}"], "argument --policy: {notrun} is neither a model"),
    (["eval", "--env", "keydoor-v0", "--k", "5", "--group-size", "4"], "argument --k: 5 is more than --group-size 4"),
    (["eval", "--env", "keydoor-v0", "--k", "0"], "argument --k: expected an integer >= 1, got '0'"),
    (["eval", "--env", "keydoor-v0", "--seeds", "0"], "argument --seeds: expected an integer >= 1"),
    (["eval", "--env", "keydoor-v0", "--policy", "{run}"], "argument --policy: run {run} has no saved policy yet"),
    (["eval", "--env", "keydoor-v0", "--policy", "{file}"], "argument --policy: {file} is a file"),
    (["eval", "--env", "keydoor-v0", "--episodes", "-3"], "argument --episodes: expected an integer >= 1, got '-3'"),
    (["eval", "--env", "keydoor-v0", "--episodes", "0"], "argument --episodes: expected an integer >= 1"),
    (["eval", "--env", "keydoor-v0", "--episodes", "abc"], "argument --episodes: expected an integer >= 1"),
    (["eval", "--env", "keydoor-v0", "--group-size", "0"], "argument --group-size: expected an integer >= 1"),
    (["eval", "--env", "keydoor-v0", "--max-turns", "0"], "argument --max-turns: expected an integer >= 1"),
    (["eval", "--env", "keydoor-v0", "--max-new-tokens", "-1"], "argument --max-new-tokens: expected an integer"),
    (["eval", "--env", "keydoor-v0", "--temperature", "-1"], "argument --temperature: expected a number >= 0"),
    (["eval", "--env", "keydoor-v0", "--temperature", "nan"], "argument --temperature: expected a number >= 0"),
    (["eval", "--env", "keydoor-v0", "--window-turns", "-2"], "argument --window-turns: expected an integer >= 0"),
    (["eval", "--env", "keydoor-v0", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["eval", "--env", "keydoor-v0", "--context", "nosuch"], "argument --context: unknown context strategy 'nosuch'"),
    (["eval", "--env", "keydoor-v0", "--context-param", "turns"], "argument --context-param: expected key=value"),
    (["eval", "--env", "keydoor-v0", "--context-param", "x=3"], "argument --context-param: context strategy 'window'"),
    (["eval", "--env", "keydoor-v0", "--env-arg", "width"], "argument --env-arg: expected key=value, got 'width'"),
    (["eval", "--env", "keydoor-v0", "--env-arg", "width=[1"], "argument --env-arg: the value of 'width=[1' is not"),
    (["eval", "--env", "keydoor-v0", "--env-arg", "colour=red"], "argument --env-arg: env keydoor-v0 with {'colour'"),
    (["eval", "--env", "keydoor-v0", "--engine", "nosuch"], "argument --engine: invalid choice: 'nosuch'"),
    # train
    (["train"], "the following arguments are required: config"),
    (["train", "/nonexistent.yaml"], "argument config: no such file: /nonexistent.yaml"),
    (["train", CONFIG.removesuffix(".yaml")], f"did you mean {CONFIG}?"),
    (["train", "seed=3"], "argument config: no such file: seed=3 (the config comes first"),
    (["train", "{notrun}"], "argument config: {notrun} is a directory, not a YAML run config"),
    (
        ["train", "{run}"],
        "argument config: {run} is a directory, not a YAML run config; continue that run with --resume",
    ),
    (["train", "{bad_yaml}"], "argument config: {bad_yaml} is not valid YAML: expected ',' or ']'"),
    (["train", "{list_yaml}"], "argument config: {list_yaml} must be a YAML mapping"),
    (["train", CONFIG, "nosuch.key=3", *OUT], "invalid config: nosuch: Extra inputs are not permitted"),
    (["train", CONFIG, "seed=abc", *OUT], "invalid config: seed: Input should be a valid integer"),
    (
        ["train", CONFIG, "iterations=-3", *OUT],
        "invalid config: iterations: Input should be greater than or equal to 0",
    ),
    (["train", CONFIG, "rollout.group_size=0", *OUT], "rollout.group_size: Input should be greater than or equal"),
    (["train", CONFIG, "credit.name=nosuch", *OUT], "credit: Value error, unknown credit estimator 'nosuch'"),
    (
        ["train", CONFIG, "credit.name=gigpo", "credit.params.state_similarity=2", *OUT],
        "invalid config: credit: Value error, state_similarity must be a number in (0, 1], got 2",
    ),
    (["train", CONFIG, "env.id=nosuch-v0", *OUT], "env.id: Value error, unknown env 'nosuch-v0'"),
    (["train", CONFIG, "preset=nosuch", *OUT], "unknown preset 'nosuch'"),
    (["train", CONFIG, "novalue", *OUT], "argument overrides: expected dotted.key=value, got 'novalue'"),
    (["train", CONFIG, "seed=[1", *OUT], "argument overrides: the value of 'seed=[1' is not valid YAML"),
    (["train", CONFIG, "policy.model=/nonexistent", *OUT], "policy.model: no such model: /nonexistent"),
    (["train", CONFIG, "--out", "{file}"], "argument --out: {file} is a file, not a run directory"),
    (["train", "--resume", "/nonexistent"], "argument --resume: no such run directory: /nonexistent"),
    (["train", "--resume", "{notrun}"], "argument --resume: {notrun} is not a run directory (no config.yaml)"),
    (["train", "--resume", "{parent}"], "argument --resume: {parent} is not a run directory (no config.yaml); runs"),
    (["train", "--resume", "{run}", CONFIG], "argument config: --resume continues with the run's own config.yaml"),
    (["train", "--resume", "{run}", "--out", "{tmp}/x"], "argument --out: not allowed with --resume"),
    # sft
    (["sft"], "the following arguments are required: config"),
    (["sft", "/nonexistent.yaml"], "argument config: no such file: /nonexistent.yaml"),
    (["sft", CONFIG, "seed=abc", *OUT], "invalid config: seed: Input should be a valid integer"),
    # models
    (["models", "nosuchverb"], "argument models_command: invalid choice: 'nosuchverb'"),
    (["models", "get"], "the following arguments are required: name"),
    (["models", "get", "nope"], "argument name: unknown model 'nope'; registered: "),
    (["models", "get", MODEL, "--out", "{file}"], "argument --out: {file} is a file"),
    (["models", "get", MODEL, "--out", "{notrun}"], "argument --out: {notrun} is a non-empty folder that clew did"),
    # plot
    (["plot"], "the following arguments are required: run"),
    (["plot", "/nonexistent"], "argument run: no such run directory: /nonexistent"),
    (["plot", "{notrun}"], "argument run: {notrun} is not a run directory (no metrics.jsonl)"),
    (["plot", "{file}"], "argument run: {file} is a file, not a run directory"),
    # view
    (["view"], "the following arguments are required: runs"),
    (["view", "/nonexistent"], "argument runs: no such run directory: /nonexistent"),
    (["view", "{notrun}"], "argument runs: {notrun} is not a run directory"),
    (["view", "{run}", "--port", "99999"], "argument --port: expected an integer from 0 to 65535, got '99999'"),
    (["view", "{run}", "--port", "-1"], "argument --port: expected an integer from 0 to 65535"),
    (["view", "{run}", "--port", "http"], "argument --port: expected an integer from 0 to 65535"),
    (["view", "{run}", "--host", "192.0.2.1"], "argument --host: cannot listen on 192.0.2.1:"),  # not this machine
    (["view", "{run}", "--iteration", "1"], "argument --iteration: only with --export"),
    (["view", "--export", "{run}", "{tmp}/o.html"], "argument --iteration: required with --export"),
    (["view", "--export", "{run}", "--iteration", "1"], "argument --export: expected one OUT.html, got 0"),
    (["view", "--export", "/nonexistent", "--iteration", "1", "{tmp}/o.html"], "argument --export: no such run"),
    (["view", "--export", "{run}", "--iteration", "7", "{tmp}/o.html"], "has no iteration 7; it has iterations 1"),
    (["view", "--export", "{run}", "--iteration", "-1", "{tmp}/o.html"], "argument --iteration: expected an integer"),
    (["view", "--export", "{run}", "--iteration", "1", "{tmp}"], "argument runs: {tmp} is a folder"),
]


@pytest.fixture()
def paths(tmp_path: Path) -> dict[str, str]:
    """A run without a saved policy, a folder that is no run, their parent, a file, and two bad configs."""
    parent = tmp_path / "runs"
    run = parent / "demo"
    (run / "trajectories").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text("")
    (run / "trajectories" / "iter_000001.parquet").write_text("")  # only its name is read before the export
    notrun = tmp_path / "notes"
    notrun.mkdir()
    (notrun / "todo.txt").write_text("read the README\n")
    (tmp_path / "bad.yaml").write_text("rollout: [group_size\n")
    (tmp_path / "list.yaml").write_text("- seed: 0\n")
    return {
        "tmp": str(tmp_path),
        "run": str(run),
        "parent": str(parent),
        "notrun": str(notrun),
        "file": str(tmp_path / "list.yaml"),
        "bad_yaml": str(tmp_path / "bad.yaml"),
        "list_yaml": str(tmp_path / "list.yaml"),
    }


def fill(text: str, paths: dict[str, str]) -> str:
    for name, path in paths.items():
        text = text.replace(f"{{{name}}}", path)
    return text


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr); argparse's own errors raise ``SystemExit``."""
    try:
        code: int | str | None = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(argv) or "(no verb)" for argv, _ in CASES])
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(
    argv: list[str],
    expected: str,
    paths: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never_serve(self: http.server.ThreadingHTTPServer, *args: object) -> None:
        raise AssertionError("clew view started serving a bad input")  # instead of blocking the test

    monkeypatch.setattr(http.server.ThreadingHTTPServer, "serve_forever", never_serve)
    code, out, err = run_cli([fill(a, paths) for a in argv], capsys)
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err and out == ""
    assert err.startswith("clew") and ": error: " in err and err.count("\n") == 1, err  # one line
    assert fill(expected, paths) in err


def test_a_busy_port_names_port(paths: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_cli(["view", paths["run"], "--port", str(port)], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().startswith(f"clew view: error: argument --port: cannot listen on 127.0.0.1:{port}: ")


def test_the_commands_from_the_issue_end_to_end(tmp_path: Path) -> None:
    """The console script's view: exit code 2 and one line, and ``--policy`` answers before torch is imported."""
    train = [sys.executable, "-m", "clew.cli", "train", str(tmp_path / "nonexistent.yaml")]
    done = subprocess.run(train, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"clew train: error: argument config: no such file: {tmp_path / 'nonexistent.yaml'}\n"
    code = (
        "import sys\nfrom clew.cli import main\n"
        "code = main(['eval', '--env', 'keydoor-v0', '--policy', '/nonexistent', '--episodes', '3'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules]\n"
        "assert code == 2 and not heavy, (code, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("clew eval: error: argument --policy: no such run or model: /nonexistent (")
    assert done.stderr.count("\n") == 1
