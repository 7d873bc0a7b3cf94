"""textarena/<Game-v0>: TextArena 0.7.4 single-player puzzles and two-player games against an opponent.

Ids: ``textarena/<id>`` for a registered TextArena id (``textarena/TicTacToe-v0``,
``textarena/ConnectFour-v0``, ``textarena/Mastermind-v0``, ``textarena/TowerOfHanoi-v0``,
``textarena/LightsOut-v0``, ``textarena/Minesweeper-v0``, ``textarena/Nim-v0``, variants such as
``Mastermind-v0-hard``). The game runs unwrapped: the adapter formats the messages itself.

Kwargs:
    opponent: two-player games only: ``"random"`` (default: a random valid move), ``"scripted"``
        (TicTacToe minimax, ConnectFour win/block/centre, Nim's xor rule), the path of a frozen clew
        checkpoint or HF model directory (greedy, on the ``hf`` engine: ``MODEL_OPPONENT``, loaded once
        per process), ``"module:factory"`` (a plug-in's opponent, ``factory()`` builds it), or any
        ``Opponent`` object, injected by whoever builds the env. This module never loads a model: it
        names the policy layer's builder by entry point, as the env registry names env classes.
        ``"self"``: self-play, no opponent: the env's ``HasSeats`` side (``seats() == 2``) hands every move to
        the caller, which plays both seats (the rollout gives each its own episode; ``clew.rollout.loop``).
    seat: ``"alternate"`` (default: seat ``seed % 2``), ``0`` or ``1``. Seats are a function of the
        seed, so the same ids serve play against an opponent and self-play (where ``seat`` is unused).
    error_allowance: ``None`` (default): an invalid move is a recorded step flagged
        ``info["invalid_action"]``, the game goes on and the player moves again (TextArena's own rule,
        ``error_allowance=1``, ends the game as a loss at the second invalid move in a row; pass an
        int to restore it). Minesweeper defaults to 0, since TextArena reports a hit mine as an
        invalid move: a mine, or a malformed or repeated move, ends the game there.
    max_steps: the agent's turn budget, invalid moves included (default 100); running out truncates.
    game_kwargs: constructor kwargs of the TextArena env (e.g. ``{num_disks: 4}``).

Reward and outcome: every step's reward is 0; the game's verdict for the agent's seat (two-player: +1
win, 0 draw, -1 loss; puzzles: 1 solved, else the fraction completed) is the ending step's
``outcome``, reported apart from the rewards (a verdict given once, at the end, not a sum of score
changes), so the episode's return counts it once; running out of turns reports outcome 0.
``info["success"]`` is a win (verdict >= 1). In self-play each seat's verdict is ``verdicts()`` (the rollout
makes it that seat's outcome; the ending step reports none), and the observation after a move is the view of
the seat to act next (its role prompt before its first move, the other's move, its board). The opponent moves
inside ``step``: the observation is
what the agent sees after the opponent replied; an invalid opponent move is retried with random
valid moves, and after 3 more invalid ones in a row the opponent forfeits (TextArena's rule). A
move that makes the game itself raise is recorded as invalid (``info["game_error"]``) and not
played. TextArena seeds the global ``random``; every call
into it runs under a lock with this env's own ``random``/``numpy`` state swapped in, so envs in
one process (and their callers) do not disturb each other and replays are exact.

Valid actions: listed for TicTacToe, ConnectFour, Nim, Mastermind (codes not yet tried, up to 5,000),
TowerOfHanoi, LightsOut and Minesweeper; other games get the moves named in the board text
("Available Moves: ..."), else an empty list. Expert (``HasExpert``) only where a real one exists:
TicTacToe (minimax), Nim (xor rule), TowerOfHanoi (optimal moves) and Mastermind (first code
consistent with all feedback). State key: a hash of the game state and the agent's seat.

Not supported (a ``ValueError`` names the reason): games for 3+ players; Chess, Checkers,
ReverseTicTacToe, IteratedStagHunt, UltimateTexasHoldem and Klondike (Python 3.12 f-strings, on
3.11); Wordle, Hangman, WordLadder, SpellingBee, WordSearch, WordChains, Codenames, DontSayIt and
LetterAuction (NLTK downloads); GuessWho, TwentyQuestions, Debate and ScenarioPlanning (an
OpenRouter key); ScorableGames, UsedCarNegotiation, CharacterConclave (packaging bugs);
BabyAiText (old ``gym``).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import random
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from clew.envs.adapters.textarena_games import KITS, GameKit, family
from clew.envs.base import StepResult, ensure_running
from clew.envs.registry import load_entry_point

_RNG_LOCK = threading.Lock()
_GAME_ID = -1  # TextArena's sender id for game messages
_OPPONENT_RETRIES = 3  # invalid opponent moves in a row before it forfeits (TextArena's rule)
_MAX_OPPONENT_PLIES = 64
MODEL_OPPONENT = "clew.policy.opponent:model_opponent"  # a model directory -> a greedy engine-backed opponent
_MOVE = re.compile(r"\[[^\[\]\n]{1,24}\]")

_NO_311 = "it uses Python 3.12 f-strings and fails to import on Python 3.11"
_NLTK = "it downloads NLTK data (word lists), which needs the network"
_OPENROUTER = "it uses an LLM judge through OpenRouter (an API key and the network)"
_UNSUPPORTED = {
    **({g: _NO_311 for g in ("Chess", "Checkers", "ReverseTicTacToe", "IteratedStagHunt", "UltimateTexasHoldem",
                             "Klondike")} if sys.version_info < (3, 12) else {}),
    **{g: _NLTK for g in ("Wordle", "Hangman", "WordLadder", "SpellingBee", "WordSearch", "WordChains", "Codenames",
                          "DontSayIt", "LetterAuction")},
    **{g: _OPENROUTER for g in ("GuessWho", "TwentyQuestions", "Debate", "ScenarioPlanning")},
    **{g: "its data files are missing from the textarena 0.7.4 wheel" for g in ("ScorableGames", "UsedCarNegotiation")},
    "CharacterConclave": "its textarena 0.7.4 code does not match the library's API",
    "BabyAiText": "it needs the old `gym` package",
}  # fmt: skip


# --- opponents -------------------------------------------------------------------------------
@runtime_checkable
class Opponent(Protocol):
    """The other seat of a two-player game: the text it sees in, a move out (``seed`` for its randomness)."""

    def act(self, observation: str, seed: int) -> str: ...


def parse_moves(text: str) -> list[str]:
    """Bracketed moves on the lines of ``text`` that list them ("Available Moves: '[0]', '[4]'")."""
    lines = [ln for ln in text.splitlines() if re.search(r"(available|valid|legal) moves", ln, re.IGNORECASE)]
    return list(dict.fromkeys(m for ln in lines for m in _MOVE.findall(ln)))


@dataclass
class RandomOpponent:
    """A uniformly random valid move: from ``moves()`` when the game lists them, else parsed from the text."""

    moves: Callable[[], list[str]] | None = None

    def act(self, observation: str, seed: int) -> str:
        options = (self.moves() if self.moves else []) or parse_moves(observation)
        return random.Random(seed).choice(options) if options else "[0]"


@dataclass
class ScriptedOpponent:
    """A fixed rule for the game (minimax, xor rule, win/block/centre), read off the game state."""

    rule: Callable[[], str]

    def act(self, observation: str, seed: int) -> str:
        return self.rule()


def _checked(opponent: object) -> Opponent:
    if not isinstance(opponent, Opponent):
        raise ValueError(f"opponent must have act(observation, seed); got {type(opponent).__name__}")
    return opponent


# --- the adapter ---------------------------------------------------------------------------------
class TextArena:
    """A TextArena game as a clew env; see the module docstring for kwargs and behaviour.

    ``TextArena(game)`` returns a ``TextArenaWithExpert`` for games with a real expert, so that
    ``isinstance(env, HasExpert)`` holds exactly then.
    """

    def __new__(cls, game: str, *args: Any, **kwargs: Any) -> TextArena:
        has_expert = (kit := KITS.get(family(game))) is not None and kit.expert is not None
        target = TextArenaWithExpert if cls is TextArena and has_expert else cls
        return object.__new__(target)

    def __init__(
        self,
        game: str,
        opponent: str | Opponent | None = None,
        seat: Literal["alternate", 0, 1] = "alternate",
        error_allowance: int | None = None,
        max_steps: int = 100,
        game_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if seat not in ("alternate", 0, 1):
            raise ValueError(f"textarena/{game}: seat must be 'alternate', 0 or 1, got {seat!r}")
        if max_steps < 1:
            raise ValueError(f"textarena/{game}: max_steps must be >= 1, got {max_steps}")
        self.game, self.seat, self.max_steps = game, seat, max_steps
        self.kit = KITS.get(family(game), GameKit())
        allowance = self.kit.error_allowance if error_allowance is None else error_allowance
        self._allowance = 10**9 if allowance is None else allowance
        self._py_state: Any = None
        self._np_state: Any = None
        self._ta = _build(game, dict(game_kwargs or {}))
        self.num_players = self._count_players()
        self.opponent: Opponent | None = None
        self.self_play = opponent == "self"
        if self.self_play and self.num_players != 2:
            raise ValueError(f"textarena/{game}: opponent 'self' needs a two-player game; this one has one player")
        if self.num_players == 2 and not self.self_play:
            self.opponent = self._make_opponent("random" if opponent is None else opponent)
        elif opponent is not None and not self.self_play:
            raise ValueError(f"textarena/{game} is a single-player game; it takes no opponent")
        self.agent, self.steps, self._seed, self._plies = 0, 0, 0, 0
        self._last_board, self._opponent_prompt = "", ""
        self._finished = True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        self._seed, self._plies, self.steps = seed, 0, 0
        self.agent = (seed % 2 if self.seat == "alternate" else int(self.seat)) if self.num_players == 2 else 0
        self._last_board, self._opponent_prompt = "", ""
        with self._own_rng(fresh_seed=seed):
            self._ta.reset(num_players=self.num_players, seed=seed)
        self._finished = False
        if self.self_play:
            self.agent = self._ta.state.current_player_id
        stalled = self.opponent is not None and self._opponent_moves()
        if stalled or self._ta.state.done:  # games that cannot start are a bug in the game, not the agent
            raise RuntimeError(f"textarena/{self.game} ended before the agent's first move (seed {seed})")
        return self._drain(self.agent)

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "TextArena")
        self.steps += 1
        state = self._ta.state
        errors_before = state.error_count
        crash = self._play(action, self._allowance)
        invalid = crash is not None or state.error_count > errors_before or state.game_info[self.agent]["invalid_move"]
        stalled = self.opponent is not None and not state.done and self._opponent_moves()
        info: dict[str, Any] = {"invalid_action": True} if invalid else {}
        if crash is not None:
            info["game_error"] = crash
        if self.self_play and not state.done:
            self.agent = state.current_player_id
        text = self._drain(self.agent)
        if state.done and self.self_play:  # every seat's verdict is verdicts(); the text is the final message
            self._finished = True
            return StepResult(f"{text}\n{self._reason()}".strip(), 0.0, True, False, info)
        if state.done:
            verdict = float((state.rewards or {}).get(self.agent, 0.0))
            info["success"] = verdict >= 1.0
            self._finished = True
            reason = state.game_info[self.agent].get("reason") or "The game is over."
            return StepResult(f"{text}\n{reason}".strip(), 0.0, True, False, info, outcome=verdict)
        if stalled or self.steps >= self.max_steps:
            if not self.self_play:
                info["success"] = False
            self._finished = True
            return StepResult(f"{text}\nOut of turns.".strip(), 0.0, False, True, info, outcome=0.0)
        return StepResult(text, 0.0, False, False, info)

    def seats(self) -> int:
        """2 in self-play (both seats act through ``step``), else 1 (the opponent moves inside ``step``)."""
        return 2 if self.self_play else 1

    def to_act(self) -> int:
        return int(self.agent)

    def verdicts(self) -> list[float]:
        """Each seat's verdict (+1 win, 0 draw, -1 loss) once the game ended; 0 for both when it ran out of turns."""
        rewards = (self._ta.state.rewards or {}) if self._ta.state.done else {}
        return [float(rewards.get(seat, 0.0)) for seat in range(self.seats())]

    def state_key(self) -> str | None:
        """A hash of the game state and the agent's seat; None when the state's text is not stable."""
        text = repr(self._ta.state.game_state)
        if " at 0x" in text:  # an object with an address in its repr would differ on replay
            return None
        return hashlib.sha1(f"{self.agent}|{text}".encode()).hexdigest()[:16]

    def valid_actions(self) -> list[str]:
        if self.kit.moves is not None:
            return self.kit.moves(self._ta.state.game_state, self.agent)
        return parse_moves(self._last_board)

    def close(self) -> None:
        self._finished = True  # a model opponent's engine is shared per process (MODEL_OPPONENT), not this env's

    # --- mechanics ------------------------------------------------------------------------
    def _reason(self) -> str:
        """The game's closing words: each seat's reason, once (they usually match)."""
        reasons = [str(info.get("reason") or "") for info in self._ta.state.game_info.values()]
        return "\n".join(dict.fromkeys(r for r in reasons if r)) or "The game is over."

    @contextlib.contextmanager
    def _own_rng(self, fresh_seed: int | None = None) -> Iterator[None]:
        """Run TextArena with this env's ``random`` (and numpy) state; the caller's state is restored."""
        with _RNG_LOCK:
            np = sys.modules.get("numpy")
            saved, np_saved = random.getstate(), (np.random.get_state() if np else None)
            try:
                if fresh_seed is not None:
                    random.seed(fresh_seed)
                    if np:
                        np.random.seed(fresh_seed % 2**32)
                else:
                    random.setstate(self._py_state)
                    if np and self._np_state is not None:
                        np.random.set_state(self._np_state)
                yield
            finally:
                self._py_state = random.getstate()
                self._np_state = np.random.get_state() if np else None
                random.setstate(saved)
                if np:
                    np.random.set_state(np_saved)

    def _count_players(self) -> int:
        errors = []
        for n in (1, 2):
            try:
                with self._own_rng(fresh_seed=0):
                    self._ta.reset(num_players=n, seed=0)
                return n
            except Exception as exc:  # TextArena asserts the player count; other errors name the cause
                errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
        raise ValueError(
            f"textarena/{self.game} cannot start with 1 or 2 players (clew plays single-player puzzles and "
            f"two-player games): {'; '.join(errors)}"
        )

    def _make_opponent(self, spec: str | Opponent) -> Opponent:
        if not isinstance(spec, str):
            return _checked(spec)
        if spec == "random":
            return RandomOpponent(self._opponent_moves_list if self.kit.moves else None)
        if spec == "scripted":
            if self.kit.scripted is None:
                games = ", ".join(sorted(g for g, k in KITS.items() if k.scripted))
                raise ValueError(f"textarena/{self.game} has no scripted opponent; scripted ones exist for {games}")
            rule = self.kit.scripted
            return ScriptedOpponent(lambda: rule(self._ta.state.game_state, self._ta.state.current_player_id))
        if Path(spec).expanduser().exists():
            return _checked(load_entry_point(MODEL_OPPONENT, "opponent builder")(spec))
        if ":" in spec:
            return _checked(load_entry_point(spec, "opponent factory")())
        raise ValueError(
            f"opponent must be 'random', 'scripted', a model directory or 'module:factory'; {spec!r} is none of these"
        )

    def _opponent_moves_list(self) -> list[str]:
        assert self.kit.moves is not None
        return self.kit.moves(self._ta.state.game_state, self._ta.state.current_player_id)

    def _opponent_moves(self) -> bool:
        """Let the opponent play until it is the agent's turn or the game ends; True if it stalled."""
        assert self.opponent is not None
        fallback = RandomOpponent(self._opponent_moves_list if self.kit.moves else None)
        for _ in range(_MAX_OPPONENT_PLIES):
            state = self._ta.state
            if state.done or state.current_player_id == self.agent:
                return False
            seen = self._drain(state.current_player_id, opponent=True)
            player = self.opponent if state.error_count == 0 else fallback  # retries are random valid moves
            action = player.act(seen, self._seed * 1_000_003 + self._plies)
            self._plies += 1
            self._play(action, _OPPONENT_RETRIES)
        return True

    def _play(self, action: str, allowance: int) -> str | None:
        """One move by the current player; a game that crashes on the text leaves the move unplayed.

        Returns None, or the error (``"ValueError: ..."``): TextArena games parse free text and a
        few raise on odd input, which is the move's fault, so it is recorded like an invalid move.
        """
        with self._own_rng():
            self._ta.state.error_allowance = allowance
            try:
                self._ta.step(action)
            except Exception as exc:
                return f"{type(exc).__name__}: {str(exc)[:160]}"
        return None

    def _drain(self, pid: int, opponent: bool = False) -> str:
        """Text of the messages queued for ``pid`` since its last turn (its own move echo left out)."""
        state = self._ta.state
        messages, state.observations[pid] = state.observations[pid], []
        boards = [i for i, (_, _, kind) in enumerate(messages) if kind.name == "GAME_BOARD"]
        lines = []
        for i, (sender, text, kind) in enumerate(messages):
            own_move = kind.name == "PLAYER_ACTION" and sender in (pid, _GAME_ID)  # single-player echoes as GAME
            if own_move or (kind.name == "GAME_BOARD" and i != boards[-1]):
                continue
            if kind.name == "PROMPT" and opponent:
                self._opponent_prompt = str(text).strip()
                continue
            lines.append(str(text).strip() if sender == _GAME_ID else f"Player {sender}: {str(text).strip()}")
        if boards and not opponent:
            self._last_board = str(messages[boards[-1]][1])
        body = "\n".join(line for line in lines if line)
        return f"{self._opponent_prompt}\n\n{body}".strip() if opponent else body


class TextArenaWithExpert(TextArena):
    """A game with a real expert (minimax, xor rule, optimal Hanoi, consistent-code Mastermind)."""

    def expert_action(self) -> str:
        assert self.kit.expert is not None
        return self.kit.expert(self._ta.state.game_state, self.agent)


def _build(game: str, game_kwargs: dict[str, Any]) -> Any:
    """The unwrapped TextArena env for ``game``; unsupported or unknown ids raise ``ValueError``."""
    if family(game) in _UNSUPPORTED:
        raise ValueError(f"textarena/{game} is not supported: {_UNSUPPORTED[family(game)]}")
    textarena = importlib.import_module("textarena")
    known = textarena.envs.registration.ENV_REGISTRY
    if game not in known:
        close = difflib.get_close_matches(game, list(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown TextArena id {game!r}{hint}")
    try:
        env = textarena.make(game, **game_kwargs)
    except Exception as exc:  # import errors of broken games, bad kwargs
        raise ValueError(f"textarena/{game} cannot be built: {type(exc).__name__}: {str(exc)[:200]}") from exc
    while isinstance(env, textarena.Wrapper):
        env = env.env
    return env
