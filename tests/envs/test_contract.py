"""The env contract's optional extras, as a third-party env registered by ``module:Class`` meets them.

The envs (``tests/contract_envs.py``) have no extras (``Counter``), an expert only (``ExpertOnly``)
or an expert and valid actions (``Lights``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from clew import cli
from clew.envs import HasExpert, HasStateKey, HasValidActions, check_env, registry
from clew.envs.corpus import sample_texts
from clew.eval import diagnose, ending_shares
from clew.eval.diagnose import EVAL_KNOBS
from clew.policy.tiny import build_tokenizer
from clew.rollout import RolloutConfig, ScriptedActor, Task, collect
from clew.types import Episode
from tests.contract_envs import Counter, ExpertOnly, Lights

HERE = "tests.contract_envs"


def test_optional_extras_are_typed_protocols() -> None:
    assert not isinstance(Counter(), (HasExpert, HasValidActions, HasStateKey))
    assert isinstance(ExpertOnly(), HasExpert) and not isinstance(ExpertOnly(), HasValidActions)
    assert isinstance(Lights(), HasExpert) and isinstance(Lights(), HasValidActions)


@pytest.mark.parametrize("env", [Counter(), ExpertOnly(), Lights()], ids=lambda e: type(e).__name__)
def test_check_env_takes_envs_with_any_subset_of_the_extras(env: object) -> None:
    report = check_env(env, seeds=(0, 1), max_steps=20)  # type: ignore[arg-type]
    assert report.episodes == 2 and report.steps > 0


def test_random_play_on_an_env_without_valid_actions_names_the_fix() -> None:
    """Was ``AttributeError: 'Counter' object has no attribute 'valid_actions'`` inside the rollout."""
    tasks = [Task(f"{HERE}:Counter", 0)]
    with pytest.raises(ValueError, match=r"random play needs valid_actions\(\), which Counter does not have: add it"):
        collect(ScriptedActor("random"), tasks, RolloutConfig(group_size=1), seed=0)
    with pytest.raises(ValueError, match=r"noisy expert demos \(noise=0.25\) need valid_actions\(\).*sft\.noise=0"):
        collect(ScriptedActor("expert", noise=0.25), [Task(f"{HERE}:ExpertOnly", 0)], RolloutConfig(group_size=1), 0)
    with pytest.raises(ValueError, match=r"expert play needs expert_action\(\), which Counter does not have"):
        ScriptedActor("expert").check(Counter())
    ScriptedActor("expert").check(ExpertOnly())  # noise 0 needs no valid actions
    (group,) = collect(ScriptedActor("random"), [Task(f"{HERE}:Lights", 3)], RolloutConfig(group_size=2), seed=0)
    assert all(t.action_text.startswith("toggle ") for e in group.episodes for t in e.turns)


def test_resolve_finds_the_class_without_building_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    before = Counter.built
    assert registry.resolve(f"{HERE}:Counter") is Counter and Counter.built == before
    assert registry.resolve("keydoor-v0").__name__ == "KeyDoor"
    with pytest.raises(ValueError, match=r"unknown env 'keydor-v0'; did you mean keydoor-v0\?"):
        registry.resolve("keydor-v0")
    with pytest.raises(ValueError, match=r"module 'tests.contract_envs' has no env class 'Nope'"):
        registry.resolve(f"{HERE}:Nope")
    absent = registry.EnvFamily("fake", f"{HERE}:Counter", extra="fake", requires="clew_no_such_package")
    monkeypatch.setitem(registry.FAMILIES._specs, "fake", absent)
    with pytest.raises(
        ValueError, match=r"env fake/x needs the 'clew_no_such_package' package: pip install 'clew\[fake\]'"
    ):
        registry.resolve("fake/x")


def test_env_text_makes_the_env_actions_cheap_for_the_tiny_tokenizer() -> None:
    """The issue's case: trained on built-in env text only, ``toggle 3`` cost 7 tokens."""
    actions = Lights().valid_actions()
    plain = build_tokenizer(sample_texts(20))
    with_env = build_tokenizer(sample_texts(20, env_id=f"{HERE}:Lights"))
    tokens = [sum(len(tok.encode(a, add_special_tokens=False)) for a in actions) for tok in (plain, with_env)]
    assert tokens[1] < tokens[0] and tokens[1] <= 2 * len(actions), tokens  # measured: 35 -> 10


def test_env_text_guards() -> None:
    base = sample_texts(2)
    assert sample_texts(2, env_id="keydoor-v0") == base  # built-in envs keep their tokenizer
    extra = sample_texts(2, env_id=f"{HERE}:Counter", env_episodes=3)[len(base) :]
    assert extra == [f"count to three (seed {s})" for s in range(3)]  # no expert, no valid actions: observations


