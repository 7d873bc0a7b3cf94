"""Time-bounded scoring: run a verifier in a worker process that is killed when it overruns its limit.

Env steps run on threads (the rollout's ``EnvSteps``), and a verifier fed a pathological answer
(``10**10**10`` to math-verify, a huge expression to sympy) can hold the GIL for hours: no thread,
signal or SIGALRM can stop it, and the whole scheduler stalls. So every scorer runs in a
``VerifierPool`` worker, a plain Python process that reads pickled jobs from a pipe:

- **Prepare, then score.** A job names a ``Prepare`` (import math-verify, build a reasoning-gym
  dataset): a worker runs it once, under the generous ``start_timeout_s``, and keeps the result;
  only the scorer call itself is held to the caller's ``timeout_s``. A warm call costs a pipe round
  trip (well under a millisecond plus the scorer).
- **Killed on timeout.** Past its limit the worker gets SIGKILL and ``call`` returns
  ``Bounded(timed_out=True)``; the next call starts a fresh worker. A worker that dies mid-job (out
  of memory, a crash in C) is reported as an ``error``.
- **Any thread, no leaks.** ``call`` is thread-safe and blocks only its own thread; idle workers
  (at most ``max_idle``) are reused. Workers die with this process: ``close()`` runs at exit, and
  each worker asks the kernel for SIGKILL when its parent goes (started from one long-lived thread,
  since Linux ties that signal to the thread that forked). A forked child starts its own workers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from clew.envs.base import InfraError

_HEADER = struct.Struct("!I")
_LAUNCH = "from clew.envs.verify import serve; serve()"


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Prepare:
    """What a worker builds once and passes to every scorer: ``fn(*args)`` (module-level, picklable, hashable)."""

    fn: Callable[..., Any] = _nothing
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Bounded:
    """A scorer call's result: its ``value``, or the ``error`` it raised, or ``timed_out``."""

    value: Any = None
    error: str | None = None
    timed_out: bool = False


class VerifierUnavailable(InfraError, RuntimeError):
    """A worker did not start or could not prepare (the environment is broken, not the answer): an ``infra``
    failure, so the episode leaves credit and baselines instead of being scored as the policy's fault."""


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    prepared: set[Prepare] = field(default_factory=set)
    owner_pid: int = field(default_factory=os.getpid)


