"""A sandboxed Python interpreter for tool calls: ``run(code) -> ToolResult`` inside bubblewrap.

Issue 14: tool-integrated reasoning runs thousands of programs an hour written by a policy that is
optimised to get reward by any means, so each call gets a real sandbox (``clew.tools.sandbox``
lists what it isolates) and the call itself can never hang or flood the caller:

- **Its own process**, started with ``start_new_session`` so bwrap leads a process group. When
  the program exits, times out or overflows, bwrap's child (the sandbox's pid-namespace init) gets
  SIGKILL and the call returns only once it has exited, by which time the kernel has killed
  everything left in the namespace: a background process the code leaves behind never outlives the
  call (``clew.tools._worker``).
- **Output capped**: stdout and stderr are read concurrently, at most ``max_output_bytes`` each is
  kept; a program that prints more is stopped and its result marked ``truncated``.
- **Warm pool**: a ``Sandbox`` keeps ``pool_size`` workers already started (bwrap + python, blocked
  reading their job from stdin, about the cost of a cold start saved per call). Each worker runs
  exactly one job and is then discarded; taking one immediately starts its replacement, which boots
  while the current job runs. Limits travel with the job (the bootstrap applies them), so any worker
  serves any call; nothing of one call's process, files or memory is ever seen by another.
- **Refusal**: no bwrap, or a sandbox that does not come up, raises ``SandboxUnavailable`` naming
  the install step. ``unsafe_local=True`` runs the same bootstrap in a plain subprocess (temp dir,
  empty environment, rlimits, own session) and warns: it is for trusted code and debugging only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from clew.tools._worker import SandboxUnavailable, Worker, collect, popen, stop, wait_ready
from clew.tools.sandbox import (
    INSTALL_HINT,
    SandboxConfig,
    bwrap_command,
    find_bwrap,
    find_interpreter,
    interpreter_command,
    seccomp_fd,
    seccomp_supported,
)

BOOTSTRAP = (Path(__file__).parent / "_bootstrap.py").read_text()


class UnsafeLocalWarning(RuntimeWarning):
    """Model code is about to run outside any sandbox (``unsafe_local=True``)."""


@dataclass(frozen=True)
class ToolResult:
    """What one call of the interpreter produced.

    ``exit_code`` is the program's exit status: -9 when clew stopped it (timeout, too much output);
    a program killed by signal N reports 128 + N through bwrap (-N with ``unsafe_local``).
    ``timed_out`` and ``truncated`` say why a call was stopped; ``wall_s`` is the time from handing
    over the code to the end of the call.
    """

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    truncated: bool = False
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.truncated


def check_files(files: Mapping[str, str] | None) -> dict[str, str]:
    """Input files as relative POSIX paths inside the scratch dir; absolute paths and ``..`` are refused."""
    out: dict[str, str] = {}
    for name, text in (files or {}).items():
        path = PurePosixPath(name)
        if not name or path.is_absolute() or ".." in path.parts:
            raise ValueError(f"tool input file {name!r} must be a relative path without '..'")
        out[str(path)] = str(text)
    return out


def job_payload(code: str, timeout_s: float, memory_mb: int, files: dict[str, str], cfg: SandboxConfig) -> bytes:
    """The JSON job the bootstrap reads: code, files and the rlimits to apply."""
    job = {
        "code": code,
        "files": files,
        "cpu_s": int(timeout_s) + 1,
        "memory_mb": memory_mb,
        "fsize_mb": cfg.fsize_mb,
        "nproc": cfg.nproc,
        "nofile": cfg.nofile,
    }
    return json.dumps(job).encode("utf-8")


class Sandbox:
    """Runs code in bubblewrap sandboxes, ``pool_size`` of them kept warm (0: a fresh one per call).

    Thread-safe. ``close()`` (also run at exit) kills the idle workers.

    Args:
        config: settings shared by every call.
        pool_size: workers kept started and waiting for a job.
    """

    def __init__(self, config: SandboxConfig | None = None, pool_size: int = 2) -> None:
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.config = config or SandboxConfig()
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._checked = False
        self._spawner: ThreadPoolExecutor | None = None
        self._spawner_pid = -1
        atexit.register(self.close)

    def run(
        self, code: str, *, timeout_s: float = 5.0, memory_mb: int = 256, files: Mapping[str, str] | None = None
    ) -> ToolResult:
        """Run ``code`` in a fresh sandbox; see ``clew.tools.python.run``."""
        _check_limits(timeout_s, memory_mb)
        payload = job_payload(code, timeout_s, memory_mb, check_files(files), self.config)
        worker = self._take()
        try:
            wait_ready(worker, self.config.startup_timeout_s)
        except SandboxUnavailable:
            worker = self._spawn()  # an idle worker may have died; a fresh one must start
            wait_ready(worker, self.config.startup_timeout_s)
        return execute(worker, payload, timeout_s, self.config.max_output_bytes)

    def check(self) -> None:
        """Raise ``SandboxUnavailable`` now unless a sandbox starts here (once; the worker is kept for a call)."""
        if self._checked:
            return
        worker = self._spawn()
        wait_ready(worker, self.config.startup_timeout_s)
        with self._lock:
            self._idle.append(worker)
            self._checked = True

    def close(self) -> None:
        """Kill the idle workers (a later ``run`` starts new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            if worker.owner_pid == os.getpid():  # a forked child must not end its parent's workers
                stop(worker)

    def _take(self) -> Worker:
        with self._lock:
            self._idle = [w for w in self._idle if w.owner_pid == os.getpid()]  # a forked child starts its own
            worker = self._idle.pop(0) if self._idle else None
        if worker is None:
            worker = self._spawn()
        self._refill()
        return worker

    def _refill(self) -> None:
        while True:
            with self._lock:
                if len(self._idle) >= self.pool_size:
                    return
            fresh = self._spawn()
            with self._lock:
                self._idle.append(fresh)

    def _spawn(self) -> Worker:
        bwrap = find_bwrap(self.config.bwrap)
        if bwrap is None:
            raise SandboxUnavailable(f"bubblewrap not found ({self.config.bwrap!r}): {INSTALL_HINT}")
        python, extra_bind = find_interpreter(self.config.interpreter)
        fd = seccomp_fd() if self.config.seccomp and seccomp_supported() else None
        info_read, info_write = os.pipe()
        cmd = bwrap_command(self.config, bwrap, python, extra_bind, BOOTSTRAP, fd, info_write)
        try:
            fds = (info_write,) if fd is None else (info_write, fd)
            return Worker(self._spawner_thread().submit(popen, cmd, fds, True).result(), info_read)
        except OSError as exc:
            os.close(info_read)
            raise SandboxUnavailable(f"cannot start {bwrap}: {exc}; {INSTALL_HINT}") from exc
        finally:
            for opened in (info_write, fd):
                if opened is not None:
                    os.close(opened)

    def _spawner_thread(self) -> ThreadPoolExecutor:
        """The one long-lived thread that starts this process's workers. bwrap's ``--die-with-parent`` ties a
        worker's life to the *thread* that forked it, so a warm worker started from a short-lived thread (an env
        step's pool thread) was killed when that thread ended and handed the next call an ``exit code -9``."""
        with self._lock:
            if self._spawner is None or self._spawner_pid != os.getpid():
                self._spawner = ThreadPoolExecutor(1, thread_name_prefix="clew-sandbox-spawn")
                self._spawner_pid = os.getpid()
            return self._spawner


def _check_limits(timeout_s: float, memory_mb: int) -> None:
    if not 0 < timeout_s < float("inf"):  # NaN fails both comparisons; inf would overflow int(timeout_s)
        raise ValueError(f"timeout_s must be a positive finite number of seconds, got {timeout_s}")
    if memory_mb < 32:
        raise ValueError(f"memory_mb must be >= 32 (python itself needs ~20 MB), got {memory_mb}")


def execute(worker: Worker, payload: bytes, timeout_s: float, cap: int) -> ToolResult:
    """Hand ``payload`` to a ready worker, collect capped output until exit, timeout or overflow; reap it."""
    start = time.perf_counter()
    proc = worker.proc
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(payload)
        proc.stdin.close()
    out, err, timed_out, truncated = collect(proc, start + timeout_s, cap)
    stop(worker)
    code = -signal.SIGKILL if timed_out or truncated else proc.wait()
    text = [b.decode("utf-8", "replace") for b in (out, err)]
    return ToolResult(text[0], text[1], code, timed_out, truncated, time.perf_counter() - start)


def run_unsafe(code: str, timeout_s: float, memory_mb: int, files: dict[str, str], cfg: SandboxConfig) -> ToolResult:
    """The same bootstrap in a plain subprocess: temp cwd, empty environment, rlimits; no isolation."""
    warnings.warn(
        "clew.tools.python.run(unsafe_local=True): model code runs WITHOUT a sandbox (host files, network "
        "and processes are reachable); use it only for trusted code",
        UnsafeLocalWarning,
        stacklevel=3,
    )
    with tempfile.TemporaryDirectory(prefix="clew-tool-") as scratch:
        worker = Worker(popen(interpreter_command(sys.executable, BOOTSTRAP), cwd=scratch))
        wait_ready(worker, cfg.startup_timeout_s)
        return execute(worker, job_payload(code, timeout_s, memory_mb, files, cfg), timeout_s, cfg.max_output_bytes)


_DEFAULT: Sandbox | None = None
_DEFAULT_LOCK = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide sandbox behind ``run`` (default settings, two warm workers)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Sandbox()
        return _DEFAULT


def run(
    code: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 256,
    files: Mapping[str, str] | None = None,
    unsafe_local: bool = False,
) -> ToolResult:
    """Run Python ``code`` in a fresh bubblewrap sandbox and return what it printed.

    Args:
        code: the program (stdlib only inside the sandbox).
        timeout_s: wall-clock limit; past it the sandbox is killed and ``timed_out`` is set (the
            CPU-time rlimit is ``int(timeout_s) + 1`` s on top).
        memory_mb: address-space limit (RLIMIT_AS) of each process of the program.
        files: text files to put in the scratch dir first, ``{relative path: content}``.
        unsafe_local: run in a plain subprocess without a sandbox (warns; trusted code only).

    Raises:
        SandboxUnavailable: bubblewrap is missing or cannot start here.
        ValueError: a bad limit or input file name.
    """
    if unsafe_local:
        _check_limits(timeout_s, memory_mb)
        return run_unsafe(code, timeout_s, memory_mb, check_files(files), SandboxConfig())
    return default_sandbox().run(code, timeout_s=timeout_s, memory_mb=memory_mb, files=files)
