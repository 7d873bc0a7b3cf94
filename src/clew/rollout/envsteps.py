"""Env steps on a thread pool, each with a wall-clock limit: a hung step is abandoned and reported."""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass

from clew.envs import Env, StepResult


@dataclass
class _StepJob:
    """One env step; ``started`` (monotonic seconds) is set when a worker picks it up."""

    key: int
    env: Env
    action: str
    started: float | None = None

    def run(self) -> StepResult:
        self.started = time.monotonic()
        return self.env.step(self.action)


class EnvSteps:
    """Env steps on a thread pool. A step running past ``timeout_s`` is abandoned (a thread cannot be
    killed): it is reported as a ``TimeoutError`` and later steps go to a fresh pool."""

    def __init__(self, workers: int, timeout_s: float | None) -> None:
        self.workers, self.timeout_s = workers, timeout_s
        self.pool = self._new_pool()
        self.jobs: dict[cf.Future[StepResult], _StepJob] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def submit(self, key: int, env: Env, action: str) -> None:
        job = _StepJob(key, env, action)
        self.jobs[self.pool.submit(job.run)] = job

    def harvest(self, block: bool, gather_s: float | None = 0.0) -> list[tuple[int, StepResult | Exception]]:
        """Finished steps (and timed-out ones); with ``block``, wait until at least one ends or times out,
        first giving every step in flight up to ``gather_s`` (None: no limit but the step timeout) to finish
        so that their next requests batch."""
        if not self.jobs:
            return []
        if block and gather_s != 0:
            limits = [t for t in (gather_s, self._wait_s()) if t is not None]
            cf.wait(self.jobs, timeout=min(limits, default=None), return_when=cf.ALL_COMPLETED)
        done, _ = cf.wait(self.jobs, timeout=self._wait_s() if block else 0, return_when=cf.FIRST_COMPLETED)
        out = [(self.jobs.pop(f).key, _result(f)) for f in done]
        return sorted(out, key=lambda r: r[0]) + self._expire()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _new_pool(self) -> cf.ThreadPoolExecutor:
        return cf.ThreadPoolExecutor(self.workers, thread_name_prefix="clew-env")

    def _wait_s(self) -> float | None:
        if self.timeout_s is None:
            return None
        now = time.monotonic()
        left = [j.started + self.timeout_s - now for j in self.jobs.values() if j.started is not None]
        return max(0.0, min(left, default=self.timeout_s))

    def _expire(self) -> list[tuple[int, StepResult | Exception]]:
        if self.timeout_s is None:
            return []
        limit, now = self.timeout_s, time.monotonic()
        late = [f for f, j in self.jobs.items() if j.started is not None and now - j.started >= limit and not f.done()]
        if not late:
            return []
        expired: list[tuple[int, StepResult | Exception]] = []
        for f in late:
            expired.append((self.jobs.pop(f).key, TimeoutError(f"env step exceeded {limit}s")))
        self._renew_pool()
        return expired

    def _renew_pool(self) -> None:
        """Move to a fresh pool; steps still queued on the old one (behind a hung thread) move with it."""
        old, self.pool = self.pool, self._new_pool()
        for f, job in list(self.jobs.items()):
            if f.cancel():
                del self.jobs[f]
                self.jobs[self.pool.submit(job.run)] = job
        old.shutdown(wait=False)


def _result(future: cf.Future[StepResult]) -> StepResult | Exception:
    exc = future.exception()
    if exc is None:
        return future.result()
    if isinstance(exc, Exception):
        return exc
    raise exc
