"""One file outside the package adds an engine, a context strategy, a credit estimator and an env family; the CLI
uses each by name (config validation, ``--help`` listings and errors included) with no other file touched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clew import plugins
from clew.cli import main
from clew.credit import base as credit_base
from clew.envs import registry as env_registry
from clew.envs.pool import make_pooled
from clew.plugins import load_plugin
from clew.policy import base as engine_base
from clew.rollout.context import CONTEXTS

PLUGIN = Path(__file__).with_name("lab_plugin.py")


@pytest.fixture(autouse=True, scope="module")
def _registries_as_they_were() -> Iterator[None]:
    """The plug-in's entries leave with this module: later tests see the built-in registries only."""
    saved = [(d, dict(d)) for d in (engine_base.ENGINES._specs, CONTEXTS._specs, credit_base.ESTIMATORS._specs,
                                     env_registry.FAMILIES._specs, plugins._LOADED)]  # fmt: skip
    yield
    for registry, before in saved:
        registry.clear()
        registry.update(before)  # type: ignore[attr-defined]


def _config(path: Path, model: Path, **changes: str) -> Path:
    fields = {"engine": "lab-hf", "context": "lab-window", "credit": "lab-sign", "env": "lab/arrow"} | changes
    path.write_text(
        f"plugins: [{PLUGIN}]\npreset: grpo\npolicy: {{model: {model}}}\niterations: 2\ntasks_per_iteration: 2\n"
        f"env: {{id: {fields['env']}, kwargs: {{steps: 2}}}}\ncredit: {{name: {fields['credit']}}}\n"
        f"rollout: {{group_size: 4, max_turns: 3, max_new_tokens: 3, engine: {fields['engine']}, "
        f"context: {{name: {fields['context']}, params: {{turns: 1}}}}}}\n"
        "eval: {every: 1, episodes: 4}\n"
    )
    return path


def test_a_run_uses_every_plugin_entry_by_name(tiny_dir: Path, tmp_path: Path) -> None:
    lab = load_plugin(str(PLUGIN))  # the module the run loads (once per process, by resolved path)
    lab.USED.clear()
    assert main(["train", str(_config(tmp_path / "lab.yaml", tiny_dir)), "--out", str(tmp_path / "run")]) == 0
    assert sorted(lab.USED) == ["context", "engine", "env", "estimator"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("engine/name") == "lab-hf" for r in records)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert str(PLUGIN) in saved  # a resumed run loads the plug-in again
    assert main(["train", "--resume", str(tmp_path / "run"), "iterations=3"]) == 0


def test_an_env_pool_child_builds_a_plugin_family(lab_plugin: object) -> None:
    env = make_pooled("lab/arrow", steps=2)  # a fresh process (forkserver): it loads the driver's plug-ins
    try:
        assert env.reset(0).startswith("The key is ")
    finally:
        env.close()  # type: ignore[attr-defined]


def test_the_cli_lists_plugin_entries_and_evaluates_with_them(
    tiny_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--plugin", str(PLUGIN), "eval", "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert "lab-hf" in shown and "lab-window" in shown
    assert main(["--plugin", str(PLUGIN), "envs"]) == 0
    assert "lab/" in capsys.readouterr().out
    args = ["--plugin", str(PLUGIN), "eval", "--env", "lab/arrow", "--policy", str(tiny_dir), "--episodes", "2"]
    assert main([*args, "--engine", "lab-hf", "--context", "lab-window", "--max-turns", "3"]) == 0


@pytest.mark.parametrize(
    ("field", "bad", "listed"),
    [("engine", "lab-nope", "lab-hf"), ("context", "lab-nope", "lab-window"), ("credit", "lab-nope", "lab-sign")],
)
def test_an_unknown_name_lists_the_plugin_entries(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, bad: str, listed: str
) -> None:
    cfg = _config(tmp_path / "bad.yaml", tiny_dir, **{field: bad})
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert bad in err and listed in err


def test_a_missing_or_broken_plugin_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", str(tmp_path / "nowhere.py"), "envs"]) == 2
    assert "no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('lab server down')\n")
    assert main(["--plugin", str(broken), "envs"]) == 2
    assert "failed to load: RuntimeError: lab server down" in capsys.readouterr().err
