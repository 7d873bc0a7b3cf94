"""keydoor-v0: a grid where a key must be picked up before the locked door can be opened."""

from __future__ import annotations

import random
from collections import deque
from typing import Literal

from clew.envs.base import PickledSnapshot, StepResult, ensure_running, normalize_action

ACTIONS = ("up", "down", "left", "right", "pickup", "open")
_MOVES = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}
Cell = tuple[int, int]


class KeyDoor(PickledSnapshot):
    """Reward 1 only when the door opens; every other step gives 0.

    Coordinates are ``(x, y)`` with ``x`` the column and ``y`` the row; ``up`` decreases ``y``.
    The agent cannot walk into the door; ``pickup`` works on the key's cell; ``open`` works next to
    the door while carrying the key. ``layout="corners"`` starts the agent in a corner with the door
    beside it and the key in the opposite corner, so the optimal horizon is about
    ``2 * (width + height)``;
    ``layout="random"`` places them anywhere. ``info["optimal_steps"]`` gives the shortest solution.

    Args:
        width: grid columns (>= 2).
        height: grid rows (>= 2).
        max_steps: turn budget; None gives ``3 * optimal + 8``.
        layout: ``"random"`` or ``"corners"``.
    """

    def __init__(
        self,
        width: int = 5,
        height: int = 5,
        max_steps: int | None = None,
        layout: Literal["random", "corners"] = "random",
    ) -> None:
        if width < 2 or height < 2:
            raise ValueError(f"keydoor width and height must be >= 2, got {width}x{height}")
        if layout not in ("random", "corners"):
            raise ValueError(f"keydoor layout must be 'random' or 'corners', got {layout!r}")
        self.width, self.height, self.layout = width, height, layout
        self._max_steps_arg = max_steps
        self._finished = True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        rng = random.Random(seed)
        self.agent, self.key, self.door = self._place(rng)
        self.has_key = False
        self.steps = 0
        self.optimal_steps = self._optimal()
        self.max_steps = self._max_steps_arg or 3 * self.optimal_steps + 8
        self._finished = False
        return self._render("")

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "KeyDoor")
        self.steps += 1
        act = normalize_action(action)
        info: dict[str, object] = {"optimal_steps": self.optimal_steps}
        reward, terminated, note = 0.0, False, ""
        if act not in ACTIONS:
            info["invalid_action"] = True
            note = f"Invalid action {action.strip()[:40]!r}."
        elif act in _MOVES:
            note = self._move(act)
        elif act == "pickup":
            note = self._pickup()
        else:
            note, terminated = self._open()
            reward = 1.0 if terminated else 0.0
        truncated = not terminated and self.steps >= self.max_steps
        self._finished = terminated or truncated
        return StepResult(self._render(note), reward, terminated, truncated, info)

    def state_key(self) -> str:
        return f"{self.agent[0]},{self.agent[1]},{int(self.has_key)}"

    def valid_actions(self) -> list[str]:
        return list(ACTIONS)

    def expert_action(self) -> str:
        """Shortest-path action: walk to the key, pick it up, walk next to the door, open it."""
        if not self.has_key:
            return "pickup" if self.agent == self.key else self._first_move(self.agent, {self.key})
        targets = self._door_neighbours()
        return "open" if self.agent in targets else self._first_move(self.agent, targets)

    # --- mechanics ------------------------------------------------------------------------
    def _place(self, rng: random.Random) -> tuple[Cell, Cell, Cell]:
        if self.layout == "corners":
            w, h = self.width - 1, self.height - 1
            ax, ay = rng.choice([(0, 0), (w, 0), (0, h), (w, h)])
            step = rng.choice([(1 if ax == 0 else -1, 0), (0, 1 if ay == 0 else -1)])
            return (ax, ay), (w - ax, h - ay), (ax + step[0], ay + step[1])
        cells = [(x, y) for y in range(self.height) for x in range(self.width)]
        agent, key, door = rng.sample(cells, 3)
        return agent, key, door

    def _inside(self, cell: Cell) -> bool:
        return 0 <= cell[0] < self.width and 0 <= cell[1] < self.height

    def _move(self, act: str) -> str:
        dx, dy = _MOVES[act]
        target = (self.agent[0] + dx, self.agent[1] + dy)
        if not self._inside(target):
            return "You bump into the wall."
        if target == self.door:
            return "The door blocks the way."
        self.agent = target
        return ""

    def _pickup(self) -> str:
        if self.has_key or self.agent != self.key:
            return "There is no key here."
        self.has_key = True
        return "You pick up the key."

    def _open(self) -> tuple[str, bool]:
        if self.agent not in self._door_neighbours():
            return "The door is not next to you.", False
        if not self.has_key:
            return "The door is locked. You need the key.", False
        return "The door opens. You escaped!", True

    def _door_neighbours(self) -> set[Cell]:
        dx_dy = _MOVES.values()
        return {(self.door[0] + dx, self.door[1] + dy) for dx, dy in dx_dy} & set(self._free_cells())

    def _free_cells(self) -> list[Cell]:
        return [(x, y) for y in range(self.height) for x in range(self.width) if (x, y) != self.door]

    def _distances(self, start: Cell) -> dict[Cell, int]:
        dist, queue = {start: 0}, deque([start])
        while queue:
            cell = queue.popleft()
            for dx, dy in _MOVES.values():
                nxt = (cell[0] + dx, cell[1] + dy)
                if self._inside(nxt) and nxt != self.door and nxt not in dist:
                    dist[nxt] = dist[cell] + 1
                    queue.append(nxt)
        return dist

    def _first_move(self, start: Cell, targets: set[Cell]) -> str:
        """The first move of a shortest path (ties broken in ``ACTIONS`` order)."""
        best: tuple[int, str] | None = None
        for act, (dx, dy) in _MOVES.items():
            nxt = (start[0] + dx, start[1] + dy)
            if not self._inside(nxt) or nxt == self.door:
                continue
            dist = self._distances(nxt)
            d = min((dist[t] for t in targets if t in dist), default=None)
            if d is not None and (best is None or d < best[0]):
                best = (d, act)
        return best[1] if best else "up"

    def _optimal(self) -> int:
        to_key = self._distances(self.agent)[self.key]
        from_key = self._distances(self.key)
        return to_key + 1 + min(from_key[c] for c in self._door_neighbours()) + 1

    def _render(self, note: str) -> str:
        key = "carried" if self.has_key else f"at ({self.key[0]},{self.key[1]}), {self._relative(self.key)}"
        lines = [
            f"Grid {self.width}x{self.height}. You are at ({self.agent[0]},{self.agent[1]}).",
            f"Key: {key}.",
            f"Door: at ({self.door[0]},{self.door[1]}), {self._relative(self.door)}, locked.",
        ]
        if note:
            lines.append(note)
        lines.append("Actions: " + ", ".join(ACTIONS) + ".")
        return "\n".join(lines)

    def _relative(self, cell: Cell) -> str:
        """Where ``cell`` lies from the agent, in moves: e.g. ``2 right, 1 up`` or ``here``."""
        dx, dy = cell[0] - self.agent[0], cell[1] - self.agent[1]
        parts = []
        if dx:
            parts.append(f"{abs(dx)} {'right' if dx > 0 else 'left'}")
        if dy:
            parts.append(f"{abs(dy)} {'down' if dy > 0 else 'up'}")
        return " ".join(parts) if parts else "here"