class VerifierPool:
    """Worker processes that run scorers under a time limit; see the module docstring.

    Args:
        max_idle: workers kept alive between calls.
        start_timeout_s: limit for a worker to start and to run a ``Prepare``.
    """

    def __init__(self, max_idle: int = 8, start_timeout_s: float = 120.0) -> None:
        if max_idle < 0 or not start_timeout_s > 0:
            raise ValueError(f"max_idle must be >= 0 and start_timeout_s > 0, got {max_idle}, {start_timeout_s}")
        self.max_idle, self.start_timeout_s = max_idle, start_timeout_s
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._spawner: ThreadPoolExecutor | None = None
        self._spawner_pid = -1
        atexit.register(self.close)

    def call(
        self, scorer: Callable[..., Any], args: tuple[Any, ...], timeout_s: float, prepare: Prepare = Prepare()
    ) -> Bounded:
        """``scorer(prepare.fn(*prepare.args), *args)`` in a worker, stopped after ``timeout_s`` seconds.

        Raises:
            ValueError: ``timeout_s`` is not a positive finite number.
            VerifierUnavailable: no worker could start or run ``prepare``.
        """
        check_timeout("timeout_s", timeout_s)
        worker = self._ready(prepare)
        try:
            _send(worker, ("score", prepare, scorer, args))
            reply = _receive(worker, time.monotonic() + timeout_s)
        except TimeoutError:
            _kill(worker)
            threading.Thread(target=self._rewarm, args=(prepare,), daemon=True).start()  # not in the next step
            return Bounded(timed_out=True)
        except (EOFError, OSError):
            _kill(worker)
            return Bounded(error=f"the verifier process died (exit code {worker.proc.returncode})")
        self._give_back(worker)
        return Bounded(value=reply[1]) if reply[0] == "ok" else Bounded(error=str(reply[1]))

    def warm(self, prepare: Prepare = Prepare()) -> None:
        """Leave an idle worker that has run ``prepare``. Envs call it in ``reset`` so that a worker's start-up
        (seconds: importing sympy, building a dataset) is never paid inside a step's time limit.

        Raises:
            VerifierUnavailable: no worker could start or run ``prepare`` (an ``infra`` failure in ``reset``).
        """
        self._give_back(self._ready(prepare))

    def _rewarm(self, prepare: Prepare) -> None:
        """Replace a worker killed on a timeout, in the background; a failure surfaces at the next call."""
        with contextlib.suppress(VerifierUnavailable):
            self.warm(prepare)

    def close(self) -> None:
        """Kill the idle workers (a later ``call`` starts new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            if worker.owner_pid == os.getpid():
                _kill(worker)

    # --- workers ------------------------------------------------------------------------------
    def _ready(self, prepare: Prepare) -> _Worker:
        """An idle worker that has run ``prepare`` (a fresh one if none is left or the idle one died)."""
        for _ in range(2):
            worker = self._take() or self._start()
            try:
                if prepare not in worker.prepared:
                    _send(worker, ("prepare", prepare, None, ()))
                    reply = _receive(worker, time.monotonic() + self.start_timeout_s)
                    if reply[0] != "ok":
                        _kill(worker)
                        raise VerifierUnavailable(f"the verifier could not prepare {prepare.fn.__name__}: {reply[1]}")
                    worker.prepared.add(prepare)
                return worker
            except (EOFError, OSError, TimeoutError):
                _kill(worker)  # an idle worker may have died since its last job; try once with a fresh one
        raise VerifierUnavailable(f"no verifier process came up within {self.start_timeout_s:.0f} s")

    def _take(self) -> _Worker | None:
        with self._lock:
            pid = os.getpid()
            self._idle = [w for w in self._idle if w.owner_pid == pid and w.proc.poll() is None]
            return self._idle.pop() if self._idle else None

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle and worker.owner_pid == os.getpid():
                self._idle.append(worker)
                return
        _kill(worker)

    def _start(self) -> _Worker:
        with self._lock:
            if self._spawner is None or self._spawner_pid != os.getpid():
                self._spawner = ThreadPoolExecutor(1, thread_name_prefix="clew-verifier-spawn")
                self._spawner_pid = os.getpid()
            spawner = self._spawner
        worker = _Worker(spawner.submit(_popen).result())
        try:
            if _receive(worker, time.monotonic() + self.start_timeout_s)[0] == "ready":
                return worker
        except (EOFError, OSError, TimeoutError):
            pass
        _kill(worker)
        raise VerifierUnavailable(f"the verifier process did not start (exit code {worker.proc.returncode})")


def check_timeout(name: str, value: float) -> None:
    """A time limit must be a positive finite number of seconds."""
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value}")


def _popen() -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "CLEW_VERIFIER_PARENT": str(os.getpid()),
    }
    return subprocess.Popen(
        [sys.executable, "-c", _LAUNCH], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True
    )


def _send(worker: _Worker, message: tuple[Any, ...]) -> None:
    stdin = worker.proc.stdin
    assert stdin is not None
    data = pickle.dumps(message)
    stdin.write(_HEADER.pack(len(data)) + data)
    stdin.flush()


def _receive(worker: _Worker, deadline: float) -> tuple[Any, ...]:
    """One reply from the worker; ``TimeoutError`` past ``deadline``, ``EOFError`` when it exited."""
    assert worker.proc.stdout is not None
    fd = worker.proc.stdout.fileno()
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    reply: tuple[Any, ...] = pickle.loads(_read_exact(fd, size, deadline))
    return reply


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    data = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
    return bytes(data)


def _kill(worker: _Worker) -> None:
    proc = worker.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# --- the worker side --------------------------------------------------------------------------
def serve() -> None:
    """A worker's loop: read a job, prepare or score, write the reply; exit when the pipe closes."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a scorer that prints must not corrupt the replies
    _die_with_parent()
    import logging

    logging.disable(logging.WARNING)  # math-verify warns on every call made without its own timeouts
    prepared: dict[Prepare, Any] = {}
    _write(replies, ("ready", None))
    jobs = sys.stdin.buffer
    while header := jobs.read(_HEADER.size):
        kind, prepare, scorer, args = pickle.loads(jobs.read(_HEADER.unpack(header)[0]))
        try:
            if prepare not in prepared:
                prepared[prepare] = prepare.fn(*prepare.args)
            reply = ("ok", None if kind == "prepare" else scorer(prepared[prepare], *args))
            _write(replies, reply)
        except Exception as exc:  # the scorer's exception is the answer's verdict, reported to the caller
            _write(replies, ("error", f"{type(exc).__name__}: {exc}"[:500]))


def _write(stream: IO[bytes], reply: tuple[Any, ...]) -> None:
    data = pickle.dumps(reply)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _die_with_parent() -> None:
    """Ask Linux for SIGKILL when the parent exits (PR_SET_PDEATHSIG); exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    if str(os.getppid()) != os.environ.get("CLEW_VERIFIER_PARENT", str(os.getppid())):
        os._exit(0)


_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> VerifierPool:
    """The process-wide pool behind ``call_bounded``."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = VerifierPool()
        return _POOL


def call_bounded(
    scorer: Callable[..., Any], args: tuple[Any, ...], timeout_s: float, prepare: Prepare = Prepare()
) -> Bounded:
    """``scorer(prepared, *args)`` in the default pool's worker, within ``timeout_s``; see ``VerifierPool.call``."""
    return default_pool().call(scorer, args, timeout_s, prepare)


def warm_bounded(prepare: Prepare = Prepare()) -> None:
    """``VerifierPool.warm`` on the default pool: call it from an env's ``reset``."""
    default_pool().warm(prepare)
