"""An OpenAI-compatible chat endpoint as a policy: ``clew eval --policy openai:URL --model NAME``.

A trained clew policy (``clew serve``), a hosted API or another framework's server is then evaluated on the
same held-out tasks and seeds as a clew run. Each episode is played by ``clew.rollout.text.play_text``: the
model sees the whole conversation as chat messages (observation = ``user``, action = ``assistant``) and its
reply goes to the env as is, so clew's ``--context`` strategies do not apply. Requests go to
``URL/chat/completions`` with ``model``, ``messages``, ``temperature``, ``max_tokens`` and a per-request
``seed`` (servers that ignore it sample freely); the key comes from ``OPENAI_API_KEY`` when set. A request
that fails twice marks its episode an ``infra`` failure; the others go on. Episodes run ``concurrency`` at a
time on threads (the server batches).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from clew.eval.evaluate import EvalResult, summarize
from clew.rollout import Task
from clew.rollout.text import Messages, play_text
from clew.types import Group

PREFIX = "openai:"


@dataclass(frozen=True)
class OpenAIPolicy:
    """Chat completions from ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``) with ``model``."""

    base_url: str
    model: str
    temperature: float = 1.0
    max_tokens: int = 16
    timeout_s: float = 300.0
    attempts: int = 2

    def __call__(self, messages: Messages, seed: int) -> tuple[str, str]:
        """(reply text, finish reason) for the conversation so far."""
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": seed % (1 << 31)}  # fmt: skip
        data = self._post(body)
        choice = data["choices"][0]
        return str(choice["message"].get("content") or ""), str(choice.get("finish_reason") or "stop")

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'none')}",
        }
        request = urllib.request.Request(
            self.base_url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers, method="POST"
        )
        for attempt in range(self.attempts):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return dict(json.load(response))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                final = isinstance(exc, urllib.error.HTTPError) and exc.code < 500 and exc.code != 429
                if attempt + 1 == self.attempts or final:  # a client error is not retried; overload and 5xx are
                    raise
                time.sleep(1.0)
        raise AssertionError("unreachable")


def parse_policy(spec: str, model: str | None, temperature: float, max_tokens: int) -> OpenAIPolicy:
    """``openai:URL`` and ``--model`` -> the policy; a bad spec raises ``ValueError`` naming the fix."""
    url = spec.removeprefix(PREFIX)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"expected openai:http(s)://HOST[:PORT]/v1, got {spec!r}")
    if not model:
        raise ValueError(f"{spec} needs --model NAME (the model the endpoint serves)")
    return OpenAIPolicy(url, model, temperature, max_tokens)


def evaluate_text(
    policy: Callable[[Messages, int], tuple[str, str]],
    tasks: Sequence[Task],
    group_size: int,
    max_turns: int,
    seed: int = 0,
    concurrency: int = 8,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[EvalResult, list[Group]]:
    """Every task ``group_size`` times, group ``g`` member ``m`` with request seeds ``derive_seed(seed, g, m,
    turn)``, summarised."""
    jobs = [(g, m) for g in range(len(tasks)) for m in range(group_size)]
    groups = [Group(g, task.task_id, task.seed) for g, task in enumerate(tasks)]
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = [pool.submit(play_text, policy, tasks[g], g, m, max_turns, seed) for g, m in jobs]
        for done, ((g, _), future) in enumerate(zip(jobs, futures), start=1):
            groups[g].episodes.append(future.result())
            if on_progress:
                on_progress(done)
    finally:  # an interrupt drops the queued episodes instead of waiting for them
        pool.shutdown(wait=True, cancel_futures=True)
    return summarize([e for g in groups for e in g.episodes]), groups
