"""scienceworld/<task>: ScienceWorld 1.2.3 science-experiment tasks, played through its JVM.

Ids: ``scienceworld/<task>`` for the 30 tasks (``boil``, ``find-living-thing``, ``melt``, ...; the
package's ids such as ``1-1`` work too). Gold paths run from 5 steps (find-* tasks: ~12) to 178
(inclined-plane-friction-unnamed-surfaces); steps cost 5-40 ms here, a reset 0.1-0.4 s (the JVM
takes 1-4 s to start).

Kwargs:
    split: ``train`` | ``dev`` | ``test``: the task's variations to draw from. ``reset(seed)`` plays
        variation ``variations[seed % len(variations)]`` of that split (``info["variation"]``).
    step_limit: turn budget, invalid commands included (default 100); running out truncates.
    simplifications: ScienceWorld's comma-separated simplifications (``easy``, ``openDoors``, ...).
    jvm: ``shared`` (default: one JVM per process for every ScienceWorld env, calls serialised) or
        ``own`` (a JVM for this env alone). Either way it starts at the first ``reset`` and shuts
        down on ``close()``, when the env is garbage-collected, or with the process.

Observation: the task description and ``look around`` at reset, then the simulator's answer.
Reward: the change in score, normalised from 0-100 to 0-1 (a failed task's -100 counts as 0), so
the rewards sum to the final normalised score. No ``outcome`` is reported: the score is earned step
by step (each subgoal pays when reached), and an explicit outcome equal to that sum would be counted
a second time on top of the rewards; the episode's outcome is the sum of its rewards, the final
normalised score, however the episode ends; ``gated`` (G-RA), which needs an outcome reported
apart, finds none here.
Terminated: the task is completed or failed (e.g. focusing on the wrong object). ``info["success"]``:
completed with full score. A command the parser rejects ("No known action matches that input.")
is a recorded step flagged ``info["invalid_action"]``; it changes nothing but costs a turn.

Expert: the task's gold path (``getGoldActionSequence``), followed while the agent stays on it; see
``GoldPath`` for what happens off the path. Generating a gold path takes 2-12 s, so it happens only
when the expert is first asked in an episode (on a second simulator in the same JVM, so the episode
is untouched), once per variation and process; resets without an expert stay at 0.1-0.3 s.
State key: a hash of the free ``look`` and ``inventory`` texts and the score. Valid actions:
``getValidActionObjectCombinations`` (hundreds, computed on request), sorted.

Determinism: the JVM runs with ``-XX:hashCode=2`` (every identity hash equal). With the default
hashes the order in which a room lists its objects, and the gold path's choices, changed from one
load to the next (measured on find-living-thing); with it, transcripts and gold paths repeat across
loads and processes.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from clew.envs.adapters._jvm import GoldPath, JavaServer, JvmEnv, JvmLease
from clew.envs.base import StepResult, ensure_running, normalize_action

SPLITS = ("train", "dev", "test")
SIMPLIFICATIONS = (
    "easy",
    "teleportAction",
    "selfWateringFlowerPots",
    "openContainers",
    "openDoors",
    "noElectricalAction",
)
JAVA_OPTS = ("-XX:+UnlockExperimentalVMOptions", "-XX:hashCode=2")
INVALID_REPLY = "No known action matches that input."

_VARIATIONS: dict[tuple[str, str], list[int]] = {}
_GOLD: dict[tuple[str, int, str], list[str]] = {}


class ScienceWorld(JvmEnv):
    """One ScienceWorld task; ``reset(seed)`` picks a variation of ``split`` (see the module docstring)."""

    def __init__(
        self,
        task: str,
        split: Literal["train", "dev", "test"] = "train",
        step_limit: int = 100,
        simplifications: str = "",
        jvm: Literal["shared", "own"] = "shared",
    ) -> None:
        self.task = _task_name(task)
        if split not in SPLITS:
            raise ValueError(f"scienceworld split must be one of {SPLITS}, got {split!r}")
        if step_limit < 1:
            raise ValueError(f"scienceworld step_limit must be >= 1, got {step_limit}")
        unknown = [s for s in simplifications.split(",") if s and s not in SIMPLIFICATIONS]
        if unknown:
            raise ValueError(f"unknown scienceworld simplifications {unknown}; known: {', '.join(SIMPLIFICATIONS)}")
        if jvm not in ("shared", "own"):
            raise ValueError(f"scienceworld jvm must be 'shared' or 'own', got {jvm!r}")
        self.split, self.step_limit, self.simplifications, self.jvm = split, step_limit, simplifications, jvm
        self._jvm = JvmLease("ScienceWorld")
        self._gold_api: Any = None  # a second simulator in the same JVM, for generating gold paths
        self._finished = True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        server, api = self._connect()
        with server.lock:
            self.variation = self._variations(api)[seed % len(self._variations(api))]
            api.load(self.task, self.variation, self.simplifications, False)
            first = str(api.step("look around"))
            task = str(api.freeActionTaskDesc()).strip()
            raw = float(api.getScore())
            self._key = self._read_key(api, raw)
        self._score, self.steps = max(raw, 0.0), 0
        self._valid: list[str] | None = None
        self._history: list[tuple[str, str]] = [("", self._key)]  # (action, state key after it)
        self._path: GoldPath | None = None  # built when the expert is first asked, in _gold_path
        self._finished = False
        return f"{task}\n\n{first.strip()}"

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "ScienceWorld")
        server, api = self._live()
        act = normalize_action(action)
        with server.lock:
            reply = str(api.step(act))
            raw, completed = float(api.getScore()), bool(api.getCompleted())
            self._key = self._read_key(api, raw)
        self.steps, self._valid = self.steps + 1, None
        self._history.append((act, self._key))
        if self._path is not None:
            self._path.update(act, self._key)
        score = max(raw, 0.0)
        reward, self._score = score - self._score, score
        terminated = completed or raw < 0
        truncated = not terminated and self.steps >= self.step_limit
        self._finished = terminated or truncated
        info: dict[str, Any] = {
            "score": round(100 * raw),
            "variation": self.variation,
            "success": terminated and raw >= 1.0,
        }
        if self._path is not None:
            info["expert_on_path"] = self._path.on_path
        if reply.strip() == INVALID_REPLY:
            info["invalid_action"] = True
        return StepResult(reply.strip(), reward, terminated, truncated, info)

    def state_key(self) -> str:
        return self._key

    def expert_action(self) -> str:
        if self._path is None:
            self._path = self._gold_path()
        return self._path.expert()

    def valid_actions(self) -> list[str]:
        if self._valid is None:
            server, api = self._live()
            with server.lock:
                self._valid = valid = sorted({str(a) for a in api.getValidActionObjectCombinations()})
            return valid
        return self._valid

    def close(self) -> None:
        """Release the JVM (the last env using a shared one shuts it down)."""
        self._jvm.release()
        self._gold_api, self._finished = None, True

    # --- JVM ------------------------------------------------------------------------------
    def _connect(self) -> tuple[JavaServer, Any]:
        if not self._jvm.usable:
            self.close()  # a JVM that died is released before a new one is acquired
            from scienceworld.constants import BASEPATH, JAR_PATH

            server = JavaServer.acquire(JAR_PATH, BASEPATH, JAVA_OPTS, shared=self.jvm == "shared")
            with server.lock:
                api = server.jvm.scienceworld.runtime.pythonapi.PythonInterface()
            self._jvm.hold(self, server, api)
        return self._jvm.live()

    def _variations(self, api: Any) -> list[int]:
        key = (self.task, self.split)
        if key not in _VARIATIONS:  # the lists belong to the loaded task
            api.load(self.task, 0, self.simplifications, False)
            getter = {"train": api.getVariationsTrain, "dev": api.getVariationsDev, "test": api.getVariationsTest}
            _VARIATIONS[key] = [int(v) for v in getter[self.split]()]
        return _VARIATIONS[key]

    def _gold_path(self) -> GoldPath:
        """The variation's gold path (generated once per process), caught up with this episode's steps."""
        key = (self.task, self.variation, self.simplifications)
        if key not in _GOLD:
            server, _ = self._live()
            with server.lock:
                if self._gold_api is None:
                    self._gold_api = server.jvm.scienceworld.runtime.pythonapi.PythonInterface()
                self._gold_api.load(self.task, self.variation, self.simplifications, True)
                _GOLD[key] = [str(a) for a in self._gold_api.getGoldActionSequence()]
        path = GoldPath(list(_GOLD[key]), self._history[0][1], fallback="look around")
        for act, state in self._history[1:]:
            path.update(act, state)
        return path

    @staticmethod
    def _read_key(api: Any, raw: float) -> str:
        text = f"{api.freeActionLook()}\n{api.freeActionInventory()}\n{raw:.4f}"
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def _task_name(task: str) -> str:
    from scienceworld.constants import ID2TASK
    from scienceworld.utils import infer_task

    name = infer_task(task)
    if name not in ID2TASK.values():
        raise ValueError(f"unknown scienceworld task {task!r}; tasks: {', '.join(sorted(ID2TASK.values()))}")
    return str(name)
