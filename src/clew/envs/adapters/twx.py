"""twx/<game>: TextWorldExpress 1.1.0 games (cooking, coin collecting, map reading, sorting, ...) on its JVM.

Ids: ``twx/cookingworld``, ``twx/twc``, ``twx/coin``, ``twx/mapreader``, ``twx/arithmetic``,
``twx/sorting``, ``twx/simonsays``, ``twx/peckingorder``. Gold paths are 5-27 steps; a step costs
under a millisecond, a reset a few.

Kwargs:
    game_params: TWX's generation parameters, e.g. ``"numLocations=5,includeDoors=0"`` (default: the
        game's own defaults); a bad one is a ``ValueError`` with TWX's message at the first reset.
    split: ``train`` | ``dev`` | ``test``: TWX's seed sets (0-999, 10000-10999, 20000-20999);
        ``reset(seed)`` plays game seed ``seeds[seed % 1000]`` of the split (``info["game_seed"]``).
    step_limit: turn budget, invalid actions included (default 100); running out truncates.
    show_actions: append the valid actions to every observation (default False).
    jvm: ``shared`` (default: one JVM per process for every TWX env, calls serialised) or ``own``.
        Either way it starts at the first ``reset`` and shuts down on ``close()``, when the env is
        garbage-collected, or with the process.

Observation: the task description and the room at reset, then the game's answer.
Reward: the change in TWX's normalised score (0-1; a negative score counts as 0), so the rewards
sum to the final score. No ``outcome`` is reported: the score is earned step by step (each subgoal
pays when reached), and an explicit outcome equal to that sum would be counted a second time on top
of the rewards; the episode's outcome is the sum of its rewards, the final score, however the
episode ends (won, failed, out of turns); ``gated`` (G-RA), which needs an outcome reported apart,
finds none here. Terminated: ``tasksuccess`` or ``taskfailure``; ``info["success"]`` is
``tasksuccess``. An action outside ``validActions`` (the game answers "Unknown action ...") is a
recorded step flagged ``info["invalid_action"]``.

Expert: TWX's gold path, followed while the agent stays on it; see ``GoldPath`` for what happens off
the path. The coin and twc gold agents are random walks on a ``Random`` that clew cannot seed, so
their paths (12-35 steps for coin) differ between processes; each path is cached per process, so
within one it is a function of the seed. State key: a hash of TWX's ``look`` and ``inventory``
texts and the score. Valid actions: ``validActions``, sorted, duplicates dropped (simonsays lists
some twice).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from clew.envs.adapters._jvm import GoldPath, JavaServer, JvmEnv, JvmLease
from clew.envs.base import StepResult, ensure_running, normalize_action

GAMES = ("cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")
SPLITS = ("train", "dev", "test")

_SEEDS: dict[str, list[int]] = {}
_GOLD: dict[tuple[str, str, str, int], list[str]] = {}


class TextWorldExpress(JvmEnv):
    """One TWX game; ``reset(seed)`` generates game seed ``seeds[seed % len]`` of ``split``."""

    def __init__(
        self,
        game: str,
        game_params: str = "",
        split: Literal["train", "dev", "test"] = "train",
        step_limit: int = 100,
        show_actions: bool = False,
        jvm: Literal["shared", "own"] = "shared",
    ) -> None:
        if game not in GAMES:
            raise ValueError(f"unknown twx game {game!r}; games: {', '.join(GAMES)}")
        if split not in SPLITS:
            raise ValueError(f"twx split must be one of {SPLITS}, got {split!r}")
        if step_limit < 1:
            raise ValueError(f"twx step_limit must be >= 1, got {step_limit}")
        if jvm not in ("shared", "own"):
            raise ValueError(f"twx jvm must be 'shared' or 'own', got {jvm!r}")
        self.game, self.game_params, self.split = game, game_params, split
        self.step_limit, self.show_actions, self.jvm = step_limit, show_actions, jvm
        self._jvm = JvmLease("TextWorldExpress")
        self._finished = True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        server, api = self._connect()
        with server.lock:
            seeds = self._seeds(api)
            self.game_seed = seeds[seed % len(seeds)]
            gold_key = (self.game, self.game_params, self.split, self.game_seed)
            cached = _GOLD.get(gold_key)
            self._infos = json.loads(api.generateNewGameJSON(self.game_seed, self.split, cached is None))
            if self._infos["observation"].startswith("ERROR"):  # e.g. a game_params value TWX could not parse
                raise ValueError(f"twx/{self.game} game_params {self.game_params!r}: {self._infos['observation']}")
            if cached is None:
                cached = _GOLD[gold_key] = [str(a) for a in api.getGoldActionSequence()]
            task = str(api.getTaskDescription()).strip()
        self._score, self.steps = max(float(self._infos["score"]), 0.0), 0
        self._path = GoldPath(list(cached), self.state_key(), fallback="look around")
        self._finished = False
        return self._render(f"{task}\n\n{self._infos['observation'].strip()}")

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "TextWorldExpress")
        server, api = self._live()
        act = normalize_action(action)
        invalid = act not in self.valid_actions()
        with server.lock:
            self._infos = infos = json.loads(api.stepJSON(act))
        self.steps += 1
        self._path.update(act, self.state_key())
        score = max(float(infos["score"]), 0.0)
        reward, self._score = score - self._score, score
        terminated = bool(infos["tasksuccess"] or infos["taskfailure"])
        truncated = not terminated and self.steps >= self.step_limit
        self._finished = terminated or truncated
        info: dict[str, Any] = {
            "score": float(infos["score"]),
            "game_seed": self.game_seed,
            "success": bool(infos["tasksuccess"]),
            "expert_on_path": self._path.on_path,
        }
        if invalid:
            info["invalid_action"] = True
        return StepResult(self._render(infos["observation"].strip()), reward, terminated, truncated, info)

    def state_key(self) -> str:
        text = f"{self._infos['look']}\n{self._infos['inventory']}\n{float(self._infos['score']):.4f}"
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def expert_action(self) -> str:
        return self._path.expert()

    def valid_actions(self) -> list[str]:
        return sorted({str(a) for a in self._infos["validActions"]})

    def close(self) -> None:
        """Release the JVM (the last env using a shared one shuts it down)."""
        self._jvm.release()
        self._finished = True

    # --- JVM ------------------------------------------------------------------------------
    def _connect(self) -> tuple[JavaServer, Any]:
        if not self._jvm.usable:
            self.close()  # a JVM that died is released before a new one is acquired
            from textworld_express.constants import BASEPATH, JAR_PATH

            server = JavaServer.acquire(JAR_PATH, BASEPATH, shared=self.jvm == "shared")
            with server.lock:
                api = server.jvm.textworldexpress.runtime.PythonInterface()
                message = str(api.load(self.game, self.game_params) or "")
            if message:
                server.release()
                raise ValueError(f"twx/{self.game} game_params {self.game_params!r}: {message.strip()}")
            self._jvm.hold(self, server, api)
        return self._jvm.live()

    def _seeds(self, api: Any) -> list[int]:
        if self.split not in _SEEDS:
            getter = {"train": api.getSeedsTrain, "dev": api.getSeedsDev, "test": api.getSeedsTest}
            _SEEDS[self.split] = [int(s) for s in getter[self.split]()]
        return _SEEDS[self.split]

    def _render(self, text: str) -> str:
        if not self.show_actions:
            return text
        return f"{text}\nValid actions: {', '.join(self.valid_actions())}."
