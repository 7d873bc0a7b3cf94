"""A local Ray cluster of processes, shared by the cluster tests (skipped where Ray is not installed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the cluster tests need Ray: pip install 'clew[cluster]'")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """Ray on this machine with room for every test's actors (logical CPUs; the machine has 2 cores)."""
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
