"""Env snapshots: every library env restores exactly (check_env verifies it), across a worker process too, and a
snapshot that forgets part of the state is caught."""

from __future__ import annotations

import pickle

import pytest

from clew.envs import HasSnapshot, PickledSnapshot, StepResult, check_env, make
from clew.envs.checker import EnvCheckError
from clew.envs.pool import make_pooled


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("keydoor-v0", {}), ("toolcalc-v0", {}), ("dial-v0", {}), ("bifurcation-v0", {}), ("gym/Taxi-v4", {}),
     ("gym/FrozenLake-v1", {"is_slippery": True}), ("gym/CliffWalkingSlippery-v1", {})],
)  # fmt: skip
def test_envs_restore_exactly(env_id: str, kwargs: dict[str, object]) -> None:
    env = make(env_id, **kwargs)
    assert isinstance(env, HasSnapshot)
    assert check_env(env).snapshots  # the halfway snapshot / other seed / restore / replay check ran


def test_a_pooled_env_snapshots_across_the_process_boundary() -> None:
    env = make_pooled("keydoor-v0", width=5, height=5)
    try:
        assert isinstance(env, HasSnapshot)
        env.reset(3)
        env.step("right")
        state = env.snapshot()
        after = [env.step(a).observation for a in ("down", "left")]
        env.reset(9)
        env.restore(state)
        assert [env.step(a).observation for a in ("down", "left")] == after
    finally:
        env.close()


class Forgetful(PickledSnapshot):
    """Counts its steps, but its snapshot leaves the count out: restoring it cannot replay the episode."""

    def __init__(self, **_: object) -> None:
        self.n, self.seed = 0, 0

    def reset(self, seed: int) -> str:
        self.n, self.seed = 0, seed
        return f"seed {seed}"

    def step(self, action: str) -> StepResult:
        self.n += 1
        return StepResult(f"step {self.n}", 0.0, self.n >= 4, False)

    def snapshot(self) -> bytes:
        return pickle.dumps({"seed": self.seed, "n": 0})  # the count forgotten


def test_a_snapshot_that_forgets_state_is_caught() -> None:
    with pytest.raises(EnvCheckError, match="restoring a snapshot taken after 2 steps did not replay the rest"):
        check_env(Forgetful())
