"""nethack/<task> and minihack/<task>: the NetHack Learning Environment (Küttler et al., arXiv 2006.13760) and MiniHack
(Samvelyan et al., arXiv 2109.13202) as text.

Each observation is the game's message, the map as text (the screen's characters cropped to what has been seen,
``@`` the agent), a legend of what is near in words and relative steps ("staircase down (>): 2 south, 3 east";
letters are monsters), and the status line's numbers (HP, dungeon level, gold, experience level, turn, hunger).
Actions are named from NLE's own action set (``north``, ``northeast``, ``far west``, ``down``, ``search``, ``pickup``,
``kick``, ``eat``, ...: the task's own action set); anything else is an invalid action: flagged, not played (the game
does not move), the turn spent against the step limit.
The reward is the task's own (MiniHack: 1 on reaching its goal, small penalties; NetHack: the score's change); a
MiniHack episode that ends with a positive total reward is a success. NetHack's progression metric of BALROG is not
reproduced (its reference tables are not shipped): ``info`` has the depth and experience level.

Seeds are NLE's core and display seeds (no reseeding), so a seed and its actions replay exactly. NLE is C code in
the process: run these envs in worker processes (``rollout.env_workers``), where a crash is contained and typed by
the failure rule (a crash while the policy's action is processed is ``policy``). NLE's state does not pickle: no
snapshots (branching replays the seeded actions instead). The scripted agent of navigation tasks walks the shortest
path (breadth-first, four directions) to the staircase down, and otherwise searches.
"""

from __future__ import annotations

import collections
from typing import Any

from clew.envs.adapters._grid import offset_words
from clew.envs.base import StepResult, ensure_running

NETHACK_TASKS = {"score": "NetHackScore-v0", "staircase": "NetHackStaircase-v0", "gold": "NetHackGold-v0",
                 "eat": "NetHackEat-v0", "oracle": "NetHackOracle-v0", "challenge": "NetHackChallenge-v0"}  # fmt: skip
COMPASS = {"N": "north", "E": "east", "S": "south", "W": "west", "NE": "northeast", "SE": "southeast",
           "SW": "southwest", "NW": "northwest"}  # fmt: skip
STEPS = {"north": (0, -1), "east": (1, 0), "south": (0, 1), "west": (-1, 0)}
LEGEND = {">": "staircase down", "<": "staircase up", "+": "door or spellbook", "$": "gold", "{": "fountain",
          "^": "trap", "`": "boulder", "%": "food", ")": "weapon", "[": "armour", "!": "potion", "?": "scroll",
          "/": "wand", "=": "ring", "(": "tool or key", "_": "altar", '"': "amulet", "*": "gem or rock"}  # fmt: skip
PASSABLE = set('.#><_{$%)[!?/=("*')  # floors, corridors, stairs, items; not walls, doors or boulders
KEYS = ("chars", "message", "blstats")


def _gym() -> Any:
    try:
        import gymnasium
        import minihack  # noqa: F401  (registers MiniHack's ids)
        import nle  # noqa: F401
    except ImportError:
        raise ImportError("nethack/* and minihack/* need nle and minihack: pip install 'clew[nethack]'") from None
    return gymnasium


def action_name(action: Any) -> str:
    kind, name = type(action).__name__, action.name
    if kind == "CompassDirection":
        return COMPASS[name]
    if kind == "CompassDirectionLonger":
        return "far " + COMPASS[name]
    return name.lower().replace("_", " ")


