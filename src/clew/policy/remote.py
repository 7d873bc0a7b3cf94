"""Rollout engines as Ray actors: ``RayEngines`` is one ``Engine`` (and ``Streams``) over N engine workers.

Each worker is a Ray actor holding its own engine (``hf`` or ``vllm``, built from the model directory or
name, like any non-shared engine). The driver sees one engine:

- ``generate`` (the parity probe, evaluation) splits its prompts over the workers (prompt i to worker
  i mod N; the trainer's probe has a prompt for every worker, so every worker is checked after each sync);
- ``submit``/``poll`` (rollouts) route each request by its key (the episode's index in the rollout), so an
  episode stays on one worker (its prefix cache stays warm); a worker decodes the requests queued for it
  as one batch while the others decode theirs;
- ``load_weights`` puts the state dict into Ray's object store once and every worker loads it from there;
  each load has a version, and every request names the version it must be sampled with.

A worker that dies (a crash, the OOM killer, a lost node) costs only the requests it held: Ray restarts it
(up to ``max_restarts`` times), the driver waits for the restart and loads the latest weights into it, and
its requests are sent once more (a request's seed alone decides its sample, so the retry samples what the
dead worker would have). A request whose worker dies twice comes back from ``poll`` as an
``EngineWorkerDied`` exception, which the rollout records as an error episode (left out of credit and
baselines): a request that crashes its worker cannot crash it forever. A worker that died while idle is
caught by the version check (a restarted worker holds the weights it was built with) and reloaded before
it samples. ``generate`` retries a dead worker's share once. A worker that dies more than ``max_restarts``
times raises ``EngineError`` (the trainer reopens the engines and retries the round once, then stops).

Requires ``ray`` (``pip install 'clew[cluster]'``); imported only when a cluster is used.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from clew.plugins import loaded
from clew.policy.base import Completion, EngineError, SamplingParams, make_engine
from clew.workers import Worker

POLL_WAIT_S = 0.02  # how long ``poll`` waits for any worker's batch before handing control back
RESTART_WAIT_S = 600.0  # how long a dead worker may take to come back (a model load on a busy machine)


class EngineWorkerDied(RuntimeError):
    """The engine worker serving this request died; the request is lost (its episode becomes an error)."""


class StaleWeights(RuntimeError):
    """A request asked for a weights version this worker does not hold (it was restarted)."""


class EngineWorker(Worker):
    """One engine in a Ray actor process (``torch`` threads limited to ``threads``; ``plugins``: the driver's)."""

    def __init__(
        self, name: str, source: str, params: dict[str, Any], threads: int, plugins: Sequence[str] = ()
    ) -> None:
        super().__init__(plugins)  # a plug-in engine is registered here too
        import torch

        torch.set_num_threads(threads)
        self.engine = make_engine(name, source, **params)
        self.version = -1  # the weights it was built with

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], version: int
    ) -> list[Completion]:
        self._drill()
        if version != self.version:
            raise StaleWeights(f"request for weights version {version}, this worker holds {self.version}")
        return self.engine.generate(prompts, params, seeds)

    def load_weights(self, state: dict[str, Any], version: int) -> None:
        self.engine.load_weights(state.items())
        self.version = version

    def max_model_len(self) -> int:
        return int(self.engine.max_model_len)


