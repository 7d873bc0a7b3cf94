"""`clew eval --policy openai:URL`: an OpenAI-compatible endpoint plays the held-out tasks as chat messages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from clew.cli import main
from clew.eval import eval_tasks
from clew.eval.api import OpenAIPolicy, evaluate_text

Reply = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


@pytest.fixture
def server() -> Iterator[Callable[[Reply], tuple[str, list[dict[str, Any]]]]]:
    """An OpenAI-style /v1/chat/completions on a thread, answering with ``reply(body)``; returns (URL, requests)."""
    started: list[ThreadingHTTPServer] = []

    def start(reply: Reply) -> tuple[str, list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append(body)
                code, answer = reply(body)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen

    yield start
    for httpd in started:
        httpd.shutdown()


def _chat(text: str, finish: str = "stop") -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}


def _solver(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A model that checks with the tool once, then answers: toolcalc's question is in the first message."""
    expression = re.search(r"what is (.*)\?", body["messages"][0]["content"]).group(1)  # type: ignore[union-attr]
    if len(body["messages"]) == 1:
        return 200, _chat(f"calc: {expression}")
    return 200, _chat(f"answer: {eval(expression)}")  # the env's own digits and operators


def test_an_endpoint_plays_every_task_with_the_whole_conversation(server: Any) -> None:
    url, seen = server(_solver)
    tasks = eval_tasks("toolcalc-v0", 6, 3, {})
    result, groups = evaluate_text(OpenAIPolicy(url, "solver", 0.7, 12), tasks, 3, 8, seed=5)
    assert result.episodes == 6 and result.success_rate == 1.0 and result.mean_turns == 2.0
    assert [len(g.episodes) for g in groups] == [3, 3] and all(e.error is None for g in groups for e in g.episodes)
    first, second = (b for b in seen if len(b["messages"]) == 1), (b for b in seen if len(b["messages"]) == 3)
    body = next(first)
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("solver", 0.7, 12)
    assert [m["role"] for m in next(second)["messages"]] == ["user", "assistant", "user"]
    assert len({b["seed"] for b in seen}) == len(seen) == 12  # a seed per request, as collect derives them
    turn = groups[0].episodes[0].turns[-1]
    assert turn.action_ids == [] and turn.action_text.startswith("answer: ") and turn.info["answer"]


def test_a_failing_endpoint_gives_recorded_infra_failures(server: Any) -> None:
    url, seen = server(lambda body: (503, {"error": "overloaded"}))
    result, groups = evaluate_text(OpenAIPolicy(url, "m", attempts=2), eval_tasks("toolcalc-v0", 2, 1, {}), 1, 8)
    assert result.error_rate == 1.0 and result.success_rate == 0.0 and len(seen) == 4  # two attempts each
    assert all(e.failure == "infra" and "503" in (e.error or "") for g in groups for e in g.episodes)


def test_a_reply_cut_at_the_token_limit_ends_its_episode(server: Any) -> None:
    url, _ = server(lambda body: (200, _chat("calc: 1 +", finish="length")))
    _, groups = evaluate_text(OpenAIPolicy(url, "m"), eval_tasks("toolcalc-v0", 1, 1, {}), 1, 8)
    (episode,) = groups[0].episodes
    assert episode.truncation_reason == "max_new_tokens" and len(episode.turns) == 1 and episode.turns[0].cut


def test_clew_eval_takes_an_openai_policy(server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = server(_solver)
    out = tmp_path / "api.json"
    args = ["eval", "--env", "toolcalc-v0", "--episodes", "4", "--group-size", "2", "--k", "2", "--json", str(out)]
    assert main([*args, "--policy", f"openai:{url}", "--model", "solver"]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["policy"] == f"openai:{url}" and run["success_rate"] == 1.0 and run["at_k"]["maj@2"]["value"] == 1.0
    assert main([*args, "--policy", f"openai:{url}"]) == 2
    assert "needs --model NAME" in capsys.readouterr().err
    assert main([*args, "--policy", "openai:localhost:8000", "--model", "m"]) == 2
    assert "expected openai:http(s)://" in capsys.readouterr().err


@pytest.mark.slow  # a `clew serve` subprocess that loads the model
def test_a_clew_serve_endpoint_is_evaluated_like_any_api(tiny_dir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "clew.cli", "serve", str(tiny_dir), "--port", "0", "--max-tokens", "4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
    served = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert served.stdout is not None
        url = next(x for x in served.stdout if "serving" in x).split(" on ")[1].split("/v1")[0] + "/v1"
        tasks = eval_tasks("keydoor-v0", 4, 2, {"width": 3, "height": 3, "max_steps": 4})
        result, groups = evaluate_text(OpenAIPolicy(url, "tiny", 1.0, 4), tasks, 2, 4, concurrency=4)
    finally:
        served.send_signal(signal.SIGTERM)
        served.communicate(timeout=60)
    assert result.episodes == 4 and result.error_rate == 0.0
    assert all(1 <= len(e.turns) <= 4 and e.turns[0].action_text is not None for g in groups for e in g.episodes)
