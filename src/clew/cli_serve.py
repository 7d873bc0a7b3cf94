"""``clew serve MODEL`` and ``clew check-template MODEL``.

``serve``: the OpenAI-compatible gateway on a model, recording every call (``clew.gateway``).

Sessions open on their first call: give each episode of a harness its own base URL,
``http://HOST:PORT/s/<session>/v1`` (or send ``X-Clew-Session``; calls without either go to ``default``),
and end it with ``POST /s/<session>/close {"reward": R}``. With ``--record DIR`` each closed episode is
appended to ``DIR/episodes.jsonl`` as one JSON line (``clew.types.Episode.to_dict``: exact prompt and
sampled ids and log-probs per turn); sessions still open when the server stops (Ctrl-C or SIGTERM) are
written with ``error: "open at shutdown"``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from clew.cli_checks import int_at_least, non_negative_float


def add_serve_args(p: argparse.ArgumentParser, engines: list[str]) -> None:
    p.add_argument("model", help="model path/name or run directory")
    p.add_argument("--engine", default="hf", choices=engines, help="the engine that samples (default hf)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only; no authentication)")
    p.add_argument("--port", type=int_at_least(0, 65535), default=8000, help="0 picks a free port")
    p.add_argument("--max-tokens", type=int_at_least(1), default=256, help="completion budget of calls that set none")
    p.add_argument("--seed", type=int, default=0, help="seeds the calls that send no seed")
    p.add_argument("--record", metavar="DIR", help="append each closed episode to DIR/episodes.jsonl")
    p.add_argument("--max-seconds", type=non_negative_float, default=0.0, help=argparse.SUPPRESS)  # tests: stop after


class Recorder:
    """Appends episodes to ``episodes.jsonl``, one ``os.write`` per line on an ``O_APPEND`` file: a crash
    leaves whole lines."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.count, self._lock = folder / "episodes.jsonl", 0, threading.Lock()

    def __call__(self, episode: Any) -> None:
        line = (json.dumps(episode.to_dict()) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            self.count += 1


def cmd_check_template(args: argparse.Namespace, console: Any) -> int:
    """Print the template checks as a table; exit 1 when one fails."""
    from rich.table import Table
    from transformers import AutoTokenizer

    from clew.gateway.template import check_template
    from clew.policy.models import resolve_model

    checks = check_template(AutoTokenizer.from_pretrained(resolve_model(args.model)))
    table = Table("check", "result", "detail", title=f"chat template of {args.model}")
    for check in checks:
        table.add_row(check.name, "ok" if check.ok else "FAIL", check.detail, style=None if check.ok else "red")
    console.print(table)
    return 0 if all(c.ok for c in checks) else 1


def cmd_serve(args: argparse.Namespace, say: Any) -> int:
    from clew.cli_eval import build_engine
    from clew.gateway import Gateway, GatewayConfig

    engine, policy = build_engine(args.model, args.engine)
    recorder = Recorder(Path(args.record)) if args.record else None
    config = GatewayConfig(args.host, args.port, Path(args.model).name or args.model, args.max_tokens,
                           seed=args.seed, open_on_demand=True)  # fmt: skip
    gateway = Gateway(engine, policy.tokenizer, config, on_close=recorder)
    say(f"serving {args.model} on {gateway.url}/v1 (one episode per session: {gateway.url}/s/<session>/v1)")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # set here: a parent that ignores SIGINT must not make it unkillable
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait(args.max_seconds or None)
    finally:
        gateway.stop_serving()  # first: a session opened after the sweep below would be lost
        for key in gateway.sessions.open_keys():
            gateway.close_session(key, 0.0, error="open at shutdown")
        gateway.close()
        engine.close()
    if recorder is not None:
        say(f"{recorder.count} episodes in {recorder.path}")
    return 0
