"""instruct-v0: open-ended instructions with no program verifier. One reply per task; the env pays nothing (outcome
0, no success verdict), so a reward source (``rewards: [{name: judge}]``, ``clew.rewards``) must score it.

Tasks come from a JSONL file (``path``: one ``{"prompt": ..., "reference": ...}`` per line, ``reference``
optional) or from the built-in set: short questions about capitals, opposites, plurals and colours, each with a
reference answer. The reference is never shown to the policy: it is the task's gold reply (``HasGoldReply``),
which a judge reads with ``params.reference: true``, and the scripted expert's answer (SFT warm starts; with noise, a
random task's reference instead).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from clew.envs.base import PickledSnapshot, StepResult, ensure_running

CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
            "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Greece": "Athens",
            "Norway": "Oslo", "Poland": "Warsaw", "Cuba": "Havana", "Chile": "Santiago", "India": "New Delhi",
            "China": "Beijing", "Russia": "Moscow", "Austria": "Vienna", "Ireland": "Dublin", "Portugal": "Lisbon",
            }  # fmt: skip
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "light": "dark", "up": "down",
             "open": "closed", "early": "late", "full": "empty", "hard": "soft", "young": "old", "wet": "dry",
             "rich": "poor", "strong": "weak", "high": "low", "loud": "quiet", "long": "short", "thick": "thin",
             }  # fmt: skip
PLURALS = {"child": "children", "mouse": "mice", "foot": "feet", "tooth": "teeth", "goose": "geese", "man": "men",
           "woman": "women", "person": "people", "leaf": "leaves", "knife": "knives", "wolf": "wolves",
           "box": "boxes", "city": "cities", "baby": "babies", "bus": "buses", "fish": "fish", "sheep": "sheep",
           }  # fmt: skip
COLOURS = {"grass": "green", "the sky on a clear day": "blue", "snow": "white", "coal": "black", "a ripe banana":
           "yellow", "a ripe tomato": "red", "an orange": "orange", "milk": "white", "a lemon": "yellow",
           "blood": "red", "a carrot": "orange", "charcoal": "black"}  # fmt: skip


def builtin_tasks() -> list[tuple[str, str]]:
    """(prompt, reference) pairs of the built-in set, in a fixed order."""
    tasks = [(f"What is the capital of {k}? Answer in a few words.", v) for k, v in CAPITALS.items()]
    tasks += [(f"What is the opposite of '{k}'? Answer in one word.", v) for k, v in OPPOSITES.items()]
    tasks += [(f"What is the plural of '{k}'? Answer in one word.", v) for k, v in PLURALS.items()]
    tasks += [(f"What colour is {k}? Answer in one word.", v) for k, v in COLOURS.items()]
    return tasks


def load_tasks(path: str | Path) -> list[tuple[str, str | None]]:
    """(prompt, reference or None) per line of a JSONL file; a line without a string ``prompt`` fails naming it."""
    tasks: list[tuple[str, str | None]] = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}:{number}: each line must be an object with a string 'prompt'")
        reference = row.get("reference")
        tasks.append((row["prompt"], None if reference is None else str(reference)))
    if not tasks:
        raise ValueError(f"{path}: no tasks")
    return tasks


class Instruct(PickledSnapshot):
    """One open-ended instruction per episode (module docstring); the seed picks the task (shuffled once per
    seed range, so consecutive seeds differ)."""

    def __init__(self, path: str | None = None) -> None:
        self.tasks: list[tuple[str, str | None]] = load_tasks(path) if path else list(builtin_tasks())
        self._finished = True
        self.prompt, self.reference = "", self.tasks[0][1]

    def reset(self, seed: int) -> str:
        index = random.Random(seed).randrange(len(self.tasks))
        self.prompt, self.reference = self.tasks[index]
        self._finished = False
        return self.prompt

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "Instruct")
        self._finished = True
        return StepResult("", 0.0, True, False, {}, outcome=0.0)

    def state_key(self) -> str:
        return f"{self.prompt}|{'done' if self._finished else 'open'}"

    def expert_action(self) -> str:
        return self.reference or ""

    def gold_reply(self) -> str | None:
        return self.reference

    def valid_actions(self) -> list[str]:
        """Every task's reference answer (noisy expert demonstrations pick among them: plausible, mostly wrong)."""
        return sorted({r for _, r in self.tasks if r})
