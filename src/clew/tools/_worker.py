"""The sandbox's worker processes: start one, wait until it is ready, read its output, end it.

A worker is bwrap (or, with ``unsafe_local``, a plain python) running the bootstrap, blocked reading
its one job from stdin. ``stop`` is the only way a worker ends: the sandbox's pid-namespace init is
killed through a pidfd and awaited, so nothing the program started outlives the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import IO

from clew.tools.sandbox import INSTALL_HINT, MALLOC_ENV, SANDBOX_UID

READY = b"\x06"


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or the sandbox failed to start; the message says how to fix it."""


@dataclass
class Worker:
    """A started sandbox: bwrap's process, the pipe where bwrap names its child, that child's host pid and pidfd."""

    proc: subprocess.Popen[bytes]
    info_fd: int | None = None
    owner_pid: int = field(default_factory=os.getpid)
    ready: bool = False
    child_pid: int | None = None
    child_pidfd: int | None = None


def popen(
    cmd: list[str], pass_fds: tuple[int, ...] = (), drop_root: bool = False, cwd: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session with pipes; as root, optionally as uid/gid 65534."""
    as_nobody = drop_root and os.geteuid() == 0
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
        start_new_session=True,
        cwd=cwd,
        env=dict(MALLOC_ENV) if cwd is not None else {},  # bwrap's environment is readable from inside: none
        user=SANDBOX_UID if as_nobody else None,
        group=SANDBOX_UID if as_nobody else None,
        extra_groups=[] if as_nobody else None,
    )


def wait_ready(worker: Worker, timeout_s: float) -> None:
    """Block until the worker has written its ready byte; a dead or silent one is ``SandboxUnavailable``."""
    if worker.ready:
        return
    assert worker.proc.stdout is not None and worker.proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(worker.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout_s)
    worker.ready = (os.read(worker.proc.stdout.fileno(), 1) if ready else b"") == READY
    if worker.ready:
        worker.child_pid = read_child_pid(worker.info_fd, timeout_s)
        worker.child_pidfd = open_pidfd(worker.child_pid)
        return
    stop(worker, close=False)
    detail = worker.proc.stderr.read(2000).decode("utf-8", "replace").strip()
    stop(worker)
    exited = f"it exited with code {worker.proc.returncode}" if worker.proc.returncode else "it did not answer"
    why = f"{exited}: {detail}" if detail else f"{exited} within {timeout_s:.0f} s"
    raise SandboxUnavailable(f"the bubblewrap sandbox did not start ({why}); {INSTALL_HINT}")


def read_child_pid(info_fd: int | None, timeout_s: float) -> int | None:
    """The host pid of bwrap's child (the sandbox's pid-namespace init), from ``--info-fd``'s JSON."""
    if info_fd is None:
        return None
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(info_fd, selectors.EVENT_READ)
        while sel.select(timeout_s):
            chunk = os.read(info_fd, 4096)
            if not chunk:
                break
            data += chunk
    with contextlib.suppress(ValueError):
        return int(json.loads(data)["child-pid"])
    return None


def collect(proc: subprocess.Popen[bytes], deadline: float, cap: int) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout and stderr until both close: ``(out, err, timed_out, truncated)``, each kept <= ``cap``."""
    streams: dict[IO[bytes], bytearray] = {s: bytearray() for s in (proc.stdout, proc.stderr) if s is not None}
    bufs = list(streams.values())
    with selectors.DefaultSelector() as sel:
        for stream in streams:
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.perf_counter()
            if left <= 0:
                return bytes(bufs[0]), bytes(bufs[1]), True, False
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = streams[key.fileobj]  # type: ignore[index]
                buf += chunk
                if len(buf) > cap:
                    del buf[cap:]
                    return bytes(bufs[0]), bytes(bufs[1]), False, True
    return bytes(bufs[0]), bytes(bufs[1]), False, False


def stop(worker: Worker, close: bool = True) -> None:
    """End a worker so that nothing of it survives, reap it and (``close``) release its pipes.

    The sandbox's init (bwrap's child, in its own session) gets SIGKILL first, through a pidfd, and
    clew waits until it has exited: the kernel kills every process left in its pid namespace before
    the init counts as exited. Waiting on bwrap alone is not enough: bwrap exits as soon as the
    program does, while its init may still be reaping a background job the program left behind.
    bwrap's process group is killed after that, or at once when the child is unknown (a worker that
    never came up, or ``unsafe_local``).
    """
    proc = worker.proc
    if worker.child_pidfd is not None:
        kill_and_wait(worker.child_pidfd, timeout_s=5.0)
    elif proc.poll() is None and worker.child_pid is not None:  # no pidfd (kernel < 5.3)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(worker.child_pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2.0)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not close:
        return
    for name in ("info_fd", "child_pidfd"):
        opened = getattr(worker, name)
        if opened is not None:
            os.close(opened)
            setattr(worker, name, None)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def open_pidfd(pid: int | None) -> int | None:
    """A pidfd for ``pid`` (safe against pid reuse, pollable until exit); None where the kernel has none."""
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def kill_and_wait(pidfd: int, timeout_s: float) -> None:
    """SIGKILL the process behind ``pidfd`` and wait until it has exited (its pidfd turns readable)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    with selectors.DefaultSelector() as sel:
        sel.register(pidfd, selectors.EVENT_READ)
        sel.select(timeout_s)
