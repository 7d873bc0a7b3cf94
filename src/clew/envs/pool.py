"""Envs in worker processes: an ``Env`` proxy whose calls run in a child process, with per-call timeouts.

``make_pooled(env_id, timeout_s, **kwargs)`` starts a child process that builds the env with
``clew.envs.make(env_id, **kwargs)`` and returns a ``ProcessEnv`` that forwards ``reset``, ``step``,
``state_key``, ``expert_action``, ``valid_actions``, ``gold_reply``, ``snapshot``/``restore`` and ``close`` to it.
Slow envs, and envs holding a JVM, then step in parallel (one process each) without a GIL or a shared JVM in the way.

Failures become exceptions from the call that met them, which the rollout loop records as an
``error`` episode (a ``TimeoutError`` as ``timeout``), typed as ``clew.envs.InfraError`` describes
(during ``step``: the policy's unless the exception is an ``InfraError``; elsewhere: infra):

- a call running past its timeout: the child is killed and the call raises ``EnvWorkerTimeout``
  (a ``TimeoutError``);
- the child dying by itself (a crash, a segfault, ``os._exit``): the call raises ``EnvWorkerError``;
- the child killed from outside (SIGKILL, SIGTERM or SIGHUP from someone else, the OOM killer
  included: it cannot be told apart): ``EnvWorkerKilled``, an ``InfraError``. An env whose actions
  can exhaust memory should cap it (``resource.setrlimit``) so that they fail inside ``step``;
- an exception inside the env: re-raised here with its type (``EnvFinishedError`` included) and a
  note holding the child's traceback.

After a kill or a crash the episode is lost: ``step`` raises ``EnvFinishedError`` until ``reset``,
which starts a fresh child (a new process, a new env) and goes on. ``close()`` ends the child
(letting a ``Closeable`` env release its resources first) and is also run when the proxy is
garbage-collected or the interpreter exits.

The proxy has exactly the typed extras of the env it wraps: ``make_pooled`` asks the child which of
``HasStateKey``, ``HasExpert``, ``HasValidActions``, ``HasGoldReply``, ``HasSnapshot`` and ``HasSeats`` its env
satisfies and builds the proxy from a class with just those methods, so ``isinstance`` checks on it tell the
truth. Every proxy is ``Closeable``. A child loads the driver's plug-ins (``clew.plugins.loaded()``) before it
builds its env, so plug-in env families work in a pool. Children start with the ``forkserver`` method (``spawn``
where there is none), never ``fork``: the parent may hold torch threads. Ctrl-C is left to the parent (children
ignore SIGINT).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import pickle
import signal
import threading
import traceback
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from clew.envs.base import (
    Closeable,
    EnvFinishedError,
    HasExpert,
    HasGoldReply,
    HasSeats,
    HasSnapshot,
    HasStateKey,
    HasValidActions,
    InfraError,
    StepResult,
)
from clew.plugins import load_plugins, loaded

_EXTRAS: dict[str, type] = {
    "state_key": HasStateKey, "expert_action": HasExpert, "valid_actions": HasValidActions, "gold_reply": HasGoldReply,
    "snapshot": HasSnapshot, "seats": HasSeats,
}  # fmt: skip
_KILLED_FROM_OUTSIDE = frozenset({-signal.SIGKILL, -signal.SIGTERM, -signal.SIGHUP})  # exit codes of killed children


class EnvWorkerError(RuntimeError):
    """The env's worker process died; the episode it was running is lost."""


class EnvWorkerKilled(EnvWorkerError, InfraError):
    """The env's worker process was killed from outside (a signal it did not send itself): not the action's doing."""


class EnvWorkerTimeout(TimeoutError):
    """A call into the env's worker ran past its timeout; the worker was killed."""


