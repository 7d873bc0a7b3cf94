"""How ``openenv_text`` reaches an OpenEnv environment: in this process, or over a server's ``/ws`` session (one
already running, or a ``uvicorn`` subprocess started on a free 127.0.0.1 port).

Each transport answers ``reset(seed, extra) -> (Reply, seeded)`` and ``step(payload) -> Reply``; a payload the
env's ``Action`` model rejects raises ``InvalidAction``; a lost or unreachable server raises ``InfraError``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import typing
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from clew.envs.base import InfraError

if TYPE_CHECKING:
    from openenv.core.env_server.types import Action

WIRE_EXCLUDED = {"done", "reward", "metadata"}


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "action"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid action"


class Reply(typing.NamedTuple):
    fields: dict[str, Any]
    reward: float | None
    done: bool
    metadata: dict[str, Any]


class InvalidAction(Exception):
    pass


def _accepts(fn: Callable[..., Any], key: str) -> bool:
    params = inspect.signature(fn).parameters.values()
    return any(p.name == key or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class InProcess:
    def __init__(self, env: Any, action_cls: type[Action]) -> None:
        self.env = env
        self.action_cls = action_cls
        self.schema = action_cls.model_json_schema()

    def reset(self, seed: int, extra: dict[str, Any]) -> tuple[Reply, bool]:
        kwargs = {k: v for k, v in extra.items() if _accepts(self.env.reset, k)}
        seeded = _accepts(self.env.reset, "seed")
        if seeded:
            kwargs["seed"] = seed
        return self._reply(self.env.reset(**kwargs)), seeded

    def step(self, payload: dict[str, Any]) -> Reply:
        from pydantic import ValidationError

        try:
            action = self.action_cls.model_validate(payload)
        except ValidationError as exc:
            raise InvalidAction(validation_message(exc.errors())) from None
        return self._reply(self.env.step(action))

    @staticmethod
    def _reply(obs: Any) -> Reply:
        fields = obs.model_dump(exclude=WIRE_EXCLUDED)  # what a server would send
        return Reply(fields, obs.reward, bool(obs.done), dict(obs.metadata or {}))

    def close(self) -> None:
        self.env.close()


def _is_local(url: str) -> bool:
    return any(h in url for h in ("//127.0.0.1", "//localhost", "//[::1]"))


class Remote:
    """One OpenEnv WebSocket session (``/ws``): its own env instance on the server."""

    def __init__(self, base_url: str, message_timeout_s: float, connect_timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = message_timeout_s
        local = _is_local(self.base_url)
        self.schema = self._get("/schema", local)["action"]
        self.local, self.connect_timeout_s = local, connect_timeout_s
        self.lock, self.broken = threading.Lock(), ""
        self.ws = self._open()

    def _open(self) -> Any:
        from websockets.sync.client import connect

        ws_url = re.sub(r"^http", "ws", self.base_url) + "/ws"
        try:
            extra: dict[str, Any] = {"proxy": None} if self.local else {}
            # entered as a context manager: websockets 17 warns about a bare connect(); 16 accepts both
            return connect(ws_url, open_timeout=self.connect_timeout_s, max_size=2**27, **extra).__enter__()
        except Exception as exc:
            raise InfraError(f"openenv: cannot open {ws_url}: {exc}") from exc

    def _get(self, path: str, local: bool) -> dict[str, Any]:
        opener = (
            urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else urllib.request.build_opener()
        )
        try:
            with opener.open(self.base_url + path, timeout=self.timeout) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise InfraError(f"openenv: GET {self.base_url}{path} failed: {exc}") from exc

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        """One request and its reply. Any failure, a timeout included, ends the session: a late reply would
        otherwise answer the next request. A broken session raises ``InfraError`` until ``reconnect``."""
        with self.lock:
            if self.broken:
                raise InfraError(f"openenv: the session with {self.base_url} broke earlier: {self.broken}")
            try:
                self.ws.send(json.dumps(message))
                reply = json.loads(self.ws.recv(timeout=self.timeout))
            except TimeoutError:
                self._break(f"no reply to {message['type']} within {self.timeout:g} s")
                raise  # a step that hangs: clew's step timeout types it
            except Exception as exc:
                self._break(f"{type(exc).__name__}: {exc}")
                raise InfraError(f"openenv: session with {self.base_url} lost: {exc}") from exc
        if reply.get("type") == "error":
            data = reply.get("data", {})
            code, text = data.get("code"), data.get("message", "server error")
            if code == "VALIDATION_ERROR" and message["type"] == "step":
                raise InvalidAction(validation_message(data.get("errors", [])))
            if code == "EXECUTION_ERROR" and message["type"] == "step":
                raise RuntimeError(f"openenv: the env's step raised: {text}")
            raise InfraError(f"openenv: server error {code}: {text}")
        return reply.get("data", {})  # type: ignore[no-any-return]

    def _break(self, why: str) -> None:
        self.broken = why
        with contextlib.suppress(Exception):
            self.ws.close()

    def reset(self, seed: int, extra: dict[str, Any]) -> tuple[Reply, bool | None]:
        if self.broken:  # a new episode on a new session: the server gives it a fresh env
            self.ws, self.broken = self._open(), ""
        return self._reply(self._call({"type": "reset", "data": {"seed": seed, **extra}})), None

    def step(self, payload: dict[str, Any]) -> Reply:
        return self._reply(self._call({"type": "step", "data": payload}))

    @staticmethod
    def _reply(data: dict[str, Any]) -> Reply:
        return Reply(dict(data.get("observation", {})), data.get("reward"), bool(data.get("done")), {})

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the server ends the session on disconnect too
            self.ws.send(json.dumps({"type": "close"}))
        self.ws.close()


LAUNCHER = """
import functools, json, os, socket, sys, threading
import uvicorn
def load(path):
    import importlib
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
def watch():  # the parent holds our stdin open: EOF means it is gone, and so are we
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
spec = json.loads(sys.argv[1])
if "app" in spec:
    app = load(spec["app"])
