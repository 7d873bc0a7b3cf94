"""A JVM behind py4j for the ScienceWorld and TextWorldExpress adapters: started lazily, shared or owned.

Both packages ship a jar and start ``java`` through py4j. Their Python wrappers start one JVM per
object and step it through helpers that cost extra JVM round trips (ScienceWorld lists every valid
action after each step), so the adapters start the JVM here and call the jar's ``PythonInterface``
directly.

``JavaServer.acquire(jar, ...)`` returns a process-wide JVM for that jar (``shared``: one per process,
reference-counted, shut down when its last user releases it) or a new one (``own``). Every call into a
JVM goes through its ``lock``: ScienceWorld's worlds stay deterministic when calls are serialised,
but not when two threads run in it at once (measured: two episodes in one JVM on two threads gave
different transcripts). For parallel stepping, run envs in worker processes (``clew.envs.pool``).
The JVM exits with this process (py4j's ``die_on_exit``) and on ``close``.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import weakref
from typing import Any

from clew.envs.base import normalize_action

_SHARED: dict[str, JavaServer] = {}
_SHARED_LOCK = threading.Lock()


class JavaServer:
    """One JVM running ``jar`` behind a py4j gateway; ``jvm`` is the gateway's JVM view."""

    def __init__(self, jar: str, cwd: str, javaopts: tuple[str, ...] = (), shared: bool = False) -> None:
        if shutil.which("java") is None:
            raise RuntimeError(f"{jar} needs `java` on PATH (Debian: apt-get install default-jre-headless)")
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

        port, proc = launch_gateway(classpath=jar, die_on_exit=True, cwd=cwd, javaopts=list(javaopts), return_proc=True)
        self.gateway = JavaGateway(gateway_parameters=GatewayParameters(auto_field=True, port=port), java_process=proc)
        self.process = proc
        self.jar, self.shared = jar, shared
        self.lock = threading.RLock()
        self.users = 0
        self._finalizer = weakref.finalize(self, _shutdown, self.gateway, proc)

    @property
    def jvm(self) -> Any:
        return self.gateway.jvm

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self.process.poll() is None

    @classmethod
    def acquire(cls, jar: str, cwd: str, javaopts: tuple[str, ...] = (), shared: bool = True) -> JavaServer:
        """The process's shared JVM for ``jar`` (started if needed) or, with ``shared=False``, a new one."""
        if not shared:
            server = cls(jar, cwd, javaopts)
            server.users = 1
            return server
        with _SHARED_LOCK:
            found = _SHARED.get(jar)
            if found is None or not found.alive:
                found = _SHARED[jar] = cls(jar, cwd, javaopts, shared=True)
            found.users += 1
            return found

    def release(self) -> None:
        """Drop one user; the last one shuts the JVM down."""
        with _SHARED_LOCK:
            self.users -= 1
            if self.users > 0:
                return
            if self.shared and _SHARED.get(self.jar) is self:
                del _SHARED[self.jar]
        self.close()

    def close(self) -> None:
        """Shut the gateway and the JVM down now (idempotent)."""
        self._finalizer()


class JvmLease:
    """The JVM one env is using: the server, the env's API object in it, and a finalizer that releases the
    server when the env is closed or garbage-collected."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.server: JavaServer | None = None
        self.api: Any = None
        self._release: weakref.finalize | None = None

    def hold(self, owner: object, server: JavaServer, api: Any) -> None:
        self.server, self.api = server, api
        self._release = weakref.finalize(owner, server.release)

    @property
    def usable(self) -> bool:
        return self.server is not None and self.server.alive

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else None

    def live(self) -> tuple[JavaServer, Any]:
        """(server, api); a JVM that was closed or died is an error that ends the episode."""
        if self.server is None or not self.server.alive:
            raise RuntimeError(f"the {self.label} JVM is gone (closed or crashed); call reset(seed)")
        return self.server, self.api

    def release(self) -> None:
        if self._release is not None:
            self._release()
        self.server, self.api, self._release = None, None, None


class JvmEnv:
    """What the JVM adapters share: their ``JvmLease`` (``_jvm``), its pid, and the live check that ends an
    episode whose JVM died (``_finished``)."""

    _jvm: JvmLease
    _finished: bool

    @property
    def jvm_pid(self) -> int | None:
        """The JVM's process id while this env holds one."""
        return self._jvm.pid

    def _live(self) -> tuple[JavaServer, Any]:
        """The JVM this episode runs in; one that died takes the episode with it."""
        if not self._jvm.usable:
            self._finished = True
        return self._jvm.live()


def _shutdown(gateway: Any, proc: Any) -> None:
    """Close the gateway; the JVM exits when its stdin closes (``die_on_exit``), or is killed after 5 s."""
    with contextlib.suppress(Exception):  # the JVM may already be gone
        gateway.shutdown()
    if proc.poll() is None:
        try:
            proc.stdin.close()
            proc.wait(timeout=5)
        except Exception:
            proc.kill()
            proc.wait(timeout=5)


class GoldPath:
    """The expert of the JVM adapters: a gold action sequence followed while the agent stays on it.

    ``next`` indexes the gold action to play now. A step that plays it moves along; any other step
    keeps the agent on the path when the state key afterwards is one the path has already been in
    (an invalid command, ``look around``, ``inventory``, or a detour that came back), and moves
    ``next`` to where that state was. Otherwise the agent is off the path: neither package can
    re-plan from a mid-episode state (their gold agents run at load time from the initial world),
    so ``expert`` keeps proposing the next gold action from where the agent left (best effort; it
    may no longer apply) and ``on_path`` says so. Past the end of the path it proposes ``fallback``.
    """

    def __init__(self, actions: list[str], key: str, fallback: str) -> None:
        self.actions, self.fallback = actions, fallback
        self.next, self.on_path = 0, True
        self._seen = {key: 0}  # state key -> the latest gold index at which the path was in it

    def expert(self) -> str:
        return self.actions[self.next] if self.next < len(self.actions) else self.fallback

    def update(self, action: str, key: str) -> None:
        """Record the agent's (normalised) ``action`` and the state key it led to."""
        if self.on_path and self.next < len(self.actions) and action == normalize_action(self.actions[self.next]):
            self.next += 1
            self._seen[key] = self.next
        elif key in self._seen:
            self.next, self.on_path = self._seen[key], True
        else:
            self.on_path = False
