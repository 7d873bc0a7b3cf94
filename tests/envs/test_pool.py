"""Env worker processes: extras kept truthfully, parallel steps, crashes, hangs, close, check_env, failure types."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time

import pytest

from clew.envs import (
    Closeable,
    EnvFinishedError,
    HasExpert,
    HasStateKey,
    HasValidActions,
    InfraError,
    StepResult,
    check_env,
    failure_type,
)
from clew.envs.pool import EnvWorkerError, EnvWorkerKilled, EnvWorkerTimeout, ProcessEnv, make_pooled, proxy_class

FLAKY = "tests.envs.test_pool:FlakyEnv"


class LicenceDown(InfraError):
    """An adapter's infra error that does not pickle (its constructor takes two arguments)."""

    def __init__(self, server: str, port: int) -> None:
        super().__init__(f"licence server {server}:{port} unreachable")


class FlakyEnv:
    """Echoes actions after ``delay`` s; ``crash`` exits the process, ``abort`` aborts it (SIGABRT), ``hang``
    sleeps, ``boom`` raises, ``licence`` raises an unpicklable ``InfraError``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def reset(self, seed: int) -> str:
        self.seed, self.steps = seed, 0
        return f"start {seed} in {os.getpid()}"

    def step(self, action: str) -> StepResult:
        time.sleep(self.delay)
        if action == "crash":
            os._exit(3)
        if action == "abort":
            os.abort()
        if action == "licence":
            raise LicenceDown("lic.example", 27000)
        if action == "hang":
            time.sleep(600)
        if action == "boom":
            raise ValueError("boom from the env")
        self.steps += 1
        return StepResult(f"echo {action}", 0.0, action == "done", False, {})


class ScriptedFlakyEnv(FlakyEnv):
    """A FlakyEnv with an expert: seed 0 plays ``step, done``; seed 1 plays ``step, crash``."""

    def expert_action(self) -> str:
        script = ["step", "done"] if self.seed % 2 == 0 else ["step", "crash"]
        return script[self.steps]


def pooled_scripted() -> ProcessEnv:
    """A "module:Class"-style factory, so rollout tasks can name a pooled env."""
    return make_pooled("tests.envs.test_pool:ScriptedFlakyEnv", timeout_s=10)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_pooled_keydoor_keeps_its_extras_and_passes_check_env() -> None:
    env = make_pooled("keydoor-v0", timeout_s=10, width=4, height=4)
    try:
        assert isinstance(env, ProcessEnv)
        assert all(isinstance(env, p) for p in (HasExpert, HasStateKey, HasValidActions, Closeable))
        assert check_env(env).episodes == 3
    finally:
        env.close()


def test_proxy_has_only_the_extras_of_its_env() -> None:
    env = make_pooled(FLAKY, timeout_s=10)
    try:
        assert not any(isinstance(env, p) for p in (HasExpert, HasStateKey, HasValidActions))
        assert isinstance(env, Closeable) and not hasattr(env, "expert_action")
        assert proxy_class(("state_key", "expert_action")) is proxy_class(("expert_action", "state_key"))
    finally:
        env.close()


def test_workers_step_in_parallel() -> None:
    envs = [make_pooled(FLAKY, timeout_s=10, delay=0.4) for _ in range(3)]
    try:
        firsts = [env.reset(i) for i, env in enumerate(envs)]
        assert len({f.split(" in ")[1] for f in firsts}) == 3  # three processes
        start = time.perf_counter()
        with cf.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda e: e.step("hello"), envs))
        elapsed = time.perf_counter() - start
        assert [r.observation for r in results] == ["echo hello"] * 3
        assert elapsed < 1.0, f"3 steps of 0.4 s took {elapsed:.2f} s: not parallel"  # serial would be 1.2 s
    finally:
        for env in envs:
            env.close()


def test_a_crashed_worker_raises_then_restarts_on_reset() -> None:
    env = make_pooled(FLAKY, timeout_s=10)
    try:
        env.reset(0)
        first_pid = env.pid
        with pytest.raises(EnvWorkerError, match="exit code 3"):
            env.step("crash")
        with pytest.raises(EnvFinishedError, match="call reset"):
            env.step("hello")
        assert env.reset(1).startswith("start 1")
        assert env.pid != first_pid and env.worker.starts == 2
        assert env.step("hello").observation == "echo hello"
    finally:
        env.close()


def test_a_hung_step_times_out_and_the_worker_is_killed() -> None:
    env = make_pooled(FLAKY, timeout_s=0.5)
    try:
        env.reset(0)
        pid = env.pid
        assert pid is not None
        start = time.perf_counter()
        with pytest.raises(EnvWorkerTimeout) as info:
            env.step("hang")
        assert isinstance(info.value, TimeoutError)  # the rollout loop records it as "timeout"
        assert time.perf_counter() - start < 5
        assert _gone(pid)
        env.reset(2)
        assert env.step("after").observation == "echo after"
    finally:
        env.close()


def test_env_exceptions_keep_their_type_and_the_worker() -> None:
    env = make_pooled(FLAKY, timeout_s=10)
    try:
        env.reset(0)
        pid = env.pid
        with pytest.raises(ValueError, match="boom from the env") as info:
            env.step("boom")
        assert any("in the env worker" in note for note in getattr(info.value, "__notes__", []))
        assert env.pid == pid and env.step("fine").observation == "echo fine"
    finally:
        env.close()


def test_close_ends_the_child() -> None:
    env = make_pooled(FLAKY, timeout_s=10)
    pid = env.pid
    assert pid is not None and not _gone(pid)
    env.close()
    assert _gone(pid)
    with pytest.raises(EnvFinishedError, match="closed"):
        env.reset(0)
    env.close()  # idempotent


def test_a_bad_env_id_fails_in_the_parent_with_the_childs_error() -> None:
    with pytest.raises(ValueError, match="unknown env"):
        make_pooled("no-such-env-v0", timeout_s=10)


def test_rollout_records_a_worker_crash_as_an_error_episode() -> None:
    from clew.rollout import RolloutConfig, ScriptedActor, Task, collect

    tasks = [Task("tests.envs.test_pool:pooled_scripted", seed) for seed in (0, 1)]
    groups = collect(ScriptedActor("expert"), tasks, RolloutConfig(group_size=1, max_turns=4), seed=0)
    ok, crashed = groups[0].episodes[0], groups[1].episodes[0]
    assert ok.terminated and ok.error is None and ok.failure is None and len(ok.turns) == 2
    assert crashed.truncation_reason == "error" and "EnvWorkerError" in (crashed.error or "")
    assert crashed.failure == "policy"  # the action crashed the env's process during its step
    assert crashed.turns[-1].info["invalid_action"] is True and crashed.turns[-1].info["step_failure"] == "crash"


@pytest.mark.parametrize(("action", "code"), [("crash", 3), ("abort", -signal.SIGABRT)])
def test_a_worker_that_dies_by_itself_in_a_step_is_the_policys_failure(action: str, code: int) -> None:
    env = make_pooled(FLAKY, timeout_s=10)
    try:
        env.reset(0)
        with pytest.raises(EnvWorkerError, match=f"exit code {code}") as info:
            env.step(action)
        assert not isinstance(info.value, InfraError) and failure_type(info.value, in_step=True) == "policy"
    finally:
        env.close()


def test_a_worker_killed_from_outside_is_an_infra_failure() -> None:
    """SIGKILL from someone else (an operator, the OOM killer) mid-step: no action did that."""
    env = make_pooled(FLAKY, timeout_s=30, delay=5.0)
    try:
        env.reset(0)
        pid = env.pid
        assert pid is not None
        with cf.ThreadPoolExecutor(1) as pool:
            step = pool.submit(env.step, "hello")
            time.sleep(0.5)  # the child is inside the 5 s step
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(EnvWorkerKilled, match=f"exit code {-signal.SIGKILL}") as info:
                step.result(timeout=20)
        assert isinstance(info.value, EnvWorkerError) and failure_type(info.value, in_step=True) == "infra"
    finally:
        env.close()


def test_an_infra_error_that_does_not_pickle_stays_an_infra_error() -> None:
    env = make_pooled(FLAKY, timeout_s=10)
    try:
        env.reset(0)
        with pytest.raises(InfraError, match=r"LicenceDown: licence server lic\.example:27000 unreachable"):
            env.step("licence")
        assert env.step("fine").observation == "echo fine"  # the worker lives on
    finally:
        env.close()


def test_no_step_timeout_means_none() -> None:
    env = make_pooled(FLAKY, timeout_s=None, delay=0.2)
    try:
        assert env.worker.timeout_s is None and env.worker.reset_timeout_s == 300.0
        env.reset(0)
        assert env.step("slow").observation == "echo slow"
    finally:
        env.close()
