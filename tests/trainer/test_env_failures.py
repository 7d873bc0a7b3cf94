"""What ``clew train`` tells a user whose env or budgets do not fit (before any work, or at the end in one line),
and how it trains on env failures: infra ones left out, policy ones kept and penalised."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from transformers import AutoTokenizer

from clew import cli
from clew.envs import InfraError, StepResult
from clew.trainer import Trainer
from clew.trainer.config import RunConfig, load_config
from tests.contract_envs import Counter, Flaky

Make = Callable[..., RunConfig]
ENVS = "tests.contract_envs"
HERE = "tests.trainer.test_env_failures"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "console", Console(width=400))


def _yaml(path: Path, tiny_dir: Path) -> Path:
    path.write_text(
        f"policy: {{model: {tiny_dir}}}\niterations: 1\ntasks_per_iteration: 2\n"
        "env: {id: keydoor-v0, kwargs: {width: 3, height: 3, max_steps: 5}}\n"
        "rollout: {group_size: 2, max_turns: 4, max_new_tokens: 3, context: window}\n"
        "train: {minibatch_rows: 16, microbatch_rows: 8}\n"
        "eval: {every: 0, at_start: false, episodes: 4}\n"
    )
    return path


def test_an_unknown_env_id_fails_in_load_config_naming_env_id(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was an ``IndexError`` inside SFT."""
    with pytest.raises(ValueError, match=r"env\.id: .*unknown env 'keydor-v0'; did you mean keydoor-v0\?"):
        load_config(None, ["env.id=keydor-v0"])
    argv = ["train", str(_yaml(tmp_path / "c.yaml", tiny_dir)), "env.id=nosuch-v0", "sft.enabled=true"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "env.id: " in err and "unknown env 'nosuch-v0'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_model_that_does_not_load_is_one_line_from_an_override(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"  # a folder that is no model (a path that does not exist is a usage error, exit 2)
    empty.mkdir()
    argv = ["train", str(_yaml(tmp_path / "c.yaml", tiny_dir)), f"policy.model={empty}", "--out", str(tmp_path)]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert f"cannot load model {empty}" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        ("Counter", ["sft.enabled=true"], r"sft\.enabled=true.*expert_action\(\), which Counter does not have"),
        ("ExpertOnly", ["sft.enabled=true", "sft.noise=0.1"], r"noise=0\.1\) need valid_actions\(\).*sft\.noise=0"),
        ("Counter", ["credit.name=gigpo"], r"credit\.name=gigpo groups turns by environment state"),
    ],
)
def test_an_env_without_what_the_run_needs_fails_before_any_work(
    env: str, overrides: list[str], message: str, tiny_cfg: Make, tmp_path: Path
) -> None:
    cfg = tiny_cfg(f"env.id={ENVS}:{env}", *overrides)
    with pytest.raises(ValueError, match=message):
        Trainer(cfg, tmp_path / "run").fit()
    assert not (tmp_path / "run").exists()  # no tokenizer, no model, no metrics


def test_the_tiny_tokenizer_learns_the_configured_envs_words(tmp_path: Path) -> None:
    """``toggle 3`` cost 7 tokens of a tokenizer trained on the built-in envs only (see tests/envs/test_contract.py)."""
    tiny = ["policy.hidden_size=16", "policy.num_layers=1", "policy.num_heads=2", "policy.intermediate_size=16"]
    cfg = load_config(
        None, [f"env.id={ENVS}:Lights", *tiny, "iterations=0", "eval.at_start=false", "eval.at_end=false"]
    )
    Trainer(cfg, tmp_path).fit()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base")
    assert len(tokenizer.encode("toggle 3", add_special_tokens=False)) <= 2