def _ended(*reasons: str | None) -> list[Episode]:
    return [Episode("t", 0, 0, truncated=r is not None, truncation_reason=r) for r in reasons]


def test_diagnosis_names_the_budget_that_ended_most_episodes() -> None:
    shares = ending_shares(_ended("max_new_tokens", "max_new_tokens", "max_new_tokens", None))
    assert shares == {"max_new_tokens": 0.75, "max_turns": 0.0, "max_prompt_tokens": 0.0, "error": 0.0}
    budgets = {"max_new_tokens": 6, "max_turns": 16, "max_prompt_tokens": 4096}
    assert diagnose(shares, budgets) == (
        "75 % of episodes ended at max_new_tokens=6 — raise rollout.max_new_tokens (an action and its stop token "
        "must fit)"
    )
    assert diagnose(shares, budgets, demo_action_tokens=7).endswith(  # type: ignore[union-attr]
        "; the expert's longest action takes 7 tokens with its stop token"
    )
    assert diagnose(ending_shares(_ended("max_turns", "max_turns", "env", None)), budgets, EVAL_KNOBS) == (
        "50 % of episodes ended at max_turns=16 — raise --max-turns"
    )  # 2 of 4 reach the 50 % threshold; "env" (the env's own truncation) is never blamed
    assert diagnose(ending_shares(_ended("error", "error", "error", "max_turns")), budgets).startswith(  # type: ignore[union-attr]
        "75 % of episodes ended with an env error — the env raised"
    )
    assert diagnose(ending_shares(_ended("max_turns", None, None)), budgets) is None  # 33 % < 50 %
    assert diagnose(ending_shares([]), budgets) is None


@pytest.fixture()
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "console", Console(width=400))


@pytest.mark.usefixtures("wide_console")
def test_cli_eval_refuses_random_play_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "--env", f"{HERE}:Counter", "--policy", "random", "--episodes", "2"]) == 2
    out = capsys.readouterr().err
    assert "random play needs valid_actions(), which Counter does not have" in out and "Traceback" not in out
    assert cli.main(["eval", "--env", "nosuch-v0", "--policy", "expert"]) == 2
    assert "unknown env 'nosuch-v0'" in capsys.readouterr().err
    assert cli.main(["eval", "--env", "keydoor-v0", "--env-arg", "colour=red"]) == 2
    assert "env keydoor-v0 with {'colour': 'red'} cannot be built" in capsys.readouterr().err
    assert cli.main(["eval", "--env", f"{HERE}:Lights", "--policy", "random", "--episodes", "2"]) == 0


@pytest.mark.usefixtures("wide_console")
def test_cli_eval_diagnoses_a_token_budget_that_ended_the_episodes(
    tiny_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "--env", "keydoor-v0", "--env-arg", "width=3", "--env-arg", "height=3", "--policy", str(tiny_dir)]
    assert cli.main([*argv, "--episodes", "4", "--max-turns", "3", "--max-new-tokens", "1"]) == 0
    assert "100 % of episodes ended at max_new_tokens=1 — raise --max-new-tokens" in capsys.readouterr().out
    assert cli.main(["eval", "--env", f"{HERE}:Lights", "--policy", "expert", "--episodes", "4"]) == 0
    assert "% of episodes ended" not in capsys.readouterr().out  # the expert ends every episode itself


@pytest.mark.usefixtures("wide_console")
def test_cli_eval_names_a_model_that_fails_to_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text("{}")  # a model folder that does not load (no folder at all: exit 2)
    assert cli.main(["eval", "--env", "keydoor-v0", "--policy", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert f"cannot load model {tmp_path}" in err and "Traceback" not in err


@pytest.mark.usefixtures("wide_console")
def test_cli_envs_lists_families_and_how_to_install_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = registry.EnvFamily("fake", f"{HERE}:Counter", "fakes", "clew_no_such_package", "a fake", ("one",))
    monkeypatch.setitem(registry.FAMILIES._specs, "fake", absent)
    assert cli.main(["envs"]) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if "fake/..." in line]
    missing = "pip install 'clew[fakes]'"  # not eaten as rich markup
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["fake/...", "a fake", "fake/one", "no", missing]
    assert "keydoor-v0" in out
    for family in registry.families():
        assert f"{family.prefix}/..." in out and family.ids()[0] in out
        if family.install:  # a hub's --no-deps line, whole on a line of its own under the table
            assert f"{family.prefix}: {family.install}" in out.splitlines()
        else:
            assert f"pip install 'clew[{family.extra}]'" in out
    assert cli.main(["eval", "--env", "fake/one"]) == 2
    assert f"env fake/one needs the 'clew_no_such_package' package: {missing}" in capsys.readouterr().err
