"""Concurrent calls become engine batches: one thread owns the engine, requests wait on futures.

HTTP handler threads ``submit`` a prompt; the dispatcher thread gathers what arrived within ``window_s``
of the first request (at most ``max_batch``), groups it by sampling parameters and calls
``engine.generate`` once per group. It waits only while other calls are on their way (announced with
``coming()`` before their prompt is rendered), so a lone call never pays the window. Engines are not
thread-safe, so only this thread touches it while calls are served (``run_exclusive`` runs other engine work
between batches; the trainer syncs weights between iterations, when no call is in flight). Every request
carries its own seed, so a completion does not depend on its batch mates (up to float rounding of batched
matmuls).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clew.policy.base import Completion, Engine, SamplingParams

T = TypeVar("T")


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    seed: int
    done: Future[Completion] = field(default_factory=Future)


class Batcher:
    """The engine behind a queue; ``close`` stops the thread (pending requests fail with ``RuntimeError``)."""

    def __init__(self, engine: Engine, window_s: float = 0.002, max_batch: int = 64) -> None:
        self.engine, self.window_s, self.max_batch = engine, window_s, max_batch
        self._queue: queue.Queue[_Request | Callable[[], Any] | None] = queue.Queue()
        self._coming, self._count_lock = 0, threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="clew-gateway-engine", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Announce a call that will ``submit`` soon (its prompt is being rendered): a batch waits for it."""
        with self._count_lock:
            self._coming += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._coming -= 1

    def submit(self, prompt: list[int], params: SamplingParams, seed: int) -> Future[Completion]:
        request = _Request(prompt, params, seed)
        self._queue.put(request)
        return request.done

    def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread between batches (e.g. ``engine.load_weights``) and return its result."""
        done: Future[T] = Future()

        def task() -> None:
            try:
                done.set_result(fn())
            except Exception as exc:  # raised in the caller's thread, not the engine's
                done.set_exception(exc)

        self._queue.put(task)
        return done.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return self._fail_pending()
            if not isinstance(first, _Request):
                first()
                continue
            batch, stop = self._gather(first)
            self._generate(batch)
            if stop:
                return self._fail_pending()

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """The requests that arrive within the window (a non-request ends the gathering and runs next)."""
        batch = [first]
        while len(batch) < self.max_batch:
            if self._coming == 0 and self._queue.empty():  # nothing else on its way: go now
                break
            try:
                item = self._queue.get(timeout=self.window_s)
            except queue.Empty:
                break
            if item is None:
                return batch, True
            if not isinstance(item, _Request):
                self._generate(batch)
                item()
                return [], False
            batch.append(item)
        return batch, False

    def _generate(self, batch: list[_Request]) -> None:
        by_params: dict[SamplingParams, list[_Request]] = {}
        for request in batch:
            by_params.setdefault(request.params, []).append(request)
        for params, requests in by_params.items():
            try:
                out = self.engine.generate([r.prompt for r in requests], params, [r.seed for r in requests])
                if len(out) != len(requests):
                    raise RuntimeError(f"the engine returned {len(out)} completions for {len(requests)} prompts")
            except Exception as exc:  # the engine failed: every request of the batch gets the error, the thread lives
                for r in requests:
                    r.done.set_exception(exc)
                continue
            for r, completion in zip(requests, out, strict=True):
                r.done.set_result(completion)

    def _fail_pending(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Request):
                item.done.set_exception(RuntimeError("the gateway is closed"))
