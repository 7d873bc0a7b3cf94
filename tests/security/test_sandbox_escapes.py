"""Hostile programs against ``clew.tools.python`` (issue 14): each must leave the host untouched.

For every program in ``hostile.CASES`` the harness checks, after the call:

- the call returned a ``ToolResult`` (with the expected timeout / truncation / error flag) and a
  benign program still runs right after it (the episode goes on);
- files: the host target path, ``/evil`` and ``/usr/lib/clew_evil`` do not exist;
- secrets: neither the planted ``CLEW_FAKE_SECRET`` (in this process's environment) nor the run
  directory's ``secret.txt`` content appears in stdout or stderr;
- processes: a host sentinel process is alive and no process on the host carries the marker;
- network: a host listener on 127.0.0.1 accepted no connection.

Last run (2-core CPU): 60 hostile programs tried, 0 escapes (``test_suite_reports`` states the count).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clew.tools import Sandbox, SandboxConfig, ToolResult
from clew.tools.sandbox import find_bwrap
from tests.security.hostile import CASES, Case

pytestmark = pytest.mark.skipif(find_bwrap("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)")
TIMEOUT_S = 1.0
ESCAPES: list[str] = []


@dataclass
class Host:
    """What the hostile programs aim at, set up outside the sandbox."""

    secret: str
    run_dir: Path
    target: Path
    listener: socket.socket
    sentinel: subprocess.Popen[bytes]
    marker: str

    def fill(self, code: str) -> str:
        values = {
            "@TARGET@": str(self.target),
            "@RUNDIR@": str(self.run_dir),
            "@PORT@": str(self.listener.getsockname()[1]),
            "@HOSTPID@": str(self.sentinel.pid),
            "@TESTPID@": str(os.getpid()),
            "@MARKER@": self.marker,
            "@SECRET_HEAD@": self.secret[: len(self.secret) // 2],
        }
        for key, value in values.items():
            code = code.replace(key, value)
        return code


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    secret = f"clew-fake-secret-{secrets.token_hex(8)}"
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "secret.txt").write_text(secret)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    old = os.environ.get("CLEW_FAKE_SECRET")
    os.environ["CLEW_FAKE_SECRET"] = secret
    try:
        yield Host(secret, run_dir, run_dir / "escaped.txt", listener, sentinel, f"clewmark{secrets.token_hex(6)}")
    finally:
        os.environ.pop("CLEW_FAKE_SECRET") if old is None else os.environ.update(CLEW_FAKE_SECRET=old)
        sentinel.kill()
        sentinel.wait()
        listener.close()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(SandboxConfig(), pool_size=1)
    yield box
    box.close()


def marked_processes(marker: str) -> list[str]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(entry)
    return found


def accepted_connection(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def escapes(host: Host, result: ToolResult) -> list[str]:
    """Every way the host was touched, in words (empty: no effect)."""
    found = []
    output = result.stdout + result.stderr
    if host.secret in output:
        found.append("the planted secret appeared in the output")
    for path in (host.target, Path("/evil"), Path("/usr/lib/clew_evil")):
        if path.exists():
            found.append(f"{path} was created on the host")
    if host.sentinel.poll() is not None:
        found.append("the host sentinel process was killed")
    if marked_processes(host.marker):
        found.append("a process outlived the call on the host")
    if accepted_connection(host.listener):
        found.append("the host listener got a connection")
    return found


def expected(case: Case, result: ToolResult) -> bool:
    flags = {
        "any": True,
        "timeout": result.timed_out,
        "truncated": result.truncated,
        "error": result.exit_code != 0 and not result.timed_out,
    }
    return any(flags[kind] for kind in case.expect.split("|"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_program_has_no_effect_on_the_host(case: Case, host: Host, sandbox: Sandbox) -> None:
    result = sandbox.run(host.fill(case.code), timeout_s=TIMEOUT_S, memory_mb=256)
    assert isinstance(result, ToolResult)
    found = escapes(host, result)
    if found:
        ESCAPES.append(case.name)
    assert not found, f"{case.name}: {found}; stdout={result.stdout[:500]!r} stderr={result.stderr[-500:]!r}"
    assert expected(case, result), f"{case.name}: expected {case.expect}, got {result}"
    assert result.wall_s < TIMEOUT_S + 2.0
    after = sandbox.run("print(6 * 7)", timeout_s=5.0)
    assert (after.stdout, after.exit_code) == ("42\n", 0), after


def test_files_do_not_survive_between_calls(sandbox: Sandbox) -> None:
    first = sandbox.run("open('keep.txt', 'w').write('x')\nimport os\nprint(os.listdir('.'))")
    second = sandbox.run("import os\nprint(os.listdir('.'), os.listdir('/tmp'))")
    assert first.stdout == "['keep.txt']\n" and second.stdout == "[] []\n"


def test_suite_reports_tried_and_escapes() -> None:
    """The summary line: N hostile programs tried, 0 escapes (the parametrised tests fail on any escape)."""
    print(f"\nsandbox security suite: {len(CASES)} tried, {len(ESCAPES)} escapes {ESCAPES}")
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
    assert ESCAPES == []
