"""clew.envs.verify: scorers in worker processes, killed on timeout, usable from any thread, cleaned up."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from clew.envs.verify import Bounded, Prepare, VerifierPool, VerifierUnavailable

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc and relies on PR_SET_PDEATHSIG"
)
HANG_JOIN_S = 60.0  # a join timeout that only a hang exceeds; no test asserts a tight wall-clock number


@pytest.fixture
def pool() -> Iterator[VerifierPool]:
    pool = VerifierPool(max_idle=2)
    yield pool
    pool.close()


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_scorer_gets_the_prepared_value_and_its_args(pool: VerifierPool) -> None:
    assert pool.call(operator.mul, (6,), timeout_s=5.0, prepare=Prepare(int, ("7",))) == Bounded(value=42)
    assert pool.call(operator.truediv, (0,), timeout_s=5.0, prepare=Prepare(int, ("1",))).error == (
        "ZeroDivisionError: division by zero"
    )


def test_a_scorer_that_holds_the_gil_is_killed_on_a_worker_thread(pool: VerifierPool) -> None:
    """pow(10, 10**10) is one C call: neither a thread nor SIGALRM could stop it in-process."""
    with ThreadPoolExecutor(1) as threads:
        future = threads.submit(pool.call, pow, (10**10,), 0.5, Prepare(int, ("10",)))
        assert future.result(timeout=HANG_JOIN_S) == Bounded(timed_out=True)
    assert pool.call(operator.add, (1,), timeout_s=5.0, prepare=Prepare(int, ("1",))).value == 2  # a fresh worker


def test_a_worker_that_dies_is_an_error_and_is_replaced(pool: VerifierPool) -> None:
    died = pool.call(os._exit, (), timeout_s=5.0, prepare=Prepare(int, ("3",)))
    assert died.error == "the verifier process died (exit code 3)"
    assert pool.call(operator.add, (1,), timeout_s=5.0, prepare=Prepare(int, ("1",))).value == 2


def test_a_prepare_that_fails_is_refused_loudly(pool: VerifierPool) -> None:
    with pytest.raises(VerifierUnavailable, match="could not prepare int: ValueError"):
        pool.call(operator.add, (1,), timeout_s=5.0, prepare=Prepare(int, ("x",)))


@linux_only
def test_workers_outlive_the_thread_that_started_them_and_close_ends_them(pool: VerifierPool) -> None:
    """Linux sends PR_SET_PDEATHSIG when the forking *thread* exits, so workers are forked from a kept thread."""
    pids: list[int] = []
    thread = threading.Thread(target=lambda: pids.append(pool.call(operator.pos, (), 5.0, Prepare(os.getpid)).value))
    thread.start()
    thread.join(HANG_JOIN_S)
    time.sleep(0.2)
    assert _alive(pids[0]) and pool.call(operator.pos, (), 5.0, Prepare(os.getpid)).value == pids[0]  # reused
    pool.close()
    assert not _alive(pids[0])


@linux_only
def test_workers_die_with_their_parent_process() -> None:
    code = (
        "import operator, os, sys\nfrom clew.envs.verify import Prepare, call_bounded\n"
        "print(call_bounded(operator.pos, (), 5.0, Prepare(os.getpid)).value, flush=True)\nos._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_JOIN_S, check=True)
    worker = int(out.stdout)
    deadline = time.monotonic() + HANG_JOIN_S
    while _alive(worker) and time.monotonic() < deadline:  # killed by the kernel; reaped by init
        time.sleep(0.05)
    assert not _alive(worker)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_timeouts_must_be_positive_and_finite(pool: VerifierPool, bad: float) -> None:
    with pytest.raises(ValueError, match="timeout_s must be a positive finite number of seconds"):
        pool.call(operator.pos, (), bad)