class RayEngines:
    """N engine workers behind one ``Engine``/``Streams`` interface; build with ``RayEngines.start``."""

    continuous_batching = False  # the scheduler gathers requests into waves, as for ``hf``

    def __init__(self, workers: list[Any], max_restarts: int) -> None:
        import ray

        self._ray = ray
        self.workers = workers
        self.max_restarts = max_restarts
        try:
            self.max_model_len = min(ray.get([w.max_model_len.remote() for w in workers]))
        except Exception:
            self.close()
            raise
        self.restarts = 0  # worker deaths seen so far (each restarted by Ray)
        self._deaths: dict[int, int] = defaultdict(int)
        self._weights: Any = None  # object ref of the last state dict loaded
        self._version = -1  # its version (-1: the weights the workers were built with)
        self._queued: dict[int, list[tuple[int, list[int], SamplingParams, int]]] = defaultdict(list)
        self._flight: dict[Any, tuple[int, list[tuple[int, list[int], SamplingParams, int]]]] = {}
        self._tries: dict[int, int] = defaultdict(int)  # key -> resends after its worker died

    @classmethod
    def start(
        cls, n: int, name: str, source: str, params: dict[str, Any], threads: int = 1, max_restarts: int = 3,
        num_cpus: float = 1.0,
    ) -> RayEngines:  # fmt: skip
        import ray

        remote: Any = ray.remote(num_cpus=num_cpus, max_restarts=max_restarts, max_task_retries=0)(EngineWorker)
        return cls([remote.remote(name, source, params, threads, loaded()) for _ in range(n)], max_restarts)

    # --- Engine -----------------------------------------------------------------------------------
    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]:
        """Prompt i goes to worker i mod N; the completions come back in prompt order. A worker that died
        is revived and its share sent once more."""
        n = len(self.workers)
        shares = [([list(p) for p in prompts[w::n]], list(seeds[w::n])) for w in range(min(n, len(prompts)))]
        refs = [self._generate(w, *share, params) for w, share in enumerate(shares)]
        out: list[Completion] = [None] * len(prompts)  # type: ignore[list-item]
        for w, ref in enumerate(refs):
            try:
                out[w::n] = self._ray.get(ref)
            except (self._ray.exceptions.RayActorError, self._ray.exceptions.RayTaskError) as exc:
                self._recover(w, exc)
                out[w::n] = self._ray.get(self._generate(w, *shares[w], params))
        return out

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """One copy in the object store, loaded by every worker (the driver waits for all of them)."""
        state = {name: t.detach().to("cpu").contiguous() for name, t in named_tensors}
        self._weights, self._version = self._ray.put(state), self._version + 1
        for w, ref in enumerate([w.load_weights.remote(self._weights, self._version) for w in self.workers]):
            try:
                self._ray.get(ref)
            except self._ray.exceptions.RayActorError:
                self._revive(w)  # loads these weights into the restarted worker

    def close(self) -> None:
        for w in self.workers:
            self._ray.kill(w, no_restart=True)
        getattr(self, "_queued", {}).clear()
        getattr(self, "_flight", {}).clear()

    # --- Streams ----------------------------------------------------------------------------------
    def submit(self, key: int, prompt: Sequence[int], params: SamplingParams, seed: int) -> None:
        self._tries[key] = 0
        self._queued[key % len(self.workers)].append((key, list(prompt), params, seed))

    def pending(self) -> int:
        return sum(len(q) for q in self._queued.values()) + sum(len(b) for _, b in self._flight.values())

    def poll(self) -> list[tuple[int, Completion | Exception]]:
        """Send each idle worker its queue; return the batches done (waiting up to ``POLL_WAIT_S`` for one)."""
        self._dispatch()
        if not self._flight:
            return []
        flight = list(self._flight)
        ready, rest = self._ray.wait(flight, num_returns=1, timeout=POLL_WAIT_S)  # back as soon as one is done
        if ready and rest:
            ready += self._ray.wait(rest, num_returns=len(rest), timeout=0)[0]  # and whatever else is done
        done: list[tuple[int, Completion | Exception]] = []
        for ref in ready:
            worker, batch = self._flight.pop(ref)
            try:
                done += list(zip((q[0] for q in batch), self._ray.get(ref), strict=True))
            except (self._ray.exceptions.RayTaskError, self._ray.exceptions.RayActorError) as exc:
                if isinstance(exc, self._ray.exceptions.RayTaskError) and not isinstance(
                    exc.as_instanceof_cause(), StaleWeights
                ):
                    raise
                if not any(w == worker for w, _ in self._flight.values()):  # one revival per death
                    self._revive(worker)
                done += self._resend(worker, batch)
        return done

    def _resend(
        self, worker: int, batch: list[tuple[int, list[int], SamplingParams, int]]
    ) -> list[tuple[int, Completion | Exception]]:
        """Queue the batch again (each request once); the requests already resent are lost."""
        retry = [q for q in batch if self._tries[q[0]] < 1]
        for q in retry:
            self._tries[q[0]] += 1
        self._queued[worker] = retry + self._queued[worker]
        lost = EngineWorkerDied(f"engine worker {worker} died twice serving this request")
        return [(q[0], lost) for q in batch if self._tries[q[0]] >= 1 and q not in retry]

    def _dispatch(self) -> None:
        busy = {w for w, _ in self._flight.values()}
        for worker, queue in list(self._queued.items()):
            if worker in busy or not queue:
                continue
            for params in dict.fromkeys(q[2] for q in queue):  # one call per distinct SamplingParams
                batch = [q for q in queue if q[2] == params]
                self._flight[self._generate(worker, [q[1] for q in batch], [q[3] for q in batch], params)] = (
                    worker,
                    batch,
                )
            self._queued[worker] = []

    def _generate(self, worker: int, prompts: list[list[int]], seeds: list[int], params: SamplingParams) -> Any:
        return self.workers[worker].generate.remote(prompts, params, seeds, self._version)

    def _recover(self, worker: int, exc: Exception) -> None:
        """A dead worker or stale weights: revive it; any other failure is the engine's and propagates."""
        if isinstance(exc, self._ray.exceptions.RayTaskError) and not isinstance(
            exc.as_instanceof_cause(), StaleWeights
        ):
            raise EngineError(f"engine worker {worker} failed: {exc}") from exc
        self._revive(worker)

    def _revive(self, worker: int) -> None:
        """Count the death, wait for Ray's restart and load the latest weights into it before it serves again."""
        self.restarts += 1
        self._deaths[worker] += 1
        if self._deaths[worker] > self.max_restarts:
            raise EngineError(
                f"engine worker {worker} died {self._deaths[worker]} times (cluster.max_restarts="
                f"{self.max_restarts}); the run stopped; its last checkpoint is intact (--resume)"
            )
        handle, errors = self.workers[worker], self._ray.exceptions
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                call = (
                    handle.load_weights.remote(self._weights, self._version) if self._weights else handle.pid.remote()
                )
                self._ray.get(call, timeout=remaining)
                return
            except (errors.ActorUnavailableError, errors.GetTimeoutError):  # still restarting
                if time.monotonic() > deadline:
                    raise EngineError(f"engine worker {worker} did not restart within {RESTART_WAIT_S:g}s") from None
                time.sleep(0.2)
            except errors.ActorDiedError as exc:
                raise EngineError(f"engine worker {worker} died and was not restarted: {exc}") from None
