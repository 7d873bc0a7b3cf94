"""What clew knows about TextArena games beyond TextArena itself: valid moves, experts and scripted players
per game family (``KITS``), used by ``clew.envs.adapters.textarena``."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


# --- per-game knowledge: valid moves, experts, scripted players -------------------------------
def _ttt_marks(board: list[list[str]]) -> str:
    return "".join(cell or "." for row in board for cell in row)


def _ttt_won(cells: str, mark: str) -> bool:
    lines = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
    return any(all(cells[i] == mark for i in line) for line in lines)


@functools.cache
def _ttt_value(cells: str, me: str, other: str) -> int:
    """Minimax value for ``me`` to move: +1 win, 0 draw, -1 loss (memoised; 5,478 positions at most)."""
    free = [i for i, c in enumerate(cells) if c == "."]
    if not free:
        return 0
    best = -1
    for i in free:
        nxt = cells[:i] + me + cells[i + 1 :]
        value = 1 if _ttt_won(nxt, me) else -_ttt_value(nxt, other, me)
        best = max(best, value)
        if best == 1:
            break
    return best


def tictactoe_move(state: dict[str, Any], pid: int) -> str:
    """Perfect play: a winning move first, else the move with the best minimax value (lowest cell on ties)."""
    cells = _ttt_marks(state["board"])
    me, other = ("X", "O") if pid == 1 else ("O", "X")
    free = [i for i, c in enumerate(cells) if c == "."]
    scored = []
    for i in free:
        nxt = cells[:i] + me + cells[i + 1 :]
        scored.append((2 if _ttt_won(nxt, me) else -_ttt_value(nxt, other, me), -i))
    return f"[{-max(scored)[1]}]" if scored else "[0]"


def connectfour_move(state: dict[str, Any], pid: int) -> str:
    """Scripted, not optimal: win now, else block the opponent's win, else the column nearest the centre."""
    board = state["board"]
    me, other = ("X", "O") if pid == 0 else ("O", "X")
    cols = [c for c in range(len(board[0])) if board[0][c] == "."]
    for mark in (me, other):
        for c in cols:
            if _c4_wins(board, c, mark):
                return f"[col {c}]"
    centre = (len(board[0]) - 1) / 2
    return f"[col {min(cols, key=lambda c: (abs(c - centre), c))}]" if cols else "[col 0]"


def _c4_wins(board: list[list[str]], col: int, mark: str) -> bool:
    row = max(r for r in range(len(board)) if board[r][col] == ".")
    rows, cols = len(board), len(board[0])
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        count = 1
        for sign in (1, -1):
            r, c = row + sign * dr, col + sign * dc
            while 0 <= r < rows and 0 <= c < cols and board[r][c] == mark:
                count, r, c = count + 1, r + sign * dr, c + sign * dc
        if count >= 4:
            return True
    return False


def nim_move(state: dict[str, Any], pid: int) -> str:
    """Normal-play Nim: leave a zero nim-sum; when that is impossible, take one from the largest pile."""
    piles = state["piles"]
    total = 0
    for p in piles:
        total ^= p
    for i, p in enumerate(piles):
        if total and p ^ total < p:
            return f"[{i} {p - (p ^ total)}]"
    i = max(range(len(piles)), key=lambda k: piles[k])
    return f"[{i} 1]"


def hanoi_move(state: dict[str, Any], pid: int) -> str:
    """The optimal next move to stack every disk on tower C, from any legal position."""
    where = {disk: peg for peg, disks in state["towers"].items() for disk in disks}

    def first(disk: int, target: str) -> tuple[str, str] | None:
        if disk == 0:
            return None
        src = where[disk]
        if src == target:
            return first(disk - 1, target)
        spare = ({"A", "B", "C"} - {src, target}).pop()
        return first(disk - 1, spare) or (src, target)

    move = first(max(where), "C") if where else None
    return f"[{move[0]} {move[1]}]" if move else "[A C]"


