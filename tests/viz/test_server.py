"""``clew view``'s server: loopback by default, only its runs and static files, no path traversal."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clew.cli import build_parser
from clew.viz.server import ThreadingHTTPServer, ViewerApp, make_server, unsafe_path


@pytest.fixture(scope="module")
def server(run_dir: Path) -> Iterator[ThreadingHTTPServer]:
    srv = make_server([run_dir])
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(srv: ThreadingHTTPServer, path: str, host: str | None = None) -> tuple[int, bytes]:
    """A raw GET: ``path`` is sent exactly as written (no client-side normalisation of ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    conn.putrequest("GET", path, skip_host=host is not None)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    response = conn.getresponse()
    status, body = response.status, response.read()
    conn.close()
    return status, body


def test_binds_loopback_by_default(server: ThreadingHTTPServer) -> None:
    assert server.server_address[0] == "127.0.0.1"
    assert build_parser().parse_args(["view", "runs/demo"]).host == "127.0.0.1"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../pyproject.toml",
        "/../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/%2E%2E%2F%2E%2E%2Fpyproject.toml",
        "/static/%252e%252e/%252e%252e/pyproject.toml",
        "/static//etc/passwd",
        "/static/%2Fetc%2Fpasswd",
        "/static/..%5c..%5cpyproject.toml",
        "/api/runs/small-run/../../curves",
        "/api/runs/%2e%2e/curves",
    ],
)
def test_traversal_is_refused(server: ThreadingHTTPServer, path: str) -> None:
    status, body = get(server, path)
    assert status == 403 and b"[project]" not in body and b"root:" not in body


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "/static/nope.js", "/api/runs/other-run/curves", "/api/runs/small-run/iterations/9/groups"]
)
def test_unknown_paths_and_runs_are_404(server: ThreadingHTTPServer, path: str) -> None:
    assert get(server, path)[0] == 404


def test_api_serves_the_named_run(server: ThreadingHTTPServer) -> None:
    status, body = get(server, "/api/runs")
    assert status == 200 and [r["name"] for r in json.loads(body)] == ["small-run"]
    status, body = get(server, "/api/runs/small-run/iterations/2/groups?status=error&q=crash")
    assert status == 200 and [e["episode"] for g in json.loads(body)["groups"] for e in g["episodes"]] == [2]
    status, body = get(server, "/api/runs/small-run/iterations/2/compare?a=0&b=1")
    assert status == 200 and json.loads(body)["first_divergence"] == 1
    assert get(server, "/api/runs/small-run/iterations/2/groups?sort=evil")[0] == 400
    assert get(server, "/")[0] == 200 and get(server, "/static/app.js")[0] == 200


def test_foreign_host_header_is_refused(server: ThreadingHTTPServer) -> None:
    assert get(server, "/api/runs", host="evil.example:80")[0] == 403
    assert get(server, "/api/runs", host=f"localhost:{server.server_address[1]}")[0] == 200


def test_unsafe_path() -> None:
    assert not unsafe_path("/") and not unsafe_path("/static/app.js") and not unsafe_path("/api/runs/a.b/curves")
    assert unsafe_path("/static/%2e") and unsafe_path("/a/%00b")


def test_app_without_sockets(run_dir: Path) -> None:
    app = ViewerApp([run_dir, run_dir])  # the same folder twice gets two names
    assert sorted(app.runs) == ["small-run", "small-run-2"]
    assert app.handle("/api/runs/small-run-2/iterations/1/episodes/0").status == 200
    app.close()


def test_clew_view_serves_until_stopped(run_dir: Path) -> None:
    """``clew view RUN --port 0`` prints its address and answers the API (smoke test of the CLI verb)."""
    cmd = [sys.executable, "-m", "clew.cli", "view", str(run_dir), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        address = line.split("http://", 1)[1].split("/", 1)[0]
        conn = http.client.HTTPConnection(address, timeout=10)
        conn.request("GET", "/api/runs")
        assert line.startswith("clew view: http://127.0.0.1:") and conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
