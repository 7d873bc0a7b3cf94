"""crafter/<task>: Crafter (Hafner, "Benchmarking the Spectrum of Agent Capabilities", arXiv 2109.06780) as text.

Each observation describes what the agent sees in its 9 x 7 local view, in words and relative steps ("tree: 2 north,
1 west"; the nearest of each kind of thing first), what it faces, its status (health, food, drink, energy of 9) and
its inventory. Its 17 actions are named (``move west``, ``do``, ``place table``, ``make wood pickaxe``, ...;
Crafter's own names such as ``move_left`` also work); anything else is an invalid action (a no-op step, flagged).
The images are never rendered (text only). The reward is Crafter's own (+1 for each achievement unlocked the first
time, +/-0.1 per health point gained or lost), and the reported outcome is BALROG's progression: the share of the
22 achievements unlocked, reported when the episode ends (death, a task done, or the env's own ``max_steps``; keep
``rollout.max_turns`` at least that, or a cut episode's outcome is the sum of its rewards). ``info["progression"]``
has it on every step.

Tasks: ``default`` (the whole game, up to ``length`` steps, 10,000 as in Crafter) or one achievement's name
(``collect_wood``, ``place_table``, ``make_wood_pickaxe``, ...): the episode ends with success when it is unlocked,
within ``max_steps`` (default 100). A scripted agent (``expert_action``) walks to the nearest thing it needs by
breadth-first search and works through wood, a table, a wood pickaxe, stone, a stone pickaxe, drinking and eating
when low; it is a baseline, not an optimal player. Seeds pick the world (Crafter's world seed is the episode's).
"""

from __future__ import annotations

import collections
import functools
from typing import Any

from clew.envs.adapters._grid import offset_words
from clew.envs.base import PickledSnapshot, StepResult, ensure_running

DIRECTIONS = {"west": (-1, 0), "east": (1, 0), "north": (0, -1), "south": (0, 1)}
NAMES = ["noop", "move west", "move east", "move north", "move south", "do", "sleep", "place stone", "place table",
         "place furnace", "place plant", "make wood pickaxe", "make stone pickaxe", "make iron pickaxe",
         "make wood sword", "make stone sword", "make iron sword"]  # fmt: skip
SEEN = ("water", "stone", "tree", "lava", "coal", "iron", "diamond", "table", "furnace", "sand")
CREATURES = ("cow", "zombie", "skeleton", "plant", "arrow")
MAX_REPORTED = 8


def _crafter() -> Any:
    try:
        import crafter
    except ImportError:
        raise ImportError("crafter/<task> needs the crafter package: pip install 'clew[crafter]'") from None
    return crafter


def _no_image() -> None:
    return None


def _balance_in_order(env: Any, chunk: Any, objs: Any) -> None:
    """Crafter's creature balancing over a chunk's objects in a fixed order: it draws which creature to despawn by
    index into a set (iteration order by memory address), so the same seed and actions could play out differently."""
    ordered = sorted(objs, key=lambda o: (type(o).__name__, int(o.pos[0]), int(o.pos[1])))
    type(env)._balance_chunk(env, chunk, ordered)


def achievements() -> list[str]:
    return list(_crafter().constants.achievements)


