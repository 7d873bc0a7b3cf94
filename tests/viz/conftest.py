"""A small run directory built through clew's own store: iteration 1 as a version-1 file, iteration 2 as version 2.

Group 0 (task ``t0``, seed 7): episode 0 succeeds in 2 turns; episode 1 repeats turn 0, then diverges at turn 1
with XSS payloads in its action and observation, and ends truncated after 3 turns with an invalid action.
Group 1 (task ``t1``, seed 8): episode 2 errors after 1 turn, a policy failure (iteration 1, a version-1 file
without the ``failure`` column, reads it as infra: the rule before failures were typed); episode 3 succeeds in
1 turn (marked as a context edit, a summary, to check how the episode page shows one).
Group 2 (task ``t2``, seed 9): episode 4 succeeds in 1 turn from state ``s0`` (another task's ``s0``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from clew.store.trajectories import turn_records, write_trajectories
from clew.table import TurnTable
from clew.types import Episode, Group, Turn

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
ATTR = '" onmouseover="window.__pwned=1'
XSS_ACTION = f"{SCRIPT} {ATTR}"
XSS_OBSERVATION = f"{IMG} {SCRIPT}"
VOCAB = {"<pad>": 0, "<bos>": 1, "Hello": 2, "world": 3, IMG: 4, "go": 5, "north": 6, "take": 7, SCRIPT: 8, "x": 9}
# per-turn advantages in table row order (episode 0: 2 turns, episode 1: 3, episodes 2, 3, 4: 1 each)
TURN_ADV = np.array([0.5, 1.0, -0.5, -2.0, -0.5, 0.0, 0.25, 0.0])
RETURNS = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
# per-token advantages (v2 file only): 2 + 1 + 2 + 2 + 1 + 1 + 1 + 1 = 11 action tokens
TOKEN_ADV = np.array([0.5, 0.25, 1.0, -0.5, -0.5, -2.0, 1.5, -0.5, 0.0, 0.25, 0.0])


def turn(ids: list[int], text: str, obs: str, key: str | None, reward: float = 0.0, **fields: Any) -> Turn:
    """A turn; ``context_edit`` and ``token_entropies`` are its typed fields, any other keyword goes to ``info``."""
    typed = {k: fields.pop(k) for k in ("context_edit", "token_entropies") if k in fields}
    prompt = fields.pop("prompt", [1, 2, 3])
    return Turn(prompt, ids, [-0.1 * (k + 1) for k in range(len(ids))], text, reward, obs, key, fields, **typed)


def groups() -> list[Group]:
    a = Episode(
        "t0",
        0,
        7,
        [
            turn([5, 6], "go north", "You see a key.", "s0"),
            turn([7], "take", "Done.", "s1", 1.0, prompt=[1, 2, 3, 5, 6]),
        ],
        1.0,
        terminated=True,
        first_observation="Hello world",
    )
    b = Episode(
        "t0",
        0,
        7,
        [
            turn([5, 6], "go north", "You see a key.", "s0", token_entropies=[0.3, 0.4]),
            turn([8, 9], XSS_ACTION, XSS_OBSERVATION, "s1", invalid_action=True),
            turn([5], "go", "Nothing.", "s0"),
        ],
        0.0,
        truncated=True,
        truncation_reason="max_turns",
        first_observation="Hello world",
    )
    c = Episode(
        "t1",
        1,
        8,
        [turn([4], IMG, "crash", "s0")],
        0.0,
        truncated=True,
        truncation_reason="error",
        error="boom <b>",
        first_observation="Hello",
        failure="policy",
    )
    d = Episode("t1", 1, 8, [turn([7], "take", "Got it.", None, 1.0, context_edit="summary")], 1.0, terminated=True)
    e = Episode("t2", 2, 9, [turn([7], "take", "Got it.", "s0", 1.0)], 1.0, terminated=True)
    return [Group(0, "t0", 7, [a, b]), Group(1, "t1", 8, [c, d]), Group(2, "t2", 9, [e])]  # fmt: skip


def write_v1(path: Path, table: TurnTable, iteration: int) -> None:
    """A batch-1 file: no token columns, no failure types, no schema metadata, entropies inside ``info``."""
    records = turn_records(table, iteration, TURN_ADV, RETURNS)
    for record, t in zip(records, table.turns):
        record.pop("token_advantages"), record.pop("token_entropies"), record.pop("failure"), record.pop("anchor_group")
        entropies = {"token_entropies": t.token_entropies} if t.token_entropies else {}
        record["info"] = json.dumps({**t.info, **entropies})
    pq.write_table(pa.Table.from_pylist(records), path)


def build_run(run_dir: Path) -> Path:
    table = TurnTable.from_groups(groups())
    (run_dir / "trajectories").mkdir(parents=True)
    write_v1(run_dir / "trajectories" / "iter_000001.parquet", table, 1)
    write_trajectories(
        run_dir / "trajectories" / "iter_000002.parquet", turn_records(table, 2, TURN_ADV, RETURNS, TOKEN_ADV)
    )
    (run_dir / "base").mkdir()
    Tokenizer(WordLevel(VOCAB, unk_token="<pad>")).save(str(run_dir / "base" / "tokenizer.json"))
    (run_dir / "config.yaml").write_text("seed: 0\npolicy:\n  model: tiny\n")
    metrics = [
        {"kind": "eval", "iteration": 0, "eval/success_rate": 0.25, "eval/success_low": 0.1, "eval/success_high": 0.5,
         "eval/mean_return": 0.25, "rollout/env_steps_total": 0},
        {"kind": "iteration", "iteration": 1, "rollout/success_rate": 0.5, "policy/approx_kl": 0.01,
         "rollout/env_steps_total": 7},
        {"kind": "iteration", "iteration": 2, "rollout/success_rate": 0.75, "policy/approx_kl": 0.02,
         "rollout/env_steps_total": 14},
        {"kind": "eval", "iteration": 2, "eval/success_rate": 0.5, "eval/success_low": 0.3, "eval/success_high": 0.7,
         "eval/mean_return": 0.5, "rollout/env_steps_total": 14},
        {"kind": "monitor", "iteration": 2, "detector": "length_drift", "stops_run": False},
    ]  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return run_dir


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("viz") / "small-run")