def test_train_ends_with_a_diagnosis_when_a_budget_ended_the_episodes(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With max_new_tokens=1 no action fits: every episode ends at the budget, and the SFT demos say by how much."""
    overrides = ["rollout.max_new_tokens=1", "sft.enabled=true", "sft.episodes=4", "sft.epochs=1"]
    argv = ["train", str(_yaml(tmp_path / "c.yaml", tiny_dir)), *overrides, "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    diagnosis = json.loads((tmp_path / "run" / "summary.json").read_text())["diagnosis"]
    assert diagnosis.startswith(
        "final evaluation: 100 % of episodes ended at max_new_tokens=1 — raise rollout.max_new_tokens"
    )
    assert "; the expert's longest action takes " in diagnosis and diagnosis in out


class OutageFlaky(Flaky):
    """Flaky whose failures are a service outage the adapter declares infra: no action causes them."""

    def step(self, action: str) -> StepResult:
        if self.always or self.seed % 2:
            raise InfraError("simulator licence server unreachable")
        return Counter.step(self, action)


class BrokenReset(Counter):
    """Counter whose reset fails, before any action, in training episodes with an odd seed (training seeds are
    below 500k; the trainer's weight-sync probe resets seeds above, and must get its prompts)."""

    def reset(self, seed: int) -> str:
        if seed % 2 and seed < 500_000:
            raise OSError("game files missing")
        return super().reset(seed)


def _train_failing(tiny_cfg: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> Any:
    """Train two iterations; return (learner batch sizes, iteration records, trajectory rows)."""
    import pyarrow.parquet as pq

    from clew.trainer.learner import Learner

    batches: list[int] = []
    real = Learner.update

    def update(self: Learner, rows: Any, seed: int) -> Any:
        batches.append(len(rows))
        return real(self, rows, seed)

    monkeypatch.setattr(Learner, "update", update)
    cfg = tiny_cfg("tasks_per_iteration=6", "eval.every=0", *overrides)
    Trainer(cfg, tmp_path / "run").fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    iterations = [r for r in records if r["kind"] == "iteration"]
    paths = sorted((tmp_path / "run" / "trajectories").glob("*.parquet"))
    return batches, iterations, [row for path in paths for row in pq.read_table(path).to_pylist()]


@pytest.mark.parametrize(
    ("env", "kwargs"),
    [(f"{HERE}:OutageFlaky", "{}"), (f"{HERE}:OutageFlaky", "{always: true}"), (f"{HERE}:BrokenReset", "{}")],
)
def test_infra_failures_stay_out_of_credit_and_baselines(
    env: str, kwargs: str, tiny_cfg: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Infra failures are recorded (``rollout/error_rate_infra``, and their turns in the store typed ``infra``
    with advantage 0) but never trained on or averaged into a baseline; an iteration where every episode
    failed trains on nothing and the run goes on."""
    batches, iterations, rows = _train_failing(tiny_cfg, tmp_path, monkeypatch, f"env.id={env}", f"env.kwargs={kwargs}")
    assert len(iterations) == 2 and all(r["rollout/error_rate_infra"] > 0 for r in iterations)
    assert all(r["rollout/error_rate_policy"] == 0 for r in iterations)
    trained = [row for row in rows if row["failure"] is None]
    left_out = [row for row in rows if row["failure"] is not None]
    assert all(row["seed"] % 2 == 0 for row in trained)
    assert all(row["failure"] == "infra" and row["advantage"] == 0.0 for row in left_out)
    assert bool(left_out) == ("Outage" in env)  # a failed reset leaves no turn to store
    if "always" in kwargs:
        assert batches == [0, 0] and not trained


@pytest.mark.parametrize("always", [False, True])
def test_a_step_that_raises_is_a_policy_failure_trained_on_with_its_penalty(
    always: bool, tiny_cfg: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception from ``step`` may be the action's doing: the episode stays in credit and its group's
    baseline, scored as a failure (outcome 0), its failing turn charged ``shaping.invalid_action_penalty``."""
    kwargs = "{always: true}" if always else "{}"
    overrides = (f"env.id={ENVS}:Flaky", f"env.kwargs={kwargs}", "shaping.invalid_action_penalty=0.5")
    batches, iterations, rows = _train_failing(tiny_cfg, tmp_path, monkeypatch, *overrides)
    assert len(iterations) == 2 and all(r["rollout/error_rate_policy"] > 0 for r in iterations)
    assert all(r["rollout/error_rate_infra"] == 0 for r in iterations)
    failed = [row for row in rows if row["seed"] % 2 or always]
    assert failed and len(batches) == 2 and all(n > 0 for n in batches)
    for row in failed:  # Flaky raises on the first step: one turn, the failing one
        assert (row["failure"], row["outcome"], row["reward"], row["penalty"]) == ("policy", 0.0, 0.0, 0.5)
        assert json.loads(row["info"])["step_failure"] == "exception" and "simulator crashed" in row["error"]
