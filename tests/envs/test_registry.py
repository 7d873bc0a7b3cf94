import pytest

from clew.envs import EnvFinishedError, check_env, make, register, registered
from clew.envs.checker import EnvCheckError
from clew.tools.calculator import CalcError, evaluate


@pytest.mark.parametrize("spec", registered(), ids=lambda s: s.env_id)
def test_every_registered_env_passes_check_env(spec) -> None:  # type: ignore[no-untyped-def]
    report = check_env(spec.env_id)
    assert report.episodes == 3 and report.steps > 0


def _expert_success(env_id: str, seeds: range, **kwargs: object) -> float:
    wins = 0
    for seed in seeds:
        env = make(env_id, **kwargs)
        env.reset(seed)
        while True:
            result = env.step(env.expert_action())  # type: ignore[attr-defined]
            if result.terminated or result.truncated:
                break
        wins += result.terminated and result.reward == 1.0
    return wins / len(seeds)


@pytest.mark.parametrize(
    "kwargs",
    [{"width": 3, "height": 3}, {"width": 6, "height": 6}, {"width": 30, "height": 30, "layout": "corners"}],
)
def test_keydoor_expert_always_succeeds_at_several_sizes(kwargs: dict) -> None:
    assert _expert_success("keydoor-v0", range(30), **kwargs) == 1.0


def test_keydoor_horizon_grows_with_size() -> None:
    small, large = (
        make("keydoor-v0", width=3, height=3),
        make("keydoor-v0", width=30, height=30, layout="corners"),
    )
    small.reset(0)
    large.reset(0)
    assert small.optimal_steps <= 8 and large.optimal_steps >= 100  # type: ignore[attr-defined]


def test_bifurcation_and_toolcalc_experts_succeed() -> None:
    assert _expert_success("bifurcation-v0", range(30), corridor_length=25) == 1.0
    assert _expert_success("toolcalc-v0", range(30), n_ops=4) == 1.0


def test_keydoor_door_needs_key() -> None:
    env = make("keydoor-v0", width=3, height=3)
    env.reset(0)
    env.key, env.door, env.agent = (2, 2), (0, 0), (1, 0)  # type: ignore[attr-defined]
    result = env.step("open")
    assert "locked" in result.observation and result.reward == 0 and not result.terminated


def test_invalid_actions_cost_a_turn_and_are_flagged() -> None:
    for env_id in ("keydoor-v0", "bifurcation-v0", "toolcalc-v0", "dial-v0"):
        env = make(env_id)
        env.reset(1)
        result = env.step("dance wildly")
        assert result.info.get("invalid_action") is True
        assert env.steps == 1  # type: ignore[attr-defined]


def test_toolcalc_malformed_call_returns_error_observation() -> None:
    env = make("toolcalc-v0")
    env.reset(0)
    for bad in ["calc: __import__('os')", "calc: 2 **** 3", "calc: 9 ** 9999", "calc: 1/0", "answer: seven"]:
        result = env.step(bad)
        assert result.observation.startswith("Error") and result.info["invalid_action"]


def test_step_after_end_raises_clear_error() -> None:
    env = make("bifurcation-v0", corridor_length=0)
    env.reset(0)
    assert env.step(env.expert_action()).terminated  # type: ignore[attr-defined]
    with pytest.raises(EnvFinishedError, match="reset"):
        env.step("walk")


def test_calculator_whitelist() -> None:
    assert evaluate("(2 + 3) * 4 - 1") == 19
    assert evaluate("-2 ** 3") == -8
    for bad in ["a + 1", "(lambda: 1)()", "[1, 2]", "1 if 1 else 2", "2 ** 100 ** 100"]:
        with pytest.raises(CalcError):
            evaluate(bad)


class _Broken:
    def reset(self, seed: int) -> str:
        import random

        return f"obs {random.random()}"

    def step(self, action: str):  # type: ignore[no-untyped-def]
        raise AssertionError("never reached")


def test_check_env_catches_nondeterminism() -> None:
    with pytest.raises(EnvCheckError, match="not deterministic"):
        check_env(_Broken(), seeds=(0,), max_steps=0)


def test_third_party_env_by_dotted_path_and_registration() -> None:
    env = make("clew.envs.library.keydoor:KeyDoor", width=4, height=4)
    assert "Grid 4x4" in env.reset(0)
    register("mymaze-v1", "clew.envs.library.keydoor:KeyDoor", width=3, height=3)
    assert "Grid 3x3" in make("mymaze-v1").reset(0)
    with pytest.raises(ValueError, match=r"unknown env 'nope-v0'.*built-in: .*keydoor-v0"):
        make("nope-v0")
