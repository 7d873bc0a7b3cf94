"""gem/<GEM id>: the text environments of GEM (``gem-llm==0.1.0``, "General Experience Maker") as clew envs.

Ids: ``gem/<id>`` for an id of GEM's registry, colon included: ``gem/game:GuessTheNumber-v0-easy``,
``gem/game:Mastermind-v0-hard``, ``gem/game:TowerofHanoi-v0-easy``, ``gem/rg:chain_sum``. clew's registry splits an
id at its first ``/`` and tries families before ``module:Class`` paths, so the colon is harmless; for places
where a colon is awkward, ``gem/game/GuessTheNumber-v0-easy`` (a second ``/`` for the colon) names the same env.
GEM names every game with a difficulty suffix (``-easy``, ``-hard``, ``-random``; 2048 also ``-extreme-hard``):
``game:GuessTheNumber-v0`` alone is not a GEM id and is refused, naming the close ones.

Offline (no downloads): the games GuessTheNumber, Mastermind, Minesweeper, TowerofHanoi, Sudoku, FifteenPuzzle,
Game2048, Sokoban, Crosswords (pandas, word list shipped in the wheel), and every ``rg:<dataset>``
(reasoning-gym, one question, one answer). Refused with the reason: Wordle, Hangman, WordSearch while NLTK's
``words`` corpus is not installed (GEM downloads it at construction); ``math:*``, ``code:*``, ``qa:*``,
``logic:*``, ``eval:*`` while the ``datasets`` package is missing (they download from the HF Hub even then);
``math:Geometry3K`` (images); ``rg:composite`` (needs a config); ``FifteenPuzzle-v0-random`` and
``Crosswords-v0-random`` (broken in 0.1.0).

Kwargs: GEM's constructor kwargs (``max_turns``, ``min_number``, ``num_disks``, ``size`` ...), passed to
``gem.make`` over the registered ones. GEM's classes swallow unknown kwargs (``**_``), so the adapter checks
them against the constructor's named parameters and refuses a typo. The adapter's own:
    reward_mode: ``"gem"`` (default): each step's reward is GEM's (games: dense shaping, -0.1 for a reply
        GEM cannot parse, partial credit at the turn limit; rg: the dataset's score 0..1 on the one step);
        no explicit outcome, so the episode's outcome is their sum. ``"binary"``: every step's reward is 0
        and the ending step's ``outcome`` is 1.0 on success, else 0.0.
    answer_hint: appended to the question of single-turn envs (rg, math, qa, code), whose GEM prompt
        does not say how to answer; default asks for ``\\boxed{}``. ``""`` leaves the question as is.

Actions: the reply as text; GEM reads the last ``\\boxed{...}`` (``\\boxed{37}``, ``\\boxed{1 2 3 4}``,
``\\boxed{reveal 3 2}``, ``\\boxed{A C}``, ``\\boxed{up}``, ``\\boxed{2 3 4}`` (Sudoku, 1-indexed)).

Observations: ``reset`` returns GEM's instructions followed by its ``info["suffix"]`` (the board, "Enter your
guess."), as GEM's own observation wrapper shows the newest turn; each step returns GEM's feedback for that
turn followed by the suffix (the suffix is left off on the ending step). clew keeps the chat history, so
nothing is concatenated here. GEM's ``<｜TERMINAL_STATE｜>`` marker becomes "The episode is over.".

Ending: a GEM game reports ``terminated=True`` on every ending step and adds ``truncated=True`` at its turn
limit; clew's contract wants one of them, so the turn limit is ``truncated`` (not terminated) and every other
ending (win, mine, no moves left, unparseable reply, an answered question) is ``terminated``.

Success (``info["success"]`` on the ending step): GEM's ``info["correct"]`` where it reports one (math, qa);
for games, the ending step is one of GEM's win branches, which all (and only they) open with
"Congratulations!" in 0.1.0 (rewards cannot tell: Mastermind's win step pays the last peg's share,
GuessTheNumber pays partial credit at the turn limit); for the rest (rg), a score of 1.

Invalid actions (``info["invalid_action"]``): a reply GEM cannot parse (games: GEM's format-error reward
-0.1, which also ends the episode, ``info["format_error"]``; single-turn envs: no ``\\boxed{}``), and moves
GEM rejects (out of range, repeated, onto a wall, breaking Sudoku's rules ...), read from GEM's feedback text
since GEM pays them the same 0 as ordinary moves. A rejected move on the turn-limit step is not flagged
(GEM replaces its feedback with the turn-limit message). clew's own invalid-action penalty comes on top of
GEM's -0.1 format penalty in ``reward_mode="gem"``.

Seeding: GEM seeds and uses the process-global ``random`` and ``numpy.random`` (``reset`` calls
``random.seed(seed)``; Minesweeper lays its mines at the first reveal, 2048 drops tiles, from the global
state). Every call into GEM runs under a lock with this env's own RNG state swapped in and the caller's put
back, so envs in one process do not disturb each other (or clew) and replays are exact. ``reset(seed)``
passes ``seed % 2**32`` to GEM. ``rg:*``: GEM draws the item by ``random.choice`` over a 500-item dataset
(``size``) and regenerates the dataset after 500 resets of one instance; the adapter pins GEM's counter so an
item is a function of the seed alone. (clew's own ``rg/<dataset>`` family is the richer route to
reasoning-gym; ``gem/rg:*`` reproduces GEM's prompt and scoring.)

Extras: games are ``HasValidActions`` (lists for every offline game but WordSearch, whose list is empty),
``HasStateKey`` (a hash of the game's state, turn counter left out) and ``HasSnapshot`` (pickled game and RNG
state). ``HasExpert`` only where one exists: GuessTheNumber (bisection on the hints), Mastermind (the first
code consistent with all feedback), TowerofHanoi (optimal moves), Sudoku (the unique solution's next cell),
Minesweeper (a gold path from the hidden board: flags, then safe reveals), and rg datasets with a gold answer
(``\\boxed{answer}``, also ``HasGoldReply``).

Importing GEM: ``import gem`` (needed for any GEM module: it is the parent package) registers every id and
imports reasoning-gym, matplotlib and sympy (~1 s), but no torch, and calls ``logging.basicConfig(INFO)``;
the adapter imports it lazily, at the first env, and undoes that logging change.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import pickle
import random
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any, Literal

from clew.envs.adapters.gem_games import EXPERTS, VALID, boxed, canon, family_of
from clew.envs.base import StepResult, ensure_running

_RNG_LOCK = threading.RLock()
TERMINAL_STATE = "<｜TERMINAL_STATE｜>"  # GEM's observation after a single-turn env's answer
ENDED = "The episode is over."
DEFAULT_ANSWER_HINT = "Please reason step by step, and put your final answer within \\boxed{}."
REWARD_MODES = ("gem", "binary")
_WIN = "Congratulations!"
_FORMAT_ERROR_REWARD = -0.1  # gem.utils.constants.LanguageGameReward.format_error_reward in 0.1.0
_DATASET_KINDS = ("math", "code", "qa", "logic", "eval")
_NLTK_GAMES = ("Wordle", "Hangman", "WordSearch")
_BROKEN = {
    "game:FifteenPuzzle-v0-random": "its constructor fails in gem-llm 0.1.0 (num_rows=None ** 2)",
    "game:Crosswords-v0-random": "its constructor fails in gem-llm 0.1.0 (no words match hardcore=None)",
    "math:Geometry3K": "its questions are images",
    "rg:composite": "it mixes other reasoning-gym datasets and needs a config; name those datasets instead",
}
# GEM's feedback for moves it rejects (LanguageGameReward.invalid_action_reward), all 0.1.0 games
_REJECTED = re.compile(
    r"outside the (range|bounds)|out of bounds|already (been )?(guessed|revealed|filled|tried)"
    r"|has been already guessed|has \d+ (entries|letters) but|which is of length \d+, but|invalid action"
    r"|invalid move|doesn't change the board|violates Sudoku rules|which is empty|is larger than the top disk"
    r"|collide with wall|cannot be filled|is already filled|words must be either across",
    re.IGNORECASE,
)
# constant or bulky attributes left out of a game's state key
_NOT_STATE = frozenset({"turn_count", "env_id", "entry_point", "all_words", "available_words", "word_data",
                        "word_list", "action_space", "_is_random"})  # fmt: skip


# --- importing GEM ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _gem() -> Any:
    """``import gem`` once, undoing its ``logging.basicConfig(level=INFO)`` on the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        gem = importlib.import_module("gem")
    except ImportError as exc:
        raise ValueError(f"gem/ envs need the gem-llm package (pip install --no-deps gem-llm==0.1.0): {exc}") from exc
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    return gem