def hanoi_moves(state: dict[str, Any], pid: int) -> list[str]:
    towers = state["towers"]
    return [
        f"[{a} {b}]"
        for a, b in itertools.permutations("ABC", 2)
        if towers[a] and (not towers[b] or towers[b][-1] > towers[a][-1])
    ]


def _mastermind_codes(state: dict[str, Any]) -> Iterator[tuple[int, ...]]:
    digits, length = range(1, state["num_numbers"] + 1), state["code_length"]
    if state["duplicate_numbers"]:
        return itertools.product(digits, repeat=length)
    return itertools.permutations(digits, length)


def _pegs(code: tuple[int, ...], guess: list[int]) -> tuple[int, int]:
    black = sum(a == b for a, b in zip(code, guess))
    common = sum(min(code.count(d), guess.count(d)) for d in set(guess))
    return black, common - black


def mastermind_move(state: dict[str, Any], pid: int) -> str:
    """The first code (in order) consistent with every feedback so far; it wins well within 20 turns."""
    history = state["history"]
    for code in _mastermind_codes(state):
        if all(_pegs(code, h["guess"]) == (h["black"], h["white"]) for h in history):
            return "[" + " ".join(map(str, code)) + "]"
    return "[" + " ".join(str(i + 1) for i in range(state["code_length"])) + "]"


def mastermind_moves(state: dict[str, Any], pid: int) -> list[str]:
    tried = {tuple(h["guess"]) for h in state["history"]}
    codes = list(itertools.islice(_mastermind_codes(state), 5001))
    return [] if len(codes) > 5000 else ["[" + " ".join(map(str, c)) + "]" for c in codes if c not in tried]


def tictactoe_moves(state: dict[str, Any], pid: int) -> list[str]:
    return [f"[{i}]" for i, c in enumerate(_ttt_marks(state["board"])) if c == "."]


def connectfour_moves(state: dict[str, Any], pid: int) -> list[str]:
    top = state["board"][0]
    return [f"[col {c}]" for c in range(len(top)) if top[c] == "."]


def nim_moves(state: dict[str, Any], pid: int) -> list[str]:
    return [f"[{i} {q}]" for i, n in enumerate(state["piles"]) for q in range(1, n + 1)]


def lightsout_moves(state: dict[str, Any], pid: int) -> list[str]:
    return [f"[{r} {c}]" for r, row in enumerate(state["grid"]) for c in range(len(row))]


def minesweeper_moves(state: dict[str, Any], pid: int) -> list[str]:
    return [f"[{r} {c}]" for r, row in enumerate(state["revealed"]) for c, shown in enumerate(row) if not shown]


@dataclass(frozen=True)
class GameKit:
    """What clew knows about a game beyond TextArena: valid moves, an expert, a scripted opponent."""

    moves: Callable[[dict[str, Any], int], list[str]] | None = None
    expert: Callable[[dict[str, Any], int], str] | None = None
    scripted: Callable[[dict[str, Any], int], str] | None = None
    error_allowance: int | None = None  # the game's default when the user gives none (None: unlimited)


KITS: dict[str, GameKit] = {
    "TicTacToe": GameKit(tictactoe_moves, tictactoe_move, tictactoe_move),
    "ConnectFour": GameKit(connectfour_moves, None, connectfour_move),
    "Nim": GameKit(nim_moves, nim_move, nim_move),
    "TowerOfHanoi": GameKit(hanoi_moves, hanoi_move),
    "Mastermind": GameKit(mastermind_moves, mastermind_move),
    "LightsOut": GameKit(lightsout_moves),
    "Minesweeper": GameKit(minesweeper_moves, error_allowance=0),  # a hit mine is an "invalid move"
}


def family(game: str) -> str:
    """``"Mastermind-v0-hard"`` -> ``"Mastermind"``."""
    return game.split("-v")[0]
