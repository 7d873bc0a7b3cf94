"""Env hosts' failures typed by cause: a host that dies, and the envs it took with it, are infra."""

from __future__ import annotations

from typing import Any

import pytest

from clew.envs import InfraError, failure_type
from clew.envs.remote import EnvHostLost, EnvHosts


def test_a_dead_host_and_the_envs_it_lost_are_infra_failures(ray_cluster: Any) -> None:
    """A host holds many episodes' envs: its death is charged to none of their actions."""
    hosts = EnvHosts(1, timeout_s=60.0, max_restarts=1)
    try:
        stepping, idle = hosts.make("keydoor-v0", width=4, height=4), hosts.make("keydoor-v0", width=4, height=4)
        stepping.reset(1)
        idle.reset(2)
        ray_cluster.get(hosts.hosts[0].fail_next.remote())
        with pytest.raises(EnvHostLost, match="died") as died:
            stepping.step("up")
        assert failure_type(died.value, in_step=True) == "infra"
        with pytest.raises(InfraError, match="is not on this host") as gone:  # Ray restarted the host without it
            idle.step("up")
        assert failure_type(gone.value, in_step=True) == "infra"
    finally:
        hosts.close()