class NLEText:
    """One NLE or MiniHack task as text (module docstring); ``game`` is ``nethack`` or ``minihack``."""

    def __init__(self, task: str, game: str = "minihack", max_steps: int | None = None) -> None:
        gym = _gym()
        env_id = NETHACK_TASKS.get(task) if game == "nethack" else f"MiniHack-{task}"
        known = NETHACK_TASKS if game == "nethack" else [i.removeprefix("MiniHack-") for i in gym.registry
                                                         if i.startswith("MiniHack-")]  # fmt: skip
        if env_id is None or env_id not in gym.registry:
            raise ValueError(f"{game} task {task!r} is not one of: {sorted(known)[:40]}")
        kwargs: dict[str, Any] = {"observation_keys": KEYS}
        if max_steps is not None:
            kwargs["max_episode_steps"] = max_steps
        self.task, self.game = task, game
        self.env = gym.make(env_id, disable_env_checker=True, **kwargs)  # its checker warns on NLE's shared arrays
        self.actions = [action_name(a) for a in self.env.unwrapped.actions]
        self.limit = int(max_steps or getattr(self.env.unwrapped, "_max_episode_steps", 0) or 10_000)
        self._finished, self.total = True, 0.0

    def reset(self, seed: int) -> str:
        self.env.unwrapped.seed(seed, seed + 1, False)
        self.obs, _ = self.env.reset()
        self._finished, self.total, self.steps = False, 0.0, 0
        return self.describe()

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, f"{self.game}/{self.task}")
        name = " ".join(action.strip().lower().split())
        self.steps += 1
        if name not in self.actions:  # not played: the game does not move, the turn is spent
            self._finished = self.steps >= self.limit
            note = f"Error: {action.strip()[:40]!r} is not an action; the actions are: {', '.join(self.actions)}.\n"
            return StepResult(note + self.describe(), 0.0, False, self._finished, {"invalid_action": True})
        self.obs, reward, terminated, truncated, _ = self.env.step(self.actions.index(name))
        self.total += float(reward)
        truncated = bool(truncated) or (not terminated and self.steps >= self.limit)
        self._finished = bool(terminated or truncated)
        info: dict[str, Any] = {}
        stats = self.obs["blstats"]
        info |= {"depth": int(stats[12]), "xp_level": int(stats[18])}
        if self._finished and self.game == "minihack":
            info["success"] = bool(terminated and self.total > 0)
        return StepResult(self.describe(), float(reward), bool(terminated), bool(truncated), info)

    # --- text ------------------------------------------------------------------------------------------------
    def grid(self) -> list[str]:
        return [bytes(row).decode("latin-1") for row in self.obs["chars"]]

    def agent(self) -> tuple[int, int]:
        stats = self.obs["blstats"]
        return int(stats[0]), int(stats[1])

    def describe(self) -> str:
        rows = self.grid()
        used = [i for i, r in enumerate(rows) if r.strip()]
        message = bytes(self.obs["message"]).decode("latin-1").strip("\x00 ").strip()
        lines = [f"Message: {message}" if message else "Message: (none)"]
        if used:
            cols = [j for r in rows for j, ch in enumerate(r) if ch != " "]
            lo, hi = min(cols), max(cols)
            lines += ["Map:"] + [rows[i][lo : hi + 1].rstrip() for i in range(used[0], used[-1] + 1)]
        lines.append("Near you: " + (self._legend(rows) or "nothing of note") + ".")
        s = self.obs["blstats"]
        lines.append(f"Status: HP {int(s[10])}/{int(s[11])}, dungeon level {int(s[12])}, gold {int(s[13])}, "
                     f"experience level {int(s[18])}, turn {int(s[20])}, hunger {int(s[21])}.")  # fmt: skip
        return "\n".join(lines)

    def _legend(self, rows: list[str]) -> str:
        x0, y0 = self.agent()
        found: dict[str, tuple[int, int]] = {}
        for y, row in enumerate(rows):
            for x, ch in enumerate(row):
                name = LEGEND.get(ch) or (f"monster '{ch}'" if ch.isalpha() else None)
                if name is None or (x, y) == (x0, y0) or y < 1 or y > 21:
                    continue
                best = found.get(f"{name} ({ch})")
                if best is None or abs(x - x0) + abs(y - y0) < abs(best[0]) + abs(best[1]):
                    found[f"{name} ({ch})"] = (x - x0, y - y0)
        near = sorted(found.items(), key=lambda kv: abs(kv[1][0]) + abs(kv[1][1]))[:8]
        return "; ".join(f"{n}: {offset_words(*d)}" for n, d in near)

    def state_key(self) -> str:
        x, y = self.agent()
        return f"{int(self.obs['blstats'][12])}|{x},{y}"

    def valid_actions(self) -> list[str]:
        return list(self.actions)

    def expert_action(self) -> str:
        """The first step of a shortest four-direction path to the staircase down (``down`` on it), else search."""
        rows, start = self.grid(), self.agent()
        queue, first = collections.deque([start]), {start: ""}
        while queue:
            x, y = queue.popleft()
            for name, (dx, dy) in STEPS.items():
                nxt = (x + dx, y + dy)
                ch = _at(rows, nxt)
                if nxt in first or ch is None:
                    continue
                if ch == ">":
                    return first[(x, y)] or name
                if ch in PASSABLE:
                    first[nxt] = first[(x, y)] or name
                    queue.append(nxt)
        return "search"

    def close(self) -> None:
        self.env.close()


def _at(rows: list[str], pos: tuple[int, int]) -> str | None:
    x, y = pos
    return rows[y][x] if 0 <= y < len(rows) and 0 <= x < len(rows[y]) else None


class MiniHackText(NLEText):
    def __init__(self, task: str, max_steps: int | None = None) -> None:
        super().__init__(task, "minihack", max_steps)


class NetHackText(NLEText):
    def __init__(self, task: str, max_steps: int | None = None) -> None:
        super().__init__(task, "nethack", max_steps)
