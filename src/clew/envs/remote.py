"""Envs on Ray actors: ``EnvHosts`` spreads episodes' envs over M host actors (torch-free processes).

Each host is a Ray actor holding many envs, stepping them on its own threads (``max_concurrency``), so
one slow env does not hold up the others. ``EnvHosts.make(env_id, **kwargs)`` opens an env on the next
host (round robin) and returns the same proxy classes as ``clew.envs.pool`` (exactly the typed extras
of the env, every proxy ``Closeable``), so the rollout cannot tell a Ray env from a pooled one.

Failures become exceptions from the call that met them, which the rollout records as an ``error``
episode, typed as ``clew.envs.InfraError`` describes:

- a host that dies (a crash, the OOM killer, a lost node): ``EnvHostLost``, an ``EnvWorkerError`` and
  an ``InfraError``: a host runs many episodes' envs, so its death cannot be charged to the one
  action in flight (an env whose actions can crash its process belongs in ``rollout.env_processes``,
  one process per episode, where a crash during ``step`` is the policy's). Ray restarts the host (up
  to ``max_restarts`` times); the envs it held are gone, so their episodes stay errors (an env asked
  for later raises an ``InfraError``) and new episodes open envs on the restarted host. A host Ray
  will not restart leaves the rotation; when none is left, ``EnvHosts.alive`` is False (the trainer
  then stops the run);
- a call past ``timeout_s``: ``EnvWorkerTimeout`` (the hung call keeps one host thread; Ray cannot
  interrupt a thread, so a host that hangs often should be given fewer envs or restarted); during
  ``step`` the policy's, like any step timeout;
- an exception inside the env: re-raised here with its own type.

Requires ``ray`` (``pip install 'clew[cluster]'``); imported only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Sequence
from typing import Any

from clew.envs.base import Closeable, InfraError
from clew.envs.pool import _EXTRAS, EnvWorkerError, EnvWorkerTimeout, ProcessEnv, proxy_class
from clew.envs.registry import make
from clew.plugins import loaded
from clew.workers import Worker


class EnvHostLost(EnvWorkerError, InfraError):
    """The Ray host holding the env died (or its node was lost); the episode is lost with it."""


class EnvHost(Worker):
    """A Ray actor holding envs by key (``plugins``: the driver's, so plug-in env families build here too)."""

    def __init__(self, plugins: Sequence[str] = ()) -> None:
        super().__init__(plugins)
        self.envs: dict[str, Any] = {}

    def open(self, key: str, env_id: str, kwargs: dict[str, Any]) -> list[str]:
        """Build the env; return the names of its typed extras."""
        env = make(env_id, **kwargs)
        self.envs[key] = env
        return [name for name, proto in _EXTRAS.items() if isinstance(env, proto)]

    def call(self, key: str, method: str, *args: Any) -> Any:
        self._drill()
        if key not in self.envs:
            raise InfraError(f"env {key} is not on this host (it was restarted): the episode is lost")
        return getattr(self.envs[key], method)(*args)

    def close(self, key: str) -> None:
        env = self.envs.pop(key, None)
        if isinstance(env, Closeable):
            env.close()


class RemoteEnvWorker:
    """The driver's handle on one env of a host: what ``ProcessEnv`` needs from a worker."""

    pid: int | None = None

    def __init__(
        self, host: Any, key: str, env_id: str, kwargs: dict[str, Any], timeout_s: float | None, on_lost: Any = None
    ) -> None:
        import ray

        self._ray, self.host, self.key, self.env_id, self.timeout_s = ray, host, key, env_id, timeout_s
        self.on_lost = on_lost  # called with the host when Ray will not restart it
        self.extras: list[str] = self._get(host.open.remote(key, env_id, kwargs), "open")

    def call(self, method: str, *args: Any) -> Any:
        return self._get(self.host.call.remote(self.key, method, *args), method)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the host may be gone
            self.host.close.remote(self.key)

    def _get(self, ref: Any, method: str) -> Any:
        ray = self._ray
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise EnvWorkerTimeout(f"env {self.env_id} {method}() exceeded {self.timeout_s}s on its Ray host") from None
        except ray.exceptions.RayActorError as exc:
            if isinstance(exc, ray.exceptions.ActorDiedError) and self.on_lost is not None:
                self.on_lost(self.host)
            raise EnvHostLost(f"the Ray host of env {self.env_id} died during {method}(): {exc}") from None
        except ray.exceptions.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None


class EnvHosts:
    """M env host actors; ``make`` opens an env on the next one."""

    def __init__(self, n: int, timeout_s: float | None = 60.0, max_restarts: int = 3, envs_per_host: int = 64) -> None:
        import ray

        remote: Any = ray.remote(EnvHost)
        options = {"num_cpus": 0, "max_restarts": max_restarts, "max_concurrency": envs_per_host}
        self.hosts = [remote.options(**options).remote(loaded()) for _ in range(n)]
        self.timeout_s = timeout_s
        self._next = itertools.count()
        self._lost: set[int] = set()  # ids of hosts Ray will not restart
        try:
            ray.get([h.pid.remote() for h in self.hosts])  # started
        except Exception:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return len(self._lost) < len(self.hosts)

    def make(self, env_id: str, **kwargs: Any) -> ProcessEnv:
        """Open ``env_id`` on the next host still in the rotation."""
        live = [h for h in self.hosts if id(h) not in self._lost]
        if not live:
            raise EnvWorkerError(f"every env host is lost (each died more than its restarts); cannot open {env_id}")
        i = next(self._next)
        key = f"{os.getpid()}-{i}"
        worker = RemoteEnvWorker(live[i % len(live)], key, env_id, kwargs, self.timeout_s, self._lose)
        return proxy_class(tuple(worker.extras))(worker)  # type: ignore[arg-type]

    def _lose(self, host: Any) -> None:
        self._lost.add(id(host))

    def close(self) -> None:
        import ray

        for host in self.hosts:
            ray.kill(host, no_restart=True)
