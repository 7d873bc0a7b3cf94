"""What every worker process of a run shares: the run's plug-ins, and the fault drill.

A run's worker processes (env pool children, Ray env hosts, engine workers and learner ranks) start without
the driver's imports, so the entries a plug-in registered (an engine, an env family, an objective, ...) would
be unknown there. Each worker loads the driver's plug-ins on start (``clew.plugins.loaded()`` in the driver,
handed to the worker's constructor): a plug-in named by a file path must be readable at that path on every
node (a shared file system), one named by module must be importable there.

``Worker`` is the base of clew's Ray actors: it loads the plug-ins and carries the fault drill the tests and
chaos runs use (``fail_next``: the next work call kills the process the way a crash does; ``pid``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from clew.plugins import load_plugins


class Worker:
    """A Ray actor of a run; subclasses call ``super().__init__(plugins)`` and ``self._drill()`` first thing in
    the call a fault drill should kill."""

    _fail_next = False

    def __init__(self, plugins: Sequence[str] = ()) -> None:
        load_plugins(plugins)

    def fail_next(self) -> None:
        """Fault drill: the next work call (``_drill``) kills this process."""
        self._fail_next = True

    def pid(self) -> int:
        return os.getpid()

    def _drill(self) -> None:
        if self._fail_next:  # die the way a crashed worker does: no cleanup, no exception to catch
            os._exit(1)
