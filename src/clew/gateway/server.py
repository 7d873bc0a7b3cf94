"""``Gateway``: an OpenAI-compatible HTTP server in front of a clew engine that records every call as a turn.

Endpoints (under ``/v1`` or ``/s/<session>/v1``): ``POST chat/completions`` (streaming, tools, logprobs),
``POST responses`` (what the OpenAI Agents SDK calls; streamed or not), ``POST completions`` (a string or a
list of token ids as the prompt), ``GET models``; and ``POST /s/<session>/close`` with ``{"reward": R}``
to end an episode over HTTP. Bound to 127.0.0.1 by default: the gateway has no authentication, any API
key is accepted.

Bad input gets a 4xx and nothing else changes: malformed JSON or fields (400, naming the field), an
unknown session (404), a body over ``max_body_bytes`` (413), no ``Content-Length`` (411). An engine
failure is a 503 for the calls it hit. ``Gateway.close_session(key, outcome)`` returns the finished
``Episode``: exact prompt ids, sampled ids and log-probs per turn, ready for credit and training.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clew.gateway import api
from clew.gateway.batcher import Batcher
from clew.gateway.render import Renderer
from clew.gateway.sessions import Session, Sessions, UnknownSession, state_key
from clew.gateway.tools import Parsed, parse_tool_calls
from clew.policy.base import Completion, Engine, SamplingParams
from clew.types import Episode, FailureType, Turn

_PATH = re.compile(r"^(?:/s/(?P<key>[A-Za-z0-9._-]{1,128}))?(?P<route>/v1/[a-z/]+|/close)$")


@dataclass(frozen=True)
class GatewayConfig:
    """Where it listens and how calls are sampled by default.

    Attributes:
        host, port: the address (port 0: a free one, see ``Gateway.url``).
        model: the name ``/v1/models`` lists and responses carry (clients may send any model name).
        max_tokens: a call's completion budget when it sets none.
        max_tokens_cap: the most a call may sample whatever it asks (training: ``rollout.max_new_tokens``, the
            budget the run's memory and credit were sized for); None: only the model's context limits it.
        max_body_bytes: larger request bodies get a 413.
        seed: calls without a ``seed`` draw from ``hash(seed, session, turn)``, so runs repeat.
        open_on_demand: a call naming an unknown session opens it (``clew serve``); otherwise a 404.
        batch_window_s: how long the engine thread gathers concurrent calls into one batch.
    """

    host: str = "127.0.0.1"
    port: int = 0
    model: str = "clew"
    max_tokens: int = 256
    max_tokens_cap: int | None = None
    max_body_bytes: int = 4 << 20
    seed: int = 0
    open_on_demand: bool = False
    batch_window_s: float = 0.002


class Gateway:
    """Serve ``engine`` (with its ``tokenizer``) over HTTP in a background thread; use as a context manager.
    ``on_close(episode)`` is called with each finished episode (``clew serve --record`` writes them)."""

    def __init__(
        self, engine: Engine, tokenizer: Any, config: GatewayConfig | None = None,
        on_close: Callable[[Episode], None] | None = None,
    ) -> None:  # fmt: skip
        self.config, self.on_close = config or GatewayConfig(), on_close
        self.engine, self.renderer = engine, Renderer.of(tokenizer)
        self.sessions = Sessions(self.config.open_on_demand)
        self.batcher = Batcher(engine, window_s=self.config.batch_window_s)
        self._server = _Server((self.config.host, self.config.port), _Handler)
        self._server.gateway = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="clew-gateway", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def base_url(self, session: str) -> str:
        """The OpenAI base URL of one session: hand it to the harness's client."""
        return f"{self.url}/s/{session}/v1"

    def open_session(
        self, key: str, task_id: str = "", group_id: int = 0, seed: int = 0, temperature: float | None = None
    ) -> Session:
        """Open an episode's session; ``temperature`` (training: the rollout's) overrides the client's."""
        return self.sessions.open(key, task_id, group_id, seed, temperature)

    def close_session(
        self, key: str, outcome: float, rewards: list[float] | None = None, error: str | None = None,
        failure: FailureType = "policy",
    ) -> Episode:  # fmt: skip
        """End the session: its episode with the harness's ``outcome`` (and per-turn ``rewards``); ``error``
        marks it failed (``failure`` says whose fault)."""
        with self.sessions.lock(key, create=False):
            episode = self.sessions.get(key).episode(outcome, rewards, error, failure)  # may refuse the rewards
            self.sessions.close(key)
        if self.on_close is not None:
            self.on_close(episode)
        return episode

    def stop_serving(self) -> None:
        """Accept no new calls (calls in flight still finish and record); ``close`` after it."""
        self._server.shutdown()

    def close(self) -> None:
        self.stop_serving()
        self._server.server_close()
        self.batcher.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one call, one turn ---------------------------------------------------------------------------
    def turn(
        self, key: str, body: dict[str, Any], messages: list[dict[str, Any]] | None, prompt: list[int] | None = None
    ) -> tuple[Parsed, Completion, list[int]]:
        """Render (or take) the prompt, sample it, record the turn in session ``key``."""
        tools, stops = api.chat_tools(body), api.stop_strings(body)
        with self.sessions.lock(key):
            session = self.sessions.get(key)
            params = self._params(session, body)
            with self.batcher.coming():  # a batch being gathered waits for this call
                ids = list(prompt) if prompt is not None else self._render(_checked(messages), tools)
                if len(ids) + params.max_new_tokens > self.engine.max_model_len:
                    raise api.BadRequest(
                        f"prompt ({len(ids)} tokens) + max_tokens ({params.max_new_tokens}) exceeds the model's "
                        f"context ({self.engine.max_model_len})"
                    )
                future = self.batcher.submit(ids, params, self._call_seed(session, body))
            completion = api.cut_at_stop(_sampled(future), stops, self.renderer.decode)
            parsed = self._parse(completion, tools, stops)
            session.record(self._record(ids, completion, parsed, messages), messages)
        return parsed, completion, ids

    def _params(self, session: Session, body: dict[str, Any]) -> SamplingParams:
        """The call's sampling: a training session's temperature (top_p 1) over the client's, the budget capped."""
        forced = {} if session.temperature is None else {"temperature": session.temperature, "top_p": 1.0}
        params = api.sampling({**body, **forced}, self.renderer.eos_id, self.config.max_tokens)
        if self.config.max_tokens_cap is not None and params.max_new_tokens > self.config.max_tokens_cap:
            return replace(params, max_new_tokens=self.config.max_tokens_cap)
        return params

    def _call_seed(self, session: Session, body: dict[str, Any]) -> int:
        """The client's ``seed``, except in a training session: there a harness's fixed seed would make every
        member of a group sample the same tokens, so each call draws from ``hash(seed, session, turn)``."""
        if isinstance(body.get("seed"), int) and not isinstance(body["seed"], bool) and session.temperature is None:
            return int(body["seed"])
        return self._seed(session.key, len(session.turns))

    def _render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[int]:
        try:
            return self.renderer.chat(messages, tools)
        except ValueError:
            raise
        except Exception as exc:  # the template itself refused (a jinja error): the request's shape, not the engine
            raise api.BadRequest(f"the model's chat template cannot render these messages: {exc}") from exc

    def _parse(self, completion: Completion, tools: list[dict[str, Any]] | None, stops: tuple[str, ...]) -> Parsed:
        if not tools:
            return Parsed(completion.text, [], False)
        raw = self.renderer.raw(completion.token_ids)  # special tokens kept: some formats' markers are special
        cut = [raw.index(s) for s in stops if s in raw]
        return parse_tool_calls(raw[: min(cut)] if cut else raw, self.renderer.tool_format)

    def _record(
        self, ids: list[int], completion: Completion, parsed: Parsed, messages: list[dict[str, Any]] | None
    ) -> Turn:
        info: dict[str, Any] = {"tool_calls": len(parsed.calls)}
        if parsed.malformed:
            info |= {"malformed_tool_call": True, "invalid_action": True}
        return Turn(
            ids, list(completion.token_ids), list(completion.logprobs), completion.text,
            state_key=state_key(messages) if messages is not None else None, info=info,
            cut=completion.finish_reason == "length",
            token_entropies=list(completion.entropies) if completion.entropies else None,
        )  # fmt: skip

    def _seed(self, key: str, turn: int) -> int:
        digest = hashlib.sha256(f"{self.config.seed}:{key}:{turn}".encode()).digest()
        return int.from_bytes(digest[:4], "little")


class EngineFailure(RuntimeError):
    """The engine raised while sampling a call (a 503: the gateway's side, not the request's)."""


def _sampled(future: Future[Completion]) -> Completion:
    try:
        return future.result()
    except Exception as exc:
        raise EngineFailure(f"{type(exc).__name__}: {exc}") from exc


def _checked(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise api.BadRequest("messages must be a non-empty list of objects")
    return messages


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # a burst of concurrent clients queues instead of being refused
    gateway: Gateway


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: a client's calls reuse one connection
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between them

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per call on stderr would drown a run's output

    def do_GET(self) -> None:
        found = _PATH.match(self.path.split("?")[0])
        if found and found["route"] == "/v1/models":
            model = {"id": self.server.gateway.config.model, "object": "model", "created": 0, "owned_by": "clew"}
            return self._json(200, {"object": "list", "data": [model]})
        self._error(404, f"no such endpoint: GET {self.path}")

    def do_POST(self) -> None:
        found = _PATH.match(self.path.split("?")[0])
        if not found:
            return self._error(404, f"no such endpoint: POST {self.path}")
        body = self._body()
        if body is None:
            return
        key = found["key"] or self.headers.get("X-Clew-Session") or "default"
        try:
            self._dispatch(found["route"], key, body)
        except UnknownSession:
            self._error(404, f"unknown session {key!r}: open it first (or serve with open_on_demand)")
        except (api.BadRequest, ValueError) as exc:
            self._error(400, str(exc))
        except EngineFailure as exc:  # this call is lost, the gateway goes on
            self._error(503, f"the engine failed: {exc}", kind="server_error")
        except Exception as exc:
            self._error(500, f"the gateway failed: {type(exc).__name__}: {exc}", kind="server_error")

    def _dispatch(self, route: str, key: str, body: dict[str, Any]) -> None:
        gateway, model = self.server.gateway, self.server.gateway.config.model
        if route == "/v1/chat/completions":
            parsed, completion, ids = gateway.turn(key, body, body.get("messages"))
            message, finish = api.assistant_message(parsed), api.finish_reason(completion, parsed)
            use = api.usage(ids, completion)
            if body.get("stream"):
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                return self._stream(api.chat_chunks(model, message, finish, use if include else None))
            lp = api.token_logprobs(completion, _pieces(gateway, completion)) if body.get("logprobs") else None
            return self._json(200, api.chat_response(model, message, finish, use, lp))
        if route == "/v1/responses":
            parsed, completion, ids = gateway.turn(key, body, api.responses_messages(body))
            response = api.responses_response(model, parsed, completion, api.usage(ids, completion))
            if body.get("stream"):
                return self._stream(api.responses_events(response), named=True)
            return self._json(200, response)
        if route == "/v1/completions":
            parsed, completion, ids = gateway.turn(key, {**body, "tools": None}, None, _prompt_ids(gateway, body))
            finish = "length" if completion.finish_reason == "length" else "stop"
            return self._json(200, api.text_response(model, completion.text, finish, api.usage(ids, completion)))
        if route == "/close":
            episode = gateway.close_session(key, float(body.get("reward", 0.0)), body.get("rewards"))
            return self._json(200, {"session": key, "turns": len(episode.turns), "outcome": episode.outcome})
        self._error(404, f"no such endpoint: POST {self.path}")

    def _body(self) -> dict[str, Any] | None:
        """The JSON object of the request, or None after answering with the reason it was refused."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(411, "a Content-Length header is required")
            return None
        size, limit = int(length), self.server.gateway.config.max_body_bytes
        if size > limit:
            self._drain(size)
            self._error(413, f"request body of {size} bytes exceeds the gateway's limit of {limit}")
            return None
        try:
            body = json.loads(self.rfile.read(size) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._error(400, f"the request body is not valid JSON: {exc}")
            return None
        if not isinstance(body, dict):
            self._error(400, "the request body must be a JSON object")
            return None
        return body

    def _drain(self, size: int) -> None:
        """Read (and drop) a refused body, so the client sees the 413 rather than a reset connection."""
        left = min(size, 64 << 20)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                return
            left -= len(chunk)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: list[dict[str, Any]], named: bool = False) -> None:
        """Server-sent events: chat chunks end with ``[DONE]``; Responses events (``named``) carry their type as
        the event name and end with ``response.completed``."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.close_connection = True
        self.end_headers()
        for chunk in chunks:
            event = f"event: {chunk['type']}\n" if named else ""
            self.wfile.write(f"{event}data: {json.dumps(chunk)}\n\n".encode())
        if not named:
            self.wfile.write(b"data: [DONE]\n\n")

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self.close_connection = True  # a refused body may be unread: never parse it as the next request
        self._json(status, {"error": {"message": message, "type": kind, "code": status}})


def _pieces(gateway: Gateway, completion: Completion) -> list[str]:
    return [gateway.renderer.tokenizer.decode([t]) for t in completion.token_ids]


def _prompt_ids(gateway: Gateway, body: dict[str, Any]) -> list[int]:
    """``/v1/completions``' prompt: a string (encoded as is) or a list of token ids (taken as they are)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt:
        return gateway.renderer.encode(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        vocab = len(gateway.renderer.tokenizer)
        if not all(0 <= t < vocab for t in prompt):
            raise api.BadRequest(f"prompt token ids must lie in [0, {vocab})")
        return list(prompt)
    raise api.BadRequest("prompt must be a non-empty string or list of token ids (one prompt per call)")