def registry() -> dict[str, Any]:
    """GEM's registered ids and specs (importing GEM)."""
    _gem()
    from gem.envs.registration import ENV_REGISTRY

    return dict(ENV_REGISTRY)


def gem_id(name: str) -> str:
    """The GEM id a clew name stands for: itself, or ``kind/rest`` read as ``kind:rest``."""
    if ":" not in name and "/" in name:
        kind, _, rest = name.partition("/")
        return f"{kind}:{rest}"
    return name


def _entry_class(entry_point: Any) -> type:
    if not isinstance(entry_point, str):
        return entry_point  # type: ignore[no-any-return]
    module, _, attr = entry_point.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def _check_kwargs(env_id: str, cls: type, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(cls).parameters
    open_kwargs = any(p.kind is p.VAR_KEYWORD and p.name != "_" for p in params.values())
    named = {n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    unknown = sorted(set(kwargs) - named)
    if unknown and not open_kwargs:
        raise ValueError(f"gem/{env_id}: unknown kwargs {unknown}; {cls.__name__} takes {sorted(named)}")


def _refusal(env_id: str) -> str | None:
    """Why ``env_id`` cannot run here, or None."""
    if env_id in _BROKEN:
        return _BROKEN[env_id]
    kind, _, rest = env_id.partition(":")
    if kind in _DATASET_KINDS and importlib.util.find_spec("datasets") is None:
        return "it loads a dataset from the HF Hub with the `datasets` package, which is not installed"
    if kind == "game" and rest.split("-")[0] in _NLTK_GAMES:
        import nltk

        try:
            nltk.data.find("corpora/words")
        except LookupError:
            return "it needs NLTK's `words` corpus (python -m nltk.downloader words; GEM downloads it otherwise)"
    return None


@contextlib.contextmanager
def _no_nltk_download() -> Iterator[None]:
    """GEM's word games call ``nltk.download('words')`` even when the corpus is installed; skip the network."""
    nltk = sys.modules.get("nltk")
    if nltk is None:
        yield
        return
    original = nltk.download
    setattr(nltk, "download", lambda *args, **kwargs: True)  # noqa: B010
    try:
        yield
    finally:
        setattr(nltk, "download", original)  # noqa: B010


# --- the adapter ------------------------------------------------------------------------------------
class GemEnv:
    """A GEM env as a clew env; see the module docstring. ``GemEnv(name)`` returns the subclass whose optional
    protocols (valid actions, expert, snapshot) this env really has, so ``isinstance`` checks hold exactly."""

    def __new__(cls, name: str = "", *args: Any, **kwargs: Any) -> GemEnv:
        if cls is not GemEnv or not name:
            return object.__new__(cls)
        env_id = gem_id(name)
        if env_id.startswith("game:"):
            target: type[GemEnv] = GemGameExpert if family_of(env_id) in EXPERTS else GemGame
        elif env_id.startswith("rg:"):
            target = GemAnswerExpert  # narrowed to GemEnv in __init__ when the dataset has no gold answers
        else:
            target = GemEnv
        return object.__new__(target)

    def __init__(
        self,
        name: str,
        reward_mode: Literal["gem", "binary"] = "gem",
        answer_hint: str = DEFAULT_ANSWER_HINT,
        **gem_kwargs: Any,
    ) -> None:
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"gem/{name}: reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        self.env_id = env_id = gem_id(name)
        specs = registry()
        if env_id not in specs:
            close = difflib.get_close_matches(env_id, list(specs), n=4, cutoff=0.6)
            hint = f"did you mean {', '.join('gem/' + c for c in close)}? " if close else ""
            raise ValueError(f"unknown GEM env {env_id!r}; {hint}(gem-llm 0.1.0 has {len(specs)} ids)")
        if (why := _refusal(env_id)) is not None:
            raise ValueError(f"gem/{env_id} is not supported here: {why}")
        cls = _entry_class(specs[env_id].entry_point)
        _check_kwargs(env_id, cls, gem_kwargs)
        self.kind, self.family = env_id.partition(":")[0], family_of(env_id)
        self.reward_mode, self.answer_hint = reward_mode, answer_hint
        self._py_state: Any = None
        self._np_state: Any = None
        with self._own_rng(fresh_seed=0), _no_nltk_download():
            self._env = _gem().make(env_id, **gem_kwargs)  # GEM constructors call reset() once
        self.turns, self._finished = 0, True
        if isinstance(self, GemAnswerExpert) and self._dataset_gold() is None:  # a dataset without gold answers
            self.__class__ = GemEnv  # type: ignore[assignment]

    # --- contract -------------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        if self.kind == "rg":
            self._env.idx = 0  # GEM regenerates its dataset every `size` resets; keep items a function of the seed
        with self._own_rng(fresh_seed=seed):
            obs, info = self._env.reset(seed=seed % 2**32)
        self.turns, self._finished = 0, False
        text = _join(obs, info.get("suffix"))
        if self.kind != "game" and self.answer_hint and not info.get("suffix"):
            text = _join(text, self.answer_hint)
        return text

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, f"gem/{self.env_id}")
        # a game may draw from the global RNG on a move; a question's step only scores the answer, which may hang
        # on a pathological one: it runs without the process-wide lock, so it never blocks the other GEM envs
        with self._own_rng() if self.kind == "game" else contextlib.nullcontext():
            obs, reward, gem_terminated, gem_truncated, gem_info = self._env.step(action)
        self.turns += 1
        reward, ended = float(reward), bool(gem_terminated or gem_truncated)
        info: dict[str, Any] = {k: v for k, v in gem_info.items() if k != "suffix"}
        info |= {"gem_reward": reward, "gem_terminated": bool(gem_terminated), "gem_truncated": bool(gem_truncated)}
        text = ENDED if obs == TERMINAL_STATE else str(obs)
        format_error = self._format_error(action, reward, ended)
        invalid = format_error or (self.kind == "game" and bool(_REJECTED.search(text)))
        if invalid:
            info["invalid_action"] = True
        if format_error:
            info["format_error"] = True
        if not ended:
            return StepResult(_join(text, gem_info.get("suffix")), reward if self.reward_mode == "gem" else 0.0,
                              False, False, info)  # fmt: skip
        self._finished = True
        success = self._success(text, reward, bool(gem_truncated), gem_info, format_error)
        info["success"] = success
        # a game's turn limit is a truncation; every other ending (win, loss, bad reply, an answer) terminates
        truncated = self.kind == "game" and bool(gem_truncated) and not format_error and not success
        if self.reward_mode == "binary":
            return StepResult(text, 0.0, not truncated, truncated, info, outcome=1.0 if success else 0.0)
        return StepResult(text, reward, not truncated, truncated, info)

    def close(self) -> None:
        self._finished = True
        pool = getattr(self._env, "mp_pool", None)  # GEM's math envs grade in a process pool
        if pool is not None:
            pool.terminate()

    # --- mechanics ------------------------------------------------------------------------------
    def _format_error(self, action: str, reward: float, ended: bool) -> bool:
        if self.kind == "game":  # GEM's games pay exactly this, and end the episode, only for unparseable replies
            return ended and reward == _FORMAT_ERROR_REWARD
        from gem.utils.parsing import extract_last_boxed_answer

        if self.kind == "code":
            return ended and reward == _FORMAT_ERROR_REWARD
        return extract_last_boxed_answer(action) is None

    def _success(self, text: str, reward: float, gem_truncated: bool, gem_info: dict[str, Any], fmt: bool) -> bool:
        if isinstance(gem_info.get("correct"), bool):
            return bool(gem_info["correct"])
        if self.kind == "game":
            return not fmt and text.startswith(_WIN)
        return reward >= 1.0

    def _gold(self) -> str | None:
        answer = (getattr(self._env, "data", None) or {}).get("answer")
        return None if answer is None else str(answer)

    def _dataset_gold(self) -> str | None:
        dataset = getattr(self._env, "ds", None)
        answer = dataset[0].get("answer") if dataset is not None and len(dataset) else None
        return None if answer is None else str(answer)

    @contextlib.contextmanager
    def _own_rng(self, fresh_seed: int | None = None) -> Iterator[None]:
        """Run GEM with this env's ``random``/``numpy.random`` state; the caller's state is put back."""
        import numpy as np

        with _RNG_LOCK:
            saved, np_saved = random.getstate(), np.random.get_state()
            try:
                if fresh_seed is not None:
                    random.seed(fresh_seed)
                    np.random.seed(fresh_seed % 2**32)
                else:
                    random.setstate(self._py_state)
                    np.random.set_state(self._np_state)
                yield
            finally:
                self._py_state, self._np_state = random.getstate(), np.random.get_state()
                random.setstate(saved)
                np.random.set_state(np_saved)


def _join(text: str, suffix: str | None) -> str:
    """``text`` then ``suffix`` on a new line (GEM's observation wrapper joins them so)."""
    if not suffix:
        return text
    return text + suffix if text.endswith("\n") else text + "\n" + suffix


class GemGame(GemEnv):
    """A GEM game: valid actions, a state key and snapshots."""

    def valid_actions(self) -> list[str]:
        moves = VALID.get(self.family)
        return moves(self._env) if moves is not None and not self._finished else []

    def state_key(self) -> str | None:
        state = {k: v for k, v in vars(self._env).items() if k not in _NOT_STATE}
        text = json.dumps(canon(state), sort_keys=True)
        return hashlib.sha1(f"{self.env_id}|{text}".encode()).hexdigest()[:16]

    def snapshot(self) -> bytes:
        return pickle.dumps((self._env, self._py_state, self._np_state, self.turns, self._finished))

    def restore(self, state: bytes) -> None:
        self._env, self._py_state, self._np_state, self.turns, self._finished = pickle.loads(state)


class GemGameExpert(GemGame):
    """A GEM game with an expert (see ``EXPERTS``)."""

    def expert_action(self) -> str:
        return EXPERTS[self.family](self._env)


class GemAnswerExpert(GemEnv):
    """A single-question GEM env (rg) whose item has a gold answer."""

    def expert_action(self) -> str:
        return boxed(self._gold())

    def gold_reply(self) -> str | None:
        gold = self._gold()
        return None if gold is None else boxed(gold)
