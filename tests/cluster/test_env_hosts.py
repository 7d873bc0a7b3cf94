"""Envs on Ray host actors: the same episodes as in-process envs, typed extras, and failures as errors."""

from __future__ import annotations

from typing import Any

import pytest

from clew.envs import Closeable, HasExpert, HasStateKey, make
from clew.envs.base import EnvFinishedError
from clew.envs.pool import EnvWorkerError
from clew.envs.remote import EnvHosts
from clew.rollout import RolloutConfig, ScriptedActor, Task, collect


@pytest.fixture()
def hosts(ray_cluster: Any) -> Any:
    hosts = EnvHosts(2, timeout_s=60.0, max_restarts=1)
    yield hosts
    hosts.close()


def test_a_remote_env_steps_like_a_local_one(hosts: EnvHosts) -> None:
    remote, local = hosts.make("keydoor-v0", width=4, height=4), make("keydoor-v0", width=4, height=4)
    assert isinstance(remote, HasStateKey) and isinstance(remote, HasExpert) and isinstance(remote, Closeable)
    assert remote.reset(3) == local.reset(3)
    done = False
    while not done:
        action = local.expert_action()  # type: ignore[attr-defined]
        assert remote.expert_action() == action
        result = local.step(action)
        assert remote.step(action) == result
        done = result.terminated or result.truncated
        if not done:
            assert remote.state_key() == local.state_key()  # type: ignore[attr-defined]
    remote.close()


def test_an_env_error_keeps_its_type(hosts: EnvHosts) -> None:
    env = hosts.make("keydoor-v0", width=3, height=3, max_steps=1)
    env.reset(0)
    env.step("up")
    with pytest.raises(EnvFinishedError):
        env.step("up")


def test_collect_over_hosts_equals_collect_in_process(hosts: EnvHosts) -> None:
    actor = ScriptedActor("expert", noise=0.5)
    cfg = RolloutConfig(group_size=3, max_turns=8)
    tasks = [Task("keydoor-v0", s, {"width": 4, "height": 4}) for s in (1, 2)]
    remote = collect(actor, tasks, cfg, 7, env_factory=hosts.make)
    local = collect(actor, tasks, cfg, 7)
    assert remote == local


def test_a_dead_host_fails_its_envs_and_serves_new_ones(hosts: EnvHosts, ray_cluster: Any) -> None:
    first = hosts.make("keydoor-v0", width=4, height=4)  # host 0
    first.reset(1)
    ray_cluster.get(hosts.hosts[0].fail_next.remote())
    with pytest.raises(EnvWorkerError, match="died"):
        first.step("up")
    with pytest.raises(EnvFinishedError):  # the episode is lost
        first.step("up")
    hosts.make("keydoor-v0", width=4, height=4)  # host 1
    again = hosts.make("keydoor-v0", width=4, height=4)  # host 0, restarted by Ray
    assert again.reset(1) == make("keydoor-v0", width=4, height=4).reset(1)


def test_hosts_ray_will_not_restart_leave_the_rotation(ray_cluster: Any) -> None:
    hosts = EnvHosts(2, timeout_s=60.0, max_restarts=0)
    try:
        for host in range(2):
            env = hosts.make("keydoor-v0", width=4, height=4)  # hosts 0 then 1 (round robin over live hosts)
            env.reset(1)
            ray_cluster.get(hosts.hosts[host].fail_next.remote())
            with pytest.raises(EnvWorkerError, match="died"):
                env.step("up")
            if host == 0:
                assert hosts.alive
                for _ in range(3):  # every new env goes to host 1
                    assert hosts.make("keydoor-v0", width=4, height=4).reset(2)
        assert not hosts.alive
        with pytest.raises(EnvWorkerError, match="every env host is lost"):
            hosts.make("keydoor-v0", width=4, height=4)
    finally:
        hosts.close()