def start_method() -> str:
    """``forkserver`` where the platform has it (Linux), else ``spawn``."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


class EnvWorker:
    """One child process holding one env; ``call`` runs a method there (one call at a time)."""

    def __init__(self, env_id: str, kwargs: dict[str, Any], timeout_s: float | None, reset_timeout_s: float) -> None:
        if (timeout_s is not None and timeout_s <= 0) or reset_timeout_s <= 0:
            raise ValueError(f"env worker timeouts must be > 0, got timeout_s={timeout_s}, reset={reset_timeout_s}")
        self.env_id, self.kwargs = env_id, dict(kwargs)
        self.timeout_s, self.reset_timeout_s = timeout_s, reset_timeout_s
        self.starts = 0
        self._proc: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.extras: tuple[str, ...] = tuple(self._start())

    @property
    def pid(self) -> int | None:
        """The child's process id, or None while no child runs (after a crash, before the next call)."""
        return int(self._proc.pid) if self._proc is not None else None

    def call(self, method: str, *args: Any) -> Any:
        """Run ``env.method(*args)`` in the child (starting a new child first if the last one died)."""
        timeout = self.reset_timeout_s if method == "reset" else self.timeout_s
        with self._lock:
            if self._conn is None:
                self._start()
            assert self._conn is not None
            with contextlib.suppress(BrokenPipeError, OSError):  # a child that is gone: _receive says how
                self._conn.send((method, args))
            return self._receive(method, timeout)

    def close(self) -> None:
        """Ask the child to close its env and exit; kill it if it does not within 5 s."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.send(("close", ()))
                self._conn.poll(5.0)
            except (BrokenPipeError, OSError):
                pass
            self._stop(grace_s=5.0)

    def _start(self) -> list[str]:
        ctx: Any = mp.get_context(start_method())
        if start_method() == "forkserver":
            ctx.set_forkserver_preload(["clew.envs"])
        parent, child = ctx.Pipe()
        args = (child, self.env_id, self.kwargs, loaded())  # the driver's plug-ins: their env families build here
        proc = ctx.Process(target=_serve, args=args, daemon=True, name="clew-env")
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.starts += 1
        try:
            extras: list[str] = self._receive("start", self.reset_timeout_s)
        except Exception:
            self._stop(grace_s=5.0)
            raise
        return extras

    def _receive(self, method: str, timeout: float | None) -> Any:
        assert self._conn is not None
        if not self._conn.poll(timeout) and self._proc.is_alive():
            self._stop()
            raise EnvWorkerTimeout(f"env {self.env_id} {method}() exceeded {timeout}s; its worker was killed")
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError):
            code = self._stop(grace_s=5.0)  # its pipe is closed: let it finish dying, so the exit code is its own
            error = EnvWorkerKilled if code in _KILLED_FROM_OUTSIDE else EnvWorkerError
            raise error(f"env {self.env_id} worker died during {method}() (exit code {code})") from None
        if status == "error":
            raise value
        return value

    def _stop(self, grace_s: float = 0.0) -> int | None:
        """End the child (after ``grace_s`` to exit by itself); return its exit code."""
        proc, conn = self._proc, self._conn
        self._proc, self._conn = None, None
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        proc.join(grace_s)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
        return proc.exitcode  # type: ignore[no-any-return]


class ProcessEnv:
    """An env proxy whose calls run in an ``EnvWorker``; build it with ``make_pooled``."""

    def __init__(self, worker: EnvWorker) -> None:
        self.worker = worker
        self._lost = False  # the worker died or was killed mid-episode: step needs a reset first
        self._finalizer = weakref.finalize(self, worker.close)

    def reset(self, seed: int) -> str:
        self._lost = False
        return str(self._call("reset", seed))

    def step(self, action: str) -> StepResult:
        result: StepResult = self._call("step", action)
        return result

    def close(self) -> None:
        self._finalizer()

    @property
    def pid(self) -> int | None:
        """The worker process's id (None after a crash until the next call starts a new one)."""
        return self.worker.pid

    def _call(self, method: str, *args: Any) -> Any:
        if not self._finalizer.alive:
            raise EnvFinishedError(f"{self.worker.env_id} (pooled) was closed")
        if self._lost and method != "reset":
            raise EnvFinishedError(f"{self.worker.env_id} (pooled): the worker was restarted; call reset(seed)")
        try:
            return self.worker.call(method, *args)
        except (EnvWorkerError, EnvWorkerTimeout):
            self._lost = True
            raise


class _StateKeyProxy(ProcessEnv):
    def state_key(self) -> str | None:
        key: str | None = self._call("state_key")
        return key


