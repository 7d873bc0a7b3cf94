"""A real OpenAI-compatible HTTP judge for tests, with a stated rule instead of a model: ``length`` scores the
agent's words in the last transcript (a length-biased judge, 0-10), ``ranks`` scores each ranked candidate by its
words, ``seeded`` answers the request's seed mod 11, ``garbage`` never follows the format, ``sleep`` answers after
``delay`` seconds, ``error`` answers 500. It counts requests and the most it served at once."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

AGENT = re.compile(r"the agent: (.*)")
BLOCK = re.compile(r"<<<TRANSCRIPT \w+ ([A-Z])>>>\n(.*?)\n<<<END", re.DOTALL)


@dataclass
class JudgeServer:
    mode: str = "length"
    delay: float = 0.0
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def reply(self, body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        if self.mode == "garbage":
            return "It looks fine to me."
        if self.mode == "seeded":  # a verdict that depends on the request's seed only
            return f"SCORE: {body['seed'] % 11}"
        if self.mode == "ranks":
            return "\n".join(f"{c}: {words(t)}" for c, t in BLOCK.findall(user))
        return f"SCORE: {words(user)}"


def words(text: str) -> int:
    said = AGENT.findall(text)
    return min(10, len(said[-1].split())) if said else 0


@contextmanager
def serve(mode: str = "length", delay: float = 0.0) -> Iterator[JudgeServer]:
    state = JudgeServer(mode, delay)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests += 1
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                state.bodies.append(body)
            try:
                time.sleep(state.delay)
                if state.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                data = json.dumps({"choices": [{"message": {"content": state.reply(body)}, "finish_reason": "stop"}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())
            finally:
                with state.lock:
                    state.in_flight -= 1

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