class CrafterText(PickledSnapshot):
    """Crafter as text (module docstring)."""

    def __init__(self, task: str = "default", length: int = 10_000, max_steps: int | None = None) -> None:
        names = achievements()
        if task != "default" and task not in names:
            raise ValueError(f"crafter task must be 'default' or an achievement: {names}; got {task!r}")
        if length < 1:
            raise ValueError(f"crafter length must be >= 1, got {length}")
        self.task, self.length = task, length
        self.max_steps = max_steps or (length if task == "default" else 100)
        self.env: Any = None
        self._finished = True

    def reset(self, seed: int) -> str:
        self.env = _crafter().Env(length=self.length, seed=seed)
        self.env._obs = _no_image  # never rendered: the text is built from the world itself
        self.env._balance_chunk = functools.partial(_balance_in_order, self.env)
        self.env.reset()
        self.steps, self.unlocked = 0, set[str]()
        self._finished = False
        return self.describe()

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "CrafterText")
        index, info = self._parse(action)
        _, reward, done, raw = self.env.step(index)
        self.steps += 1
        self.unlocked = {name for name, n in raw["achievements"].items() if n > 0}
        progression = len(self.unlocked) / len(raw["achievements"])
        info |= {"achievements": sorted(self.unlocked), "progression": progression}
        won = self.task != "default" and self.task in self.unlocked
        if won:
            info["success"] = True
        terminated = won or raw["discount"] == 0.0
        truncated = not terminated and (done or self.steps >= self.max_steps)
        self._finished = terminated or truncated
        if terminated and not won and self.task != "default":
            info["success"] = False
        outcome = progression if self._finished else None  # reported on the ending step only (the env contract)
        return StepResult(self.describe(), float(reward), terminated, truncated, info, outcome=outcome)

    def _parse(self, action: str) -> tuple[int, dict[str, object]]:
        text = " ".join(action.strip().lower().replace("_", " ").split())
        aliases = {"move left": "move west", "move right": "move east", "move up": "move north",
                   "move down": "move south"}  # fmt: skip
        text = aliases.get(text, text)
        if text in NAMES:
            return NAMES.index(text), {}
        return 0, {"invalid_action": True}

    # --- text --------------------------------------------------------------------------------------------
    def describe(self) -> str:
        player, world = self.env._player, self.env._world
        x0, y0 = (int(v) for v in player.pos)
        seen: dict[str, tuple[int, int]] = {}
        for dy in range(-3, 4):
            for dx in range(-4, 5):
                x, y = x0 + dx, y0 + dy
                if not (0 <= x < world.area[0] and 0 <= y < world.area[1]) or (dx, dy) == (0, 0):
                    continue
                material, obj = world[x, y]
                for name in (material, type(obj).__name__.lower() if obj is not None else None):
                    if name in SEEN or name in CREATURES:
                        best = seen.get(name)
                        if best is None or abs(dx) + abs(dy) < abs(best[0]) + abs(best[1]):
                            seen[name] = (dx, dy)
        near = sorted(seen.items(), key=lambda kv: abs(kv[1][0]) + abs(kv[1][1]))[:MAX_REPORTED]
        fx, fy = (int(v) for v in player.facing)
        facing = world[x0 + fx, y0 + fy] if 0 <= x0 + fx < world.area[0] and 0 <= y0 + fy < world.area[1] else None
        front = "edge"
        if facing is not None:
            front = type(facing[1]).__name__.lower() if facing[1] is not None else str(facing[0])
        inv = player.inventory
        status = ", ".join(f"{k} {inv[k]}/9" for k in ("health", "food", "drink", "energy"))
        items = ", ".join(f"{k} {v}" for k, v in inv.items() if v and k not in ("health", "food", "drink", "energy"))
        lines = ["You see: " + ("; ".join(f"{n} {offset_words(*d)}" for n, d in near) if near else "only grass") + ".",
                 f"You face {front} ({offset_words(fx, fy).split(' ', 1)[1]}).", f"Status: {status}.",
                 f"Inventory: {items or 'nothing'}."]  # fmt: skip
        if self.task != "default":
            lines.append(f"Goal: {self.task.replace('_', ' ')}.")
        if self.env._world.daylight < 0.3:
            lines.append("It is dark.")
        return "\n".join(lines)

    def state_key(self) -> str:
        player = self.env._player
        inv = ",".join(f"{k}{v}" for k, v in sorted(player.inventory.items()) if v)
        return f"{tuple(int(v) for v in player.pos)}|{tuple(int(v) for v in player.facing)}|{inv}"

    def valid_actions(self) -> list[str]:
        return list(NAMES)

    # --- the scripted agent ------------------------------------------------------------------------------
    def expert_action(self) -> str:
        player = self.env._player
        inv = player.inventory
        near = self._nearby()
        direct = self._task_action(inv)
        if direct is not None:
            return direct
        if self._adjacent("zombie"):
            return self._get("zombie")
        if inv["drink"] < 4:
            return self._get("water")
        if inv["food"] < 4:
            return self._get("cow")
        if inv["wood"] < 1 or (not inv["wood_pickaxe"] and inv["wood"] < 2 and "table" not in near):
            return self._get("tree")
        if "table" not in near and inv["wood"] >= 2:
            return "place table" if self._front_free() else self._step_aside()
        if not inv["wood_pickaxe"]:
            return "make wood pickaxe" if "table" in near else self._get("table")
        if not inv["wood_sword"] and inv["wood"] >= 1 and "table" in near:
            return "make wood sword"
        if inv["stone"] < 1:
            return self._get("stone")
        if not inv["stone_pickaxe"]:
            if inv["wood"] < 1:
                return self._get("tree")
            return "make stone pickaxe" if "table" in near else self._get("table")
        return self._get("coal" if not inv["coal"] else "stone")

    def _task_action(self, inv: dict[str, int]) -> str | None:
        """A task outside the tool chain, pursued directly (None: follow the chain)."""
        targets = {"collect_drink": "water", "eat_cow": "cow", "defeat_zombie": "zombie",
                   "defeat_skeleton": "skeleton", "collect_sapling": "grass"}  # fmt: skip
        if self.task in targets:
            return self._get(targets[self.task])
        if self.task == "wake_up":
            return "sleep"
        if self.task in ("place_plant", "eat_plant"):
            if self.task == "eat_plant" and self._adjacent("plant"):
                return self._get("plant")
            if not inv["sapling"]:
                return self._get("grass")
            return "place plant" if self._front_free() else self._step_aside()
        if self.task == "place_stone" and inv["stone"]:
            return "place stone" if self._front_free() else self._step_aside()
        return None

    def _adjacent(self, creature: str) -> bool:
        player, world = self.env._player, self.env._world
        for dx, dy in DIRECTIONS.values():
            obj = world[int(player.pos[0]) + dx, int(player.pos[1]) + dy][1]
            if obj is not None and type(obj).__name__.lower() == creature:
                return True
        return False

    def _nearby(self) -> set[str]:
        player, world = self.env._player, self.env._world
        x0, y0 = (int(v) for v in player.pos)
        out = set()
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                if 0 <= x0 + dx < world.area[0] and 0 <= y0 + dy < world.area[1]:
                    out.add(world[x0 + dx, y0 + dy][0])
        return out

    def _front_free(self) -> bool:
        player = self.env._player
        x, y = (int(a) + int(b) for a, b in zip(player.pos, player.facing))
        return bool(player.is_free((x, y), ["grass", "sand", "path"]))

    def _step_aside(self) -> str:
        for name, (dx, dy) in DIRECTIONS.items():
            x, y = int(self.env._player.pos[0]) + dx, int(self.env._player.pos[1]) + dy
            if self.env._player.is_free((x, y), ["grass", "sand", "path"]):
                return f"move {name}"
        return "noop"

    def _get(self, target: str) -> str:
        """Face the nearest ``target`` (a material or creature) and ``do``, or take the first step toward it."""
        player, world = self.env._player, self.env._world
        start = (int(player.pos[0]), int(player.pos[1]))
        walk = {"grass", "sand", "path"}
        queue, first = collections.deque([start]), {start: ""}
        while queue:
            x, y = queue.popleft()
            if abs(x - start[0]) + abs(y - start[1]) > 30:
                break
            for name, (dx, dy) in DIRECTIONS.items():
                nx, ny = x + dx, y + dy
                if (nx, ny) in first or not (0 <= nx < world.area[0] and 0 <= ny < world.area[1]):
                    continue
                material, obj = world[nx, ny]
                hit = material == target or (obj is not None and type(obj).__name__.lower() == target)
                if hit:
                    step = first[(x, y)] or name
                    if (x, y) == start:  # adjacent: face it, then do
                        facing = (int(player.facing[0]), int(player.facing[1]))
                        return "do" if facing == (dx, dy) else f"move {name}"
                    return f"move {step}"
                if material in walk and obj is None:
                    first[(nx, ny)] = first[(x, y)] or name
                    queue.append((nx, ny))
        return f"move {list(DIRECTIONS)[self.steps % 4]}"  # nothing reachable in sight: wander
