"""Every env family counts a won episode's score once: the undiscounted return equals ``Episode.outcome``.

clew adds an explicit ``StepResult.outcome`` to the step rewards on the episode's last turn, so an
env that pays its score as a reward and also reports it as the outcome doubles every return (issue
25). Each case plays the env's scripted expert through ``clew.rollout.collect`` (the episode is
recorded as a run records it), then REINFORCE with gamma 1 must give turn 0 the episode's outcome.
``check_env`` flags an env that breaks this, named in the message with the fix. The module stays
torch-free (``clew.rollout`` is imported in the test) because ``check_env`` imports it to check that.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from rich.console import Console

from clew import cli
from clew.credit import CreditInput, compute
from clew.envs import StepResult, check_env, registry
from clew.envs.base import ensure_running
from clew.envs.checker import EnvCheckError
from clew.tools.sandbox import find_bwrap
from tests.envs.test_adapters_jvm_textworld import GAMES

_INSTALLED = {f.prefix: f.installed for f in registry.families()}
_NEEDS_JAVA = ("twx", "scienceworld")


def _case(env_id: str, outcome: float, seed: int = 0, **kwargs: Any) -> Any:
    """One parametrised case, skipped when its family's extra (or java, or bubblewrap) is missing."""
    prefix = env_id.split("/")[0] if "/" in env_id else ""
    marks = []
    if prefix:
        marks.append(pytest.mark.skipif(not _INSTALLED[prefix], reason=f"needs the clew[{prefix}] extra"))
    if prefix in _NEEDS_JAVA:
        marks.append(pytest.mark.skipif(shutil.which("java") is None, reason="needs java on PATH"))
    if prefix == "tir":
        marks.append(pytest.mark.skipif(not _INSTALLED["rg"], reason="needs the clew[rg] extra"))
        marks.append(
            pytest.mark.skipif(find_bwrap("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)")
        )
    return pytest.param(env_id, kwargs, seed, outcome, marks=marks, id=env_id)


CASES = [
    _case("keydoor-v0", 1.0),
    _case("bifurcation-v0", 1.0),
    _case("toolcalc-v0", 1.0),
    _case("dial-v0", 1.0, dense=0.5),  # half paid at the two decisive steps, half at the end: 1 once
    _case("textarena/TicTacToe-v0", 1.0, opponent="random"),  # two-player: minimax beats seed 0's random mover
    _case("textarena/Nim-v0", 1.0),
    _case("textarena/TowerOfHanoi-v0", 1.0),
    _case("textarena/Mastermind-v0", 1.0),
    _case("gym/FrozenLake-v1", 1.0),
    _case("gym/Taxi-v4", 6.0),  # 15 turns: 14 moves at -1, then the delivery at +20 -> -14 + 20 = 6
    _case("gym/CliffWalking-v1", -13.0),  # 13 moves along the cliff at -1 each
    _case("twx/coin", 1.0),
    _case("twx/arithmetic", 1.0),
    _case("scienceworld/find-living-thing", 1.0, step_limit=30),
    _case("textworld/coin_collector", 1.0, cache_dir=str(GAMES), generate=False),
    _case("textworld/treasure_hunter", 1.0, cache_dir=str(GAMES), generate=False),
    _case("textworld/simple", 1.0, cache_dir=str(GAMES), generate=False),
    _case("rg/chain_sum", 1.0),
    _case("tir/basic_arithmetic", 1.0),
]


@pytest.mark.parametrize(("env_id", "kwargs", "seed", "outcome"), CASES)
def test_won_episode_return_counts_the_outcome_once(
    env_id: str, kwargs: dict[str, Any], seed: int, outcome: float
) -> None:
    from clew.rollout import RolloutConfig, ScriptedActor, Task, collect

    cfg = RolloutConfig(group_size=1, max_turns=200)
    (group,) = collect(ScriptedActor("expert"), [Task(env_id, seed, kwargs)], cfg, seed=0)
    (episode,) = group.episodes
    assert episode.error is None and episode.terminated, (episode.error, episode.truncation_reason)
    assert episode.turns[-1].info.get("success", True), f"{env_id}: the expert did not win seed {seed}"
    credit = compute("reinforce", CreditInput.from_groups([group]), gamma=1.0)
    # Doubled (issue 25): a win with outcome 1 had return 2.0 here (1 as reward + 1 as outcome).
    assert episode.outcome == pytest.approx(outcome)
    assert credit.turn_return[0] == pytest.approx(episode.outcome)


# --- check_env flags an outcome the rewards already pay -----------------------------------------
class _TwoSteps:
    """Two steps to a win; subclasses pay the score one way or another (``pay`` -> the two steps)."""

    def reset(self, seed: int) -> str:
        self.turn = 0
        return f"two steps (seed {seed})"

    def step(self, action: str) -> StepResult:
        ensure_running(self.turn >= 2, type(self).__name__)
        self.turn += 1
        done = self.turn == 2
        reward, outcome = self.pay()[self.turn - 1]
        return StepResult(f"step {self.turn}", reward, done, False, {"success": done} if done else {}, outcome)

    def pay(self) -> list[tuple[float, float | None]]:
        raise NotImplementedError


class DoubledEnding(_TwoSteps):
    """The verdict as the ending reward and as the outcome (textarena before the fix): return 2."""

    def pay(self) -> list[tuple[float, float | None]]:
        return [(0.0, None), (1.0, 1.0)]


class SummedScore(_TwoSteps):
    """Score changes that sum to the final score, also reported as the outcome (twx before the fix)."""

    def pay(self) -> list[tuple[float, float | None]]:
        return [(0.5, None), (0.5, 1.0)]


class EarlyOutcome(_TwoSteps):
    """An outcome on a step that does not end the episode."""

    def pay(self) -> list[tuple[float, float | None]]:
        return [(0.0, 1.0), (0.0, 1.0)]


class VerdictOnce(_TwoSteps):
    """The verdict as the outcome only; the rewards pay nothing."""

    def pay(self) -> list[tuple[float, float | None]]:
        return [(0.0, None), (0.0, 1.0)]


class ScoreOnce(_TwoSteps):
    """Score changes as rewards, no outcome (the episode's outcome is their sum)."""

    def pay(self) -> list[tuple[float, float | None]]:
        return [(0.5, None), (0.5, None)]


class LossVerdict(_TwoSteps):
    """A zero outcome doubles nothing, whatever the rewards."""

    def pay(self) -> list[tuple[float, float | None]]:
        return [(0.0, None), (0.0, 0.0)]


@pytest.mark.parametrize(
    ("env", "found"),
    [
        (DoubledEnding(), r"the ending step's reward 1 duplicates its explicit outcome 1"),
        (SummedScore(), r"the step rewards sum to 1, the same as the explicit outcome 1"),
    ],
    ids=lambda x: type(x).__name__,
)
def test_check_env_flags_an_outcome_the_rewards_already_pay(env: _TwoSteps, found: str) -> None:
    with pytest.raises(EnvCheckError, match=found) as err:
        check_env(env, seeds=(0,))  # type: ignore[arg-type]
    message = str(err.value)
    assert "counts the score twice (2)" in message
    assert "a final verdict goes in StepResult.outcome with reward 0 on the ending step" in message
    assert "a score earned step by step goes in the rewards with outcome None" in message


def test_check_env_flags_an_outcome_before_the_end() -> None:
    with pytest.raises(EnvCheckError, match=r"step 1 reported outcome 1 but did not end the episode"):
        check_env(EarlyOutcome(), seeds=(0,))  # type: ignore[arg-type]


@pytest.mark.parametrize("env", [VerdictOnce(), ScoreOnce(), LossVerdict()], ids=lambda e: type(e).__name__)
def test_check_env_accepts_the_score_counted_once(env: _TwoSteps) -> None:
    assert check_env(env, seeds=(0, 1)).episodes == 2  # type: ignore[arg-type]


def test_cli_check_env_names_the_doubled_outcome(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr(cli, "console", Console(width=400))
    assert cli.main(["check-env", f"{__name__}:DoubledEnding"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "duplicates its explicit outcome" in out and "counts the score twice" in out