class _ExpertProxy(ProcessEnv):
    def expert_action(self) -> str:
        return str(self._call("expert_action"))


class _ValidActionsProxy(ProcessEnv):
    def valid_actions(self) -> list[str]:
        return list(self._call("valid_actions"))


class _GoldReplyProxy(ProcessEnv):
    def gold_reply(self) -> str | None:
        reply: str | None = self._call("gold_reply")
        return reply


class _SnapshotProxy(ProcessEnv):
    def snapshot(self) -> bytes:
        return bytes(self._call("snapshot"))

    def restore(self, state: bytes) -> None:
        self._lost = False  # a restore sets the whole state, as a reset does (also in a restarted worker)
        self._call("restore", state)


class _SeatsProxy(ProcessEnv):
    def seats(self) -> int:
        return int(self._call("seats"))

    def to_act(self) -> int:
        return int(self._call("to_act"))

    def verdicts(self) -> list[float]:
        return [float(v) for v in self._call("verdicts")]


_MIXINS: dict[str, type[ProcessEnv]] = {
    "state_key": _StateKeyProxy,
    "expert_action": _ExpertProxy,
    "valid_actions": _ValidActionsProxy,
    "gold_reply": _GoldReplyProxy,
    "snapshot": _SnapshotProxy,
    "seats": _SeatsProxy,
}
_CLASSES: dict[tuple[str, ...], type[ProcessEnv]] = {(): ProcessEnv}


def proxy_class(extras: tuple[str, ...]) -> type[ProcessEnv]:
    """The ``ProcessEnv`` subclass with exactly the methods named in ``extras`` (cached)."""
    extras = tuple(sorted(extras))
    if extras not in _CLASSES:
        bases = tuple(_MIXINS[name] for name in extras)
        name = "ProcessEnv[" + ",".join(extras) + "]"
        _CLASSES[extras] = type(name, bases, {"__module__": __name__})
    return _CLASSES[extras]


def make_pooled(
    env_id: str, timeout_s: float | None = 60.0, reset_timeout_s: float | None = None, **kwargs: Any
) -> ProcessEnv:
    """Build ``env_id`` (with ``kwargs``) in a worker process; return its proxy.

    Args:
        env_id: any id ``clew.envs.make`` takes (a registered id, a family id, ``module:Class``).
        timeout_s: limit for ``step`` and the other calls (None: no limit; the rollout passes
            ``rollout.env_step_timeout_s``).
        reset_timeout_s: limit for starting the worker and for ``reset``, which may load a JVM or
            generate a game (default: ``max(timeout_s, 300)``).
        **kwargs: the env's constructor kwargs (picklable).
    """
    worker = EnvWorker(env_id, kwargs, timeout_s, reset_timeout_s or max(timeout_s or 0.0, 300.0))
    return proxy_class(worker.extras)(worker)


# --- the child ------------------------------------------------------------------------------
def _serve(conn: Connection, env_id: str, kwargs: dict[str, Any], plugins: Sequence[str] = ()) -> None:
    """The worker's loop: load the run's plug-ins, build the env, report its extras, then answer calls until
    ``close``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from clew.envs.registry import make

    try:
        load_plugins(plugins)
        env = make(env_id, **kwargs)
    except Exception as exc:
        conn.send(("error", _portable(exc)))
        return
    conn.send(("ok", [name for name, proto in _EXTRAS.items() if isinstance(env, proto)]))
    try:
        _answer(conn, env)
    finally:
        if isinstance(env, Closeable):
            env.close()


def _answer(conn: Connection, env: Any) -> None:
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return
        if method == "close":
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", getattr(env, method)(*args)))
        except Exception as exc:
            conn.send(("error", _portable(exc)))


def _portable(exc: Exception) -> Exception:
    """The exception with the child's traceback as a note, or (if it does not pickle) a RuntimeError, an
    ``InfraError`` for one, so that its failure type survives."""
    note = "in the env worker:\n" + "".join(traceback.format_exception(exc)).rstrip()
    try:
        exc.add_note(note)
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        kind = InfraError if isinstance(exc, InfraError) else RuntimeError
        plain = kind(f"{type(exc).__name__}: {exc}")
        plain.add_note(note)
        return plain
