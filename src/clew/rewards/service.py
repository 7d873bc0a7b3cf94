"""Judging as a service beside the rollout: a pool of ``concurrency`` threads over one backend, a cache keyed by
content, a deadline per judgement, and one retry of an unparsable reply.

A judgement is submitted as soon as what it judges exists (an episode that ended, a group whose members all
ended) and runs while the rollout goes on. Each worker thread takes up to ``backend.batch`` queued judgements at
once (a local engine decodes them as one batch). The reply is parsed by the submitter's parser; an unparsable
reply is asked again once, sampled at ``retry_temperature`` (a greedy judge would repeat itself), then recorded as
a failed judgement. A backend that raises, or a judgement not done ``timeout_s`` after it was submitted, is a
failed judgement too. A failed judgement is never a score: the caller marks what it judged an ``infra`` failure.
Successful judgements are cached by a SHA-256 over the backend's name, the messages, the sampling and the kind,
so the same content is judged once (least recently used entries go first).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from clew.rewards.backends import JudgeBackend
from clew.rewards.prompts import Messages

Parser = Callable[[str], list[float] | None]
UNPARSABLE, TIMEOUT, ERROR = "unparsable", "timeout", "error"


@dataclass(frozen=True)
class Verdict:
    """A judgement: ``scores`` in [0, 1] (one, or one per ranked candidate), or ``failure`` (``unparsable``,
    ``timeout``, ``error: ...``) with ``scores`` None. ``reply``: the judge's last reply."""

    scores: tuple[float, ...] | None
    failure: str | None = None
    attempts: int = 1
    cached: bool = False
    reply: str = ""


@dataclass
class _Job:
    key: str
    kind: str
    messages: Messages
    parse: Parser
    seed: int
    deadline: float
    prefix: str = ""
    temperature: float = 0.0
    future: Future[Verdict] = field(default_factory=Future)
    attempt: int = 1


@dataclass
class JudgeStats:
    """Counters since the service started (the trainer logs their per-iteration differences)."""

    submitted: int = 0
    cache_hits: int = 0
    calls: int = 0
    unparsable: int = 0
    timeouts: int = 0
    errors: int = 0
    busy_s: float = 0.0
    max_in_flight: int = 0