else:
    from openenv.core.env_server.http_server import create_fastapi_app
    factory = functools.partial(load(spec["env"]), **spec["kwargs"])
    app = create_fastapi_app(factory, load(spec["action"]), load(spec["observation"]), max_concurrent_envs=1)
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own bind: the port is free again at exit
sock.bind(("127.0.0.1", 0))  # bound here, so no other process can hold the port between its choice and its use
with open(spec["port_file"] + ".part", "w") as out:
    out.write(str(sock.getsockname()[1]))
os.replace(spec["port_file"] + ".part", spec["port_file"])
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


class LocalServer:
    """A uvicorn subprocess serving one OpenEnv env (``spec``: ``{"app": "mod:app"}`` or ``{"env", "action",
    "observation", "kwargs"}``) on a 127.0.0.1 port it binds itself and names in a file (so servers started side by
    side never race for a port). It exits when closed, when this object is collected, and when this process dies
    (it watches the stdin pipe this process holds)."""

    def __init__(self, spec: dict[str, Any], start_timeout_s: float) -> None:
        self.base_url = ""
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._dir = tempfile.TemporaryDirectory(prefix="clew-openenv-")
        port_file = os.path.join(self._dir.name, "port")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        argv = [sys.executable, "-c", LAUNCHER, json.dumps({**spec, "port_file": port_file})]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self._finalizer = weakref.finalize(self, _stop, self.proc, self.log, self._dir)
        deadline = time.monotonic() + start_timeout_s
        while True:
            if self.proc.poll() is not None:
                tail = self._tail()
                self.close()
                raise InfraError(f"openenv: server exited with {self.proc.returncode}: {tail}")
            if not self.base_url and os.path.exists(port_file):
                with open(port_file) as named:
                    self.base_url = f"http://127.0.0.1:{int(named.read())}"
            if self.base_url and _healthy(self.base_url):
                return
            if time.monotonic() > deadline:
                tail = self._tail()
                self.close()
                raise InfraError(f"openenv: server not up after {start_timeout_s}s: {tail}")
            time.sleep(0.1)

    def _tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        self._finalizer()


def _healthy(base_url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(base_url + "/health", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes], log: Any, folder: tempfile.TemporaryDirectory[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdin is not None:
        proc.stdin.close()
    log.close()
    folder.cleanup()
