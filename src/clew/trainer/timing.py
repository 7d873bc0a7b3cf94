"""Where a step's seconds go: a stopwatch summed per named stage, logged as ``time/learner/<stage>``."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator


class Stopwatch:
    """Seconds per stage, summed over every ``with clock("stage"):`` block (nested blocks count in both)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def metrics(self, prefix: str = "time/learner/") -> dict[str, float]:
        return {f"{prefix}{stage}": seconds for stage, seconds in self.seconds.items()}
