"""textworld/<preset>: TextWorld 1.7.0 generated text adventures (coin collector, treasure hunter, simple).

Ids: ``textworld/coin_collector``, ``textworld/treasure_hunter``, ``textworld/simple`` (tw-make's
``tw-coin_collector``, ``tw-treasure_hunter``, ``tw-simple``). ``reset(seed)`` plays the game that
tw-make generates for that seed and these settings.

Kwargs:
    level: coin_collector 1-300 (default 5: a 5-room chain; quest length ``(level - 1) % 100 + 1``,
        more distractor rooms above 100); treasure_hunter 1-30 (default 1). Not for ``simple``.
    rewards: simple only: ``dense`` (default) | ``balanced`` | ``sparse``.
    goal: simple only: ``detailed`` (default) | ``brief`` | ``none``.
    step_limit: turn budget, invalid commands included (default 100); running out truncates.
    show_actions: append the admissible commands to every observation (default False).
    cache_dir: where generated games live (default ``clew.paths.textworld_dir()``, i.e.
        ``~/.cache/clew/textworld`` unless the cache root is set, e.g. by the CLI from ``$CLEW_CACHE``),
        as ``<key>.z8`` + ``<key>.json``, keyed by preset, settings and seed (``game_key``).
    generate: make a game that is not in the cache (default True). **Slow**: 1-6 s per small game
        here (Inform 7 compiles it), a minute for long treasure hunts, so warm the cache first
        (``scripts/make_textworld_games.py``). False refuses a missing game instead.

Observation: the game's text, without TextWorld's ASCII-art banner, the interpreter's status bar
and the "RESTART, RESTORE ... or UNDO" prompt at the end. Reward: the change in score over
``max_score`` (0-1), so the rewards sum to the final normalised score. No ``outcome`` is
reported: the score is earned step by step (each quest step pays when done), and an explicit
outcome equal to that sum would be counted a second time on top of the rewards; the episode's
outcome is the sum of its rewards, the final normalised score, however the episode ends;
``gated`` (G-RA), which needs an outcome reported apart, finds none here.
Terminated: won or lost; ``info["success"]``: won. A command outside
``admissible_commands`` is a recorded step flagged ``info["invalid_action"]`` (the game answers it,
e.g. "That's not a verb I recognise.").

Expert: ``policy_commands[0]``, TextWorld's winning policy re-planned from the current state after
every step, so it follows the walkthrough while the agent does and finds its way back after a
detour; a lost game has none and the expert says ``look``. State key: a hash of the world's facts
(the game's logical state). Valid actions: ``admissible_commands``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

from clew.envs.base import StepResult, ensure_running, normalize_action
from clew.paths import textworld_dir

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "coin_collector": ("tw-coin_collector", {"level": 5}),
    "treasure_hunter": ("tw-treasure_hunter", {"level": 1}),
    "simple": ("tw-simple", {"rewards": "dense", "goal": "detailed", "test": False}),
}
_BANNER_LINE = re.compile(r"^[\s_|\\/$<>]*$")
_END_PROMPT = re.compile(r"\s*Would you like to RESTART.*$", re.DOTALL)
_STATUS_LINE = re.compile(r"^>.*-=.*=-\s*-?\d+/\d+$")  # the interpreter's prompt + status bar
log = logging.getLogger(__name__)
_TEXTWORLD = threading.RLock()  # TextWorld is not thread-safe (one shared grammar parser): one call at a time


def default_cache_dir() -> Path:
    """``clew.paths.textworld_dir()``: under the cache root (the CLI sets it from the environment)."""
    return textworld_dir()


def game_key(preset: str, settings: dict[str, Any], seed: int) -> str:
    """The cache name of a game, e.g. ``coin_collector-level5-seed0``."""
    parts = [f"{k}{v}" for k, v in sorted(settings.items())]
    return "-".join([preset, *parts, f"seed{seed}"])


def generate_game(preset: str, settings: dict[str, Any], seed: int, cache_dir: Path) -> Path:
    """Generate and compile one game into ``cache_dir`` (atomically); return the ``.z8`` path.

    One call into TextWorld at a time per process: env steps run on a thread pool, and TextWorld is not
    thread-safe (measured: 4 threads generating or loading games at once raise inside its logic parser).
    Parallel TextWorld envs need worker processes (``rollout.env_processes``)."""
    with _TEXTWORLD:
        key = game_key(preset, settings, seed)
        if (cache_dir / f"{key}.z8").exists():  # another thread made it while this one waited
            return cache_dir / f"{key}.z8"
        return _generate(preset, settings, seed, cache_dir)


def _generate(preset: str, settings: dict[str, Any], seed: int, cache_dir: Path) -> Path:
    import textworld
    import textworld.challenges

    challenge, _ = PRESETS[preset]
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = game_key(preset, settings, seed)
    log.info("generating TextWorld game %s (a few seconds)", key)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".gen-") as tmp:
        options = textworld.GameOptions()
        options.seeds = seed
        options.path = str(Path(tmp) / key)
        options.file_ext = ".z8"
        options.force_recompile = True
        _, make_game, _ = textworld.challenges.CHALLENGES[challenge]
        game = make_game(settings=dict(settings), options=options)
        textworld.generator.compile_game(game, options)
        os.replace(Path(tmp) / f"{key}.json", cache_dir / f"{key}.json")  # the .z8 last: its presence = a hit
        os.replace(Path(tmp) / f"{key}.z8", cache_dir / f"{key}.z8")
    return cache_dir / f"{key}.z8"


def _typeable(command: str) -> str:
    """What the interpreter may be sent: printable ASCII, at most 200 characters. A control character in
    a command crashes jericho's frotz (measured: ``"in\\x13"`` ends the process with a segmentation fault);
    such a command is not admissible anyway, so it is still a recorded invalid step. Backslashes go too:
    dumb-frotz reads them as its own meta-commands (``\\help``)."""
    return "".join(c for c in command if c.isascii() and c.isprintable() and c != "\\")[:200]


def clean_text(text: str) -> str:
    """Drop the banner, the status bar and the end-of-game prompt; trim lines and squeeze blank ones."""
    lines = text.splitlines()
    while lines and _BANNER_LINE.match(lines[0]):
        lines.pop(0)
    kept = [line.strip() for line in _END_PROMPT.sub("", "\n".join(lines)).splitlines()]
    body = "\n".join(line for line in kept if not _STATUS_LINE.match(line))
    return re.sub(r"\n{3,}", "\n\n", body).strip()


class TextWorld:
    """A TextWorld game per seed, generated once and cached (see the module docstring)."""

    def __init__(
        self,
        preset: str,
        level: int | None = None,
        rewards: str | None = None,
        goal: str | None = None,
        step_limit: int = 100,
        show_actions: bool = False,
        cache_dir: str | Path | None = None,
        generate: bool = True,
    ) -> None:
        self.preset, self.settings = preset, _settings(preset, level, rewards, goal)
        if step_limit < 1:
            raise ValueError(f"textworld step_limit must be >= 1, got {step_limit}")
        self.step_limit, self.show_actions, self.generate = step_limit, show_actions, generate
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self._env: Any = None
        self._game: Path | None = None
        self._finished = True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        game = self.game_path(seed)
        with _TEXTWORLD:
            if game != self._game:
                self.close()
                self._env, self._game = _start(game), game
            self._state = self._env.reset()
        self.steps, self._score = 0, self._normalised_score()
        self._finished = False
        return self._render(clean_text(self._state.feedback))

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "TextWorld")
        act = normalize_action(action)
        invalid = act not in self.valid_actions()
        with _TEXTWORLD:
            self._state, _, done = self._env.step(_typeable(act))
        self.steps += 1
        score = self._normalised_score()
        reward, self._score = score - self._score, score
        terminated = bool(done)
        truncated = not terminated and self.steps >= self.step_limit
        self._finished = terminated or truncated
        info: dict[str, Any] = {"score": int(self._state["score"]), "success": bool(self._state["won"])}
        if invalid:
            info["invalid_action"] = True
        return StepResult(self._render(clean_text(self._state.feedback)), reward, terminated, truncated, info)

    def state_key(self) -> str:
        facts = "\n".join(sorted(str(f) for f in self._state["facts"]))
        return hashlib.sha1(facts.encode()).hexdigest()[:16]

    def expert_action(self) -> str:
        policy = self._state["policy_commands"] or ["look"]
        return str(policy[0])

    def valid_actions(self) -> list[str]:
        return [str(a) for a in self._state["admissible_commands"]]

    def close(self) -> None:
        if self._env is not None:
            with _TEXTWORLD:
                self._env.close()
        self._env, self._game, self._finished = None, None, True

    # --- games ----------------------------------------------------------------------------
    def game_path(self, seed: int) -> Path:
        """The cached ``.z8`` for ``seed``, generated first if missing (and ``generate`` is on)."""
        path = self.cache_dir / f"{game_key(self.preset, self.settings, seed)}.z8"
        if path.exists():
            return path
        if not self.generate:
            raise FileNotFoundError(f"{path} is not cached and generate=False; run scripts/make_textworld_games.py")
        return generate_game(self.preset, self.settings, seed, self.cache_dir)

    def _normalised_score(self) -> float:
        return max(int(self._state["score"]), 0) / max(int(self._state["max_score"]), 1)

    def _render(self, text: str) -> str:
        if not self.show_actions:
            return text
        return f"{text}\nValid actions: {', '.join(self.valid_actions())}."


def _settings(preset: str, level: int | None, rewards: str | None, goal: str | None) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"unknown textworld preset {preset!r}; presets: {', '.join(PRESETS)}")
    settings = dict(PRESETS[preset][1])
    given = {"level": level, "rewards": rewards, "goal": goal}
    for name, value in given.items():
        if value is None:
            continue
        if name not in settings:
            raise ValueError(f"textworld/{preset} takes no {name!r} (its settings: {', '.join(settings)})")
        settings[name] = value
    limits = {"coin_collector": 300, "treasure_hunter": 30}
    if preset in limits and not 1 <= int(settings["level"]) <= limits[preset]:
        raise ValueError(f"textworld/{preset} level must be in 1..{limits[preset]}, got {settings['level']}")
    if preset == "simple" and settings["rewards"] not in ("dense", "balanced", "sparse"):
        raise ValueError(f"textworld/simple rewards must be dense, balanced or sparse, got {settings['rewards']!r}")
    if preset == "simple" and settings["goal"] not in ("detailed", "brief", "none"):
        raise ValueError(f"textworld/simple goal must be detailed, brief or none, got {settings['goal']!r}")
    return settings


def _start(game: Path) -> Any:
    import textworld

    infos = textworld.EnvInfos(
        admissible_commands=True, policy_commands=True, facts=True, score=True, max_score=True, won=True, lost=True
    )
    with warnings.catch_warnings():  # jericho: TextWorld's games are not in its suite ("not fully supported")
        warnings.filterwarnings("ignore", message=".*not fully supported")
        return textworld.start(str(game), request_infos=infos)