class JudgeService:
    """Judgements from ``backend`` on ``concurrency`` threads (module docstring)."""

    def __init__(self, backend: JudgeBackend, concurrency: int = 4, timeout_s: float = 120.0,
                 max_tokens: int = 16, temperature: float = 0.0, retry_temperature: float = 0.7,
                 cache_entries: int = 100_000) -> None:  # fmt: skip
        if concurrency < 1:
            raise ValueError(f"judge concurrency must be >= 1, got {concurrency}")
        self.backend, self.timeout_s, self.max_tokens = backend, timeout_s, max_tokens
        self.temperature, self.retry_temperature = temperature, retry_temperature
        self.cache: OrderedDict[str, tuple[tuple[float, ...], str]] = OrderedDict()
        self.cache_entries = cache_entries
        self.stats = JudgeStats()
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._in_flight = 0
        self._threads = [threading.Thread(target=self._work, name=f"clew-judge-{i}", daemon=True)
                         for i in range(concurrency)]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def key(self, kind: str, messages: Messages, prefix: str = "", temperature: float = 0.0, sample: int = 0) -> str:
        blob = json.dumps([self.backend.name, kind, temperature, self.max_tokens, prefix, sample, messages],
                          sort_keys=True)  # fmt: skip
        return hashlib.sha256(blob.encode()).hexdigest()

    def submit(self, kind: str, messages: Messages, parse: Parser, seed: int, prefix: str = "",
               temperature: float | None = None, sample: int = 0) -> Future[Verdict]:  # fmt: skip
        """Judge ``messages`` (the reply starting with ``prefix`` where the backend can continue one) at
        ``temperature`` (None: the service's); ``sample`` tells apart several sampled judgements of the same content
        (each cached on its own). The future resolves to a ``Verdict`` (a cached one at once)."""
        temperature = self.temperature if temperature is None else temperature
        key = self.key(kind, messages, prefix, temperature, sample)
        with self._lock:
            self.stats.submitted += 1
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
                self.stats.cache_hits += 1
        if hit is not None:
            done: Future[Verdict] = Future()
            done.set_result(Verdict(hit[0], cached=True, reply=hit[1]))
            return done
        job = _Job(key, kind, messages, parse, seed, time.monotonic() + self.timeout_s, prefix, temperature)
        self._queue.put(job)
        return job.future

    def results(self, futures: Sequence[Future[Verdict]]) -> list[Verdict]:
        deadline = time.monotonic() + self.timeout_s
        out = []
        for future in futures:
            try:
                out.append(future.result(timeout=max(deadline - time.monotonic(), 0.0)))
            except TimeoutError:
                with self._lock:
                    self.stats.timeouts += 1
                out.append(Verdict(None, TIMEOUT))
        return out

    def stop(self) -> None:
        """End the worker threads (the backend stays open)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)

    def close(self) -> None:
        self.stop()
        self.backend.close()

    # --- workers -----------------------------------------------------------------------------------
    def _take(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        while len(jobs) < max(self.backend.batch, 1):
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:  # keep the stop signal for this or another thread
                self._queue.put(None)
                break
            jobs.append(nxt)
        return jobs

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            try:
                self._serve(jobs)
            except Exception as exc:  # a bug here must not kill the worker and leave judgements hanging
                for job in jobs:
                    if not job.future.done():
                        job.future.set_result(Verdict(None, f"{ERROR}: {exc!r}"[:300], job.attempt))

    def _serve(self, jobs: list[_Job]) -> None:
        now = time.monotonic()
        late = [j for j in jobs if j.deadline <= now]
        for job in late:  # its caller has given up: no compute for it
            job.future.set_result(Verdict(None, TIMEOUT, job.attempt))
        live = [j for j in jobs if j.deadline > now]
        calls: dict[tuple[int, str, float], list[_Job]] = {}  # one sampling per call, split before any runs
        for job in live:  # (a run re-queues an unparsable job with attempt 2: it must not join a later call here)
            calls.setdefault((job.attempt, job.prefix, job.temperature), []).append(job)
        for batch in calls.values():
            self._run(batch)

    def _run(self, jobs: list[_Job]) -> None:
        with self._lock:
            self._in_flight += 1
            self.stats.calls += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        start = time.perf_counter()
        try:
            first = jobs[0]
            temperature = first.temperature if first.attempt == 1 else max(first.temperature, self.retry_temperature)
            seeds = [j.seed + 7919 * (j.attempt - 1) for j in jobs]
            replies = self.backend.complete([j.messages for j in jobs], temperature, self.max_tokens, seeds,
                                            jobs[0].prefix)  # fmt: skip
        except Exception as exc:  # the judge crashed: every judgement of the call failed
            with self._lock:
                self.stats.errors += len(jobs)
            for job in jobs:
                job.future.set_result(Verdict(None, f"{ERROR}: {exc!r}"[:300], job.attempt))
            return
        finally:
            with self._lock:
                self._in_flight -= 1
                self.stats.busy_s += time.perf_counter() - start
        for job, reply in zip(jobs, replies):
            self._settle(job, reply)

    def _settle(self, job: _Job, reply: str) -> None:
        scores = job.parse(reply)
        if scores is not None:
            with self._lock:
                self.cache[job.key] = (tuple(scores), reply)
                while len(self.cache) > self.cache_entries:
                    self.cache.popitem(last=False)
            job.future.set_result(Verdict(tuple(scores), None, job.attempt, reply=reply))
            return
        with self._lock:
            self.stats.unparsable += 1
        if job.attempt == 1:  # asked once more, sampled
            job.attempt = 2
            self._queue.put(job)
        else:
            job.future.set_result(Verdict(None, UNPARSABLE, job.attempt, reply=reply))
