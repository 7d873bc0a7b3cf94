"""The program a sandbox worker starts with: signal readiness, read one job, set rlimits, run the code.

It runs inside the sandbox under the system python (any 3.8+), never inside clew: ``clew.tools.python``
passes this file's text with ``python -c``. Protocol: write one byte (``\\x06``) to stdout when
ready; read a JSON job from stdin until EOF (an empty stdin means "shut down"); write the job's
files into the cwd; lower the rlimits (soft = hard, so the code cannot raise them again); run the
code as ``__main__`` in a fresh namespace, printing an uncaught exception's traceback without this
file's frame and exiting 1.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from typing import Any


def _limits(job: dict[str, Any]) -> list[tuple[int, int]]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(usage.ru_utime + usage.ru_stime) + int(job["cpu_s"])
    return [
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, int(job["memory_mb"]) << 20),
        (resource.RLIMIT_FSIZE, int(job["fsize_mb"]) << 20),
        (resource.RLIMIT_NPROC, int(job["nproc"])),
        (resource.RLIMIT_NOFILE, int(job["nofile"])),
        (resource.RLIMIT_CORE, 0),
    ]


def _write_files(files: dict[str, str]) -> None:
    for name, text in files.items():
        folder = os.path.dirname(name)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(name, "w", encoding="utf-8") as handle:
            handle.write(text)


def _main() -> int:
    os.write(1, b"\x06")
    data = sys.stdin.buffer.read()
    if not data:
        return 0
    job = json.loads(data.decode("utf-8"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    _write_files(job["files"])
    for kind, value in _limits(job):
        resource.setrlimit(kind, (value, value))
    sys.argv = ["main.py"]
    namespace = {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__}
    try:
        exec(compile(job["code"], "main.py", "exec"), namespace)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        traceback.print_exception(type(exc), exc, tb.tb_next if tb is not None else None)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
