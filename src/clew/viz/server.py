"""``clew view``: a read-only local web server with a JSON API over named run directories and its own static files.

Routes (GET/HEAD only): ``/`` and ``/static/NAME`` (the files of ``clew/viz/static`` only), ``/api/runs``,
``/api/runs/RUN/curves``, ``/api/runs/RUN/iterations/N/groups?status=&sort=&q=``,
``/api/runs/RUN/iterations/N/episodes/E`` and ``/api/runs/RUN/iterations/N/compare?a=&b=``.
``RUN`` is a name the server gave a run directory on its command line, never a path: nothing else on disk
is reachable. A path with ``..``, ``.``, empty segments, backslashes or NUL (also percent-encoded) is refused
with 403; anything unknown is 404.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from clew.viz.data import RunData
from clew.viz.records import dumps
from clew.viz.runs import run_names

STATIC_DIR = Path(__file__).parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_API = re.compile(r"^/api/runs/([A-Za-z0-9._-]+)(?:/(curves)|/iterations/(\d+)/(groups|compare|episodes/(\d+)))$")


@dataclass(frozen=True)
class Response:
    """What the handler writes: status, content type and body."""

    status: int
    content_type: str
    body: bytes


def json_response(record: Any, status: int = 200) -> Response:
    return Response(status, "application/json; charset=utf-8", dumps(record).encode())


def error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def unsafe_path(raw: str) -> bool:
    """True for a path trying to leave its folder: ``..``/``.``/empty segments, ``\\`` or NUL, once decoded."""
    path = raw
    for _ in range(3):  # double-encoded %252e%252e decodes in two steps
        path = unquote(path)
    segments = path.split("/")[1:]
    if path == "/":
        return False
    return any(s in ("", ".", "..") or "\\" in s or "\x00" in s for s in segments)


def static_files() -> dict[str, Path]:
    """The static files the server may serve, by name (a fixed list read once)."""
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}


class ViewerApp:
    """Routes a request path to a response; no sockets, so tests can call ``handle`` directly."""

    def __init__(self, run_dirs: Sequence[Path]) -> None:
        self.runs = {name: RunData(name, path) for name, path in run_names(run_dirs).items()}
        self.static = static_files()

    def close(self) -> None:
        for run in self.runs.values():
            run.close()

    def handle(self, target: str) -> Response:
        """The response to ``GET target`` (path and query string)."""
        split = urlsplit(target)
        if unsafe_path(split.path):
            return error(403, "path refused")
        path = unquote(split.path)
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if path == "/api/runs":
            return json_response([run.info() for run in self.runs.values()])
        match = _API.match(path)
        if match is None:
            return error(404, "not found")
        return self._api(match, parse_qs(split.query))

    def _static(self, name: str) -> Response:
        found = self.static.get(name)
        if found is None:
            return error(404, "not found")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(200, f"{kind}; charset=utf-8" if kind.startswith("text/") else kind, found.read_bytes())

    def _api(self, match: re.Match[str], query: dict[str, list[str]]) -> Response:
        name, curves, iteration, what, episode = match.groups()
        run = self.runs.get(name)
        if run is None:
            return error(404, f"unknown run {name!r}")
        param = _params(query)
        try:
            if curves:
                return json_response(run.curves())
            if what == "groups":
                return json_response(
                    run.groups(int(iteration), param("status", "all"), param("sort", "group"), param("q", ""))
                )
            if what == "compare":
                return json_response(run.compare(int(iteration), int(param("a", "-1")), int(param("b", "-1"))))
            return json_response(run.episode(int(iteration), int(episode)))
        except KeyError as exc:
            return error(404, str(exc.args[0]))
        except ValueError as exc:
            return error(400, str(exc))


def _params(query: dict[str, list[str]]) -> Callable[[str, str], str]:
    def get(key: str, default: str) -> str:
        return query.get(key, [default])[0]

    return get


def make_handler(app: ViewerApp, host: str) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``app``; on a loopback bind it refuses foreign Host headers (DNS rebinding)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "clew-view"

        def do_GET(self) -> None:
            self._send(self._response(), body=True)

        def do_HEAD(self) -> None:
            self._send(self._response(), body=False)

        def _response(self) -> Response:
            if host in LOOPBACK and _host_name(self.headers.get("Host", "")) not in LOOPBACK:
                return error(403, "host refused")
            return app.handle(self.path)

        def _send(self, response: Response, body: bool) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:
                try:
                    self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):  # the browser navigated away
                    return

        def log_message(self, format: str, *args: Any) -> None:  # quiet: a viewer, not an access log
            return

    return Handler


def _host_name(header: str) -> str:
    """``127.0.0.1:8000`` -> ``127.0.0.1``; ``[::1]:8000`` -> ``::1``."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def make_server(run_dirs: Sequence[Path], host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server over ``run_dirs`` (not yet serving); ``port=0`` picks a free port."""
    missing = [str(p) for p in run_dirs if not Path(p).is_dir()]
    if missing:
        raise ValueError(f"not a run directory: {', '.join(missing)}")
    app = ViewerApp(run_dirs)
    server = ThreadingHTTPServer((host, port), make_handler(app, host))
    server.daemon_threads = True
    server.app = app  # type: ignore[attr-defined]
    return server


def serve(run_dirs: Sequence[Path], host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted, printing the address."""
    server = make_server(run_dirs, host, port)
    print(f"clew view: http://{host}:{server.server_address[1]}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.app.close()  # type: ignore[attr-defined]
