"""GEM 0.1.0's games, read from their attributes: the moves valid now, and scripted experts (``gem_text``).

Each function takes the GEM game object (``gem.make(...)``'s env) and relies on GEM 0.1.0's attribute names.
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Callable, Iterator
from typing import Any


def canon(value: Any) -> Any:
    """A JSON-able form whose text does not depend on set order or the process's hash seed."""
    if isinstance(value, dict):
        return sorted(([canon(k), canon(v)] for k, v in value.items()), key=repr)
    if isinstance(value, set | frozenset):
        return sorted((canon(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [canon(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def boxed(*parts: object) -> str:
    return "\\boxed{" + " ".join(str(p) for p in parts) + "}"


def family_of(env_id: str) -> str:
    kind, _, rest = env_id.partition(":")
    return rest.split("-")[0] if kind == "game" else kind


# --- valid actions, per game (read from GEM 0.1.0's attributes) -------------------------------------
def _guess_valid(g: Any) -> list[str]:
    return [boxed(n) for n in range(g.min_number, g.max_number + 1) if n not in g.previous_guesses]


def _codes(g: Any) -> Iterator[tuple[int, ...]]:
    digits = range(1, g.num_numbers + 1)
    if g.duplicate_numbers:
        return itertools.product(digits, repeat=g.code_length)
    return itertools.permutations(digits, g.code_length)


def _mastermind_valid(g: Any) -> list[str]:
    fresh = (c for c in _codes(g) if c not in g.previous_guesses)
    return [boxed(*c) for c in itertools.islice(fresh, 5000)]


def _minesweeper_valid(g: Any) -> list[str]:
    cells = [(r, c) for r in range(g.rows) for c in range(g.cols) if not g.revealed[r][c]]
    return [boxed("reveal", r, c) for r, c in cells if not g.flags[r][c]] + [boxed("flag", r, c) for r, c in cells]


def _hanoi_valid(g: Any) -> list[str]:
    return [boxed(a, b) for a, b in itertools.permutations("ABC", 2)
            if g.board[a] and (not g.board[b] or g.board[a][-1] < g.board[b][-1])]  # fmt: skip


def _sudoku_allowed(g: Any, row: int, col: int, num: int) -> bool:
    box = math.isqrt(g.scale)
    r0, c0 = row - row % box, col - col % box
    return (num not in g.board[row] and all(g.board[r][col] != num for r in range(g.scale))
            and all(g.board[r][c] != num for r in range(r0, r0 + box) for c in range(c0, c0 + box)))  # fmt: skip


def _sudoku_valid(g: Any) -> list[str]:
    return [boxed(r + 1, c + 1, n) for r in range(g.scale) for c in range(g.scale) if g.board[r][c] == 0
            for n in range(1, g.scale + 1) if _sudoku_allowed(g, r, c, n)]  # fmt: skip


def _fifteen_valid(g: Any) -> list[str]:
    row, col = g._get_empty_position()
    last = g.num_rows - 1
    moves = {"up": row < last, "down": row > 0, "left": col < last, "right": col > 0}
    return [boxed(m) for m, ok in moves.items() if ok]


def _2048_valid(g: Any) -> list[str]:
    return [boxed(m) for m in ("up", "down", "left", "right") if g._is_valid_move(m)]


def _sokoban_valid(g: Any) -> list[str]:
    return [boxed(m) for m in g.action_space if not g._would_collide_with_wall(m)]


def _crosswords_valid(g: Any) -> list[str]:
    cells = [(r, c) for r, line in enumerate(g.board) for c, cell in enumerate(line) if cell == "_"]
    return [boxed(r, c, letter) for r, c in cells for letter in string.ascii_uppercase]


def _hangman_valid(g: Any) -> list[str]:
    return [boxed(x) for x in string.ascii_uppercase if x not in g.guessed_letters]


def _wordle_valid(g: Any) -> list[str]:
    return [boxed(w.upper()) for w in g.available_words if w.upper() not in g.previous_guesses]


# --- experts --------------------------------------------------------------------------------------
def _guess_expert(g: Any) -> str:
    """Bisection on the hints shown so far (each earlier guess said higher or lower)."""
    lo = max([g.min_number] + [x + 1 for x in g.previous_guesses if x < g.game_number])
    hi = min([g.max_number] + [x - 1 for x in g.previous_guesses if x > g.game_number])
    return boxed((lo + hi) // 2)


def _mastermind_expert(g: Any) -> str:
    """The first code consistent with the pegs of every earlier guess."""
    pegs = {guess: g._evaluate_guess(list(guess)) for guess in g.previous_guesses}
    for code in _codes(g):
        if code not in pegs and all(_pegs(code, guess) == p for guess, p in pegs.items()):
            return boxed(*code)
    return boxed(*g.game_code)  # unreachable: the secret code is always consistent


def _pegs(code: tuple[int, ...], guess: tuple[int, ...]) -> tuple[int, int]:
    black = sum(a == b for a, b in zip(code, guess, strict=True))
    common = sum(min(code.count(d), guess.count(d)) for d in set(guess))
    return black, common - black


def _hanoi_move(where: dict[int, str], disks: int, target: str) -> tuple[str, str] | None:
    """The optimal next move that brings disks 1..``disks`` onto ``target`` (None when they are there)."""
    for disk in range(disks, 0, -1):
        if where[disk] != target:
            spare = ({"A", "B", "C"} - {where[disk], target}).pop()
            return _hanoi_move(where, disk - 1, spare) or (where[disk], target)
    return None


def _hanoi_expert(g: Any) -> str:
    where = {disk: peg for peg, disks in g.board.items() for disk in disks}
    move = _hanoi_move(where, g.num_disks, "C")
    return boxed(*move) if move else boxed("A", "C")


def _sudoku_expert(g: Any) -> str:
    for r, c in itertools.product(range(g.scale), repeat=2):
        if g.board[r][c] == 0:
            return boxed(r + 1, c + 1, g.full_grid[r][c])
    return boxed(1, 1, 1)


def _minesweeper_expert(g: Any) -> str:
    """A gold path read from the hidden board: the centre first, then a flag on each mine, then every safe cell.

    Flags come first because GEM 0.1.0 checks for a win (every mine flagged, every other cell revealed) only
    after a reveal: a game whose last move is a flag is never won."""
    if g.first_reveal:
        return boxed("reveal", g.rows // 2, g.cols // 2)
    cells = list(itertools.product(range(g.rows), range(g.cols)))
    for r, c in cells:
        if g.grid[r][c] == -1 and not g.flags[r][c]:
            return boxed("flag", r, c)
    for r, c in cells:
        if g.grid[r][c] != -1 and not g.revealed[r][c]:
            return boxed("flag" if g.flags[r][c] else "reveal", r, c)  # a flagged safe cell: unflag it first
    return boxed("reveal", 0, 0)


VALID: dict[str, Callable[[Any], list[str]]] = {
    "GuessTheNumber": _guess_valid, "Mastermind": _mastermind_valid, "Minesweeper": _minesweeper_valid,
    "TowerofHanoi": _hanoi_valid, "Sudoku": _sudoku_valid, "FifteenPuzzle": _fifteen_valid, "Game2048": _2048_valid,
    "Sokoban": _sokoban_valid, "Crosswords": _crosswords_valid, "Hangman": _hangman_valid, "Wordle": _wordle_valid,
}  # fmt: skip
EXPERTS: dict[str, Callable[[Any], str]] = {
    "GuessTheNumber": _guess_expert, "Mastermind": _mastermind_expert, "TowerofHanoi": _hanoi_expert,
    "Sudoku": _sudoku_expert, "Minesweeper": _minesweeper_expert,
}  # fmt: skip
