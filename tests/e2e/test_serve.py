"""``clew serve``: a harness's calls through the OpenAI SDK become recorded episodes, one per session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from clew.types import Episode

openai = pytest.importorskip("openai", reason="the gateway tests drive it with the OpenAI SDK: pip install openai")


@pytest.mark.slow  # a subprocess that imports torch and loads the model (about 10 s)
def test_clew_serve_records_each_session_as_an_episode(tiny_dir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "clew.cli", "serve", str(tiny_dir), "--port", "0", "--max-tokens", "4",
               "--record", str(tmp_path / "rec")]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert server.stdout is not None
        line = next(x for x in server.stdout if "serving" in x)
        url = line.split(" on ")[1].split("/v1")[0]
        for session in ("a", "b"):
            client = openai.OpenAI(base_url=f"{url}/s/{session}/v1", api_key="unused", max_retries=0)
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"hello {session}"}])
        close = urllib.request.Request(f"{url}/s/a/close", data=json.dumps({"reward": 1.0}).encode(), method="POST")
        assert json.loads(urllib.request.urlopen(close, timeout=30).read())["outcome"] == 1.0
    finally:
        server.send_signal(signal.SIGTERM)  # stop: the open session "b" is written too, flagged
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0, out
    episodes = [
        Episode.from_dict(json.loads(x)) for x in (tmp_path / "rec" / "episodes.jsonl").read_text().splitlines()
    ]
    assert [(e.first_observation, e.outcome, e.error) for e in episodes] == [
        ("hello a", 1.0, None),
        ("hello b", 0.0, "open at shutdown"),
    ]
    assert all(len(e.turns) == 1 and 1 <= len(e.turns[0].action_ids) <= 4 for e in episodes)
