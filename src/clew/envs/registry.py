"""Registry of env ids: versioned built-in ids, families of third-party adapters, ``"module:Class"`` paths.

A family (``rg/<dataset>``, ``textarena/<Game-v0>``, ``scienceworld/<task>``, ...) maps every id with its
prefix to one adapter class, called as ``Adapter(name, **kwargs)``; the adapter's package comes with an
optional extra, and a missing one is a one-line error naming it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any

from clew.envs.base import Env
from clew.registry import Registry

_ID = re.compile(r"^[a-z][a-z0-9_-]*-v\d+$")


@dataclass(frozen=True)
class EnvSpec:
    """A registered env: versioned id, dotted entry point and default constructor kwargs."""

    env_id: str
    entry_point: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def name(self) -> str:
        return self.env_id


@dataclass(frozen=True)
class EnvFamily:
    """Ids ``prefix/<name>`` served by one adapter; ``requires`` is the import name of its package; ``install`` the
    command that adds it when ``pip install 'clew[<extra>]'`` is not enough (a package whose pins conflict with
    clew's other extras goes in with ``--no-deps``)."""

    prefix: str
    entry_point: str
    extra: str
    requires: str
    description: str = ""
    examples: tuple[str, ...] = ()
    install: str = ""

    @property
    def install_line(self) -> str:
        return self.install or f"pip install 'clew[{self.extra}]'"

    @property
    def name(self) -> str:
        return self.prefix

    @property
    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.requires) is not None
        except ModuleNotFoundError:  # a dotted name whose parent package is missing
            return False

    def ids(self) -> list[str]:
        return [f"{self.prefix}/{name}" for name in self.examples]


ENVS: Registry[EnvSpec] = Registry("env")
FAMILIES: Registry[EnvFamily] = Registry("env family")


def register(env_id: str, entry_point: str, description: str = "", **kwargs: Any) -> None:
    """Register ``env_id`` (``name-vN``) for ``"module:Class"`` with default kwargs."""
    if not _ID.match(env_id):
        raise ValueError(f"env id {env_id!r} must look like 'name-v0' (lower-case name, version suffix)")
    if ":" not in entry_point:
        raise ValueError(f"entry_point {entry_point!r} must be 'module:Class'")
    ENVS.add(EnvSpec(env_id, entry_point, dict(kwargs), description))


def register_family(
    prefix: str, entry_point: str, extra: str, requires: str, description: str = "", examples: tuple[str, ...] = (),
    install: str = "",
) -> None:  # fmt: skip
    """Serve every id ``prefix/<name>`` with ``Adapter(name, **kwargs)`` from ``"module:Class"``."""
    if not re.match(r"^[a-z][a-z0-9_]*$", prefix):
        raise ValueError(f"env family prefix {prefix!r} must be a lower-case word")
    FAMILIES.add(EnvFamily(prefix, entry_point, extra, requires, description, tuple(examples), install))


def families() -> list[EnvFamily]:
    """All registered families, sorted by prefix."""
    return list(FAMILIES.available().values())


def registered() -> list[EnvSpec]:
    """All registered specs, sorted by id."""
    return list(ENVS.available().values())


def load_entry_point(entry_point: str, kind: str = "env class") -> type:
    """Import ``"module:Class"`` and return the class (or any callable; ``kind`` names it in errors)."""
    module_name, _, attr = entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {kind.split()[0]} module {module_name!r}: {exc}") from exc
    found = getattr(module, attr, None)
    if not callable(found):
        raise ValueError(f"module {module_name!r} has no {kind} {attr!r}")
    return found  # type: ignore[return-value]


def resolve(env_id: str) -> type:
    """The class ``make(env_id)`` builds, found without building an env (for checks before any work).

    Raises ``ValueError`` for an unknown id (naming close matches), a family whose package is not
    installed (naming the extra), or a ``"module:Class"`` path that does not import.
    """
    if env_id in ENVS:
        return load_entry_point(ENVS.get(env_id).entry_point)
    prefix, slash, name = env_id.partition("/")
    if slash and prefix in FAMILIES and name:
        family = FAMILIES.get(prefix)
        if not family.installed:
            raise ValueError(f"env {env_id} needs the {family.requires!r} package: {family.install_line}")
        return load_entry_point(family.entry_point)
    if ":" in env_id:
        return load_entry_point(env_id)
    raise ValueError(unknown_env_message(env_id))


def make(env_id: str, **kwargs: Any) -> Env:
    """Build an env from a registered id, a family id (``prefix/name``) or a ``"module:Class"`` path."""
    cls = resolve(env_id)
    if env_id in ENVS:
        return cls(**{**ENVS.get(env_id).kwargs, **kwargs})  # type: ignore[no-any-return]
    prefix, slash, name = env_id.partition("/")
    if slash and prefix in FAMILIES and name:
        return cls(name, **kwargs)  # type: ignore[no-any-return]
    return cls(**kwargs)  # type: ignore[no-any-return]


def unknown_env_message(env_id: str) -> str:
    """Name the close matches among built-in ids and family examples."""
    known = [*ENVS.names(), *(i for f in families() for i in f.ids())]
    close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.7)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    prefixes = ", ".join(f"{f.prefix}/..." for f in families())
    return (
        f"unknown env {env_id!r}; {hint}built-in: {', '.join(ENVS.names())}; families: {prefixes}; "
        "or pass 'module:Class' (clew envs lists them all)"
    )


register(
    "keydoor-v0",
    "clew.envs.library.keydoor:KeyDoor",
    description="grid: pick up the key, then open the locked door (horizon set by size)",
)
register(
    "bifurcation-v0",
    "clew.envs.library.bifurcation:Bifurcation",
    description="early branch choice, long irrelevant corridor, outcome fixed by the choice",
)
register(
    "dial-v0",
    "clew.envs.library.dial:Dial",
    description="credit probe with independent dials: horizon, decisive steps, state repeats, reward density",
)
register(
    "instruct-v0",
    "clew.envs.library.instruct:Instruct",
    description="open-ended instructions, no verifier: a judge (rewards) scores the reply; JSONL tasks via path",
)
register(
    "solve-verify-v0",
    "clew.envs.library.solveverify:SolveVerify",
    description="two roles, two seats: a solver answers a sum, a verifier judges it (self-play or a team of policies)",
)
register(
    "toolcalc-v0",
    "clew.envs.library.toolcalc:ToolCalc",
    description="multi-step arithmetic with a calculator tool, then an answer",
)

register_family(
    "gem", "clew.envs.adapters.gem_text:GemEnv", extra="gem", requires="gem",
    description="GEM's text games (Mastermind, Minesweeper, Sudoku, ...) and reasoning-gym questions, boxed replies",
    examples=("game:GuessTheNumber-v0-easy", "game:Mastermind-v0-easy", "game:TowerofHanoi-v0-easy", "rg:chain_sum"),
    install="pip install --no-deps gem-llm==0.1.0",
)  # fmt: skip
register_family(
    "openenv", "clew.envs.adapters.openenv_text:OpenEnv", extra="openenv", requires="openenv.core",
    description="OpenEnv environments (module:Class or an installed env package), in process or on a local server",
    examples=("my_pkg.envs:Game", "echo_env"),
    install="pip install --no-deps openenv-core==0.3.0 fastmcp==4.2.3 fastmcp-slim==4.2.3 py-key-value-aio==0.5.0 "
    "beartype==0.23.1 exceptiongroup==1.3.2",
)  # fmt: skip
register_family(
    "verifiers", "clew.envs.adapters.verifiers_text:VerifiersEnv", extra="verifiers", requires="verifiers",
    description="verifiers 0.4.0 environments (installed packages or module=): single-turn, multi-turn, tools; "
    "weighted rewards become the outcome",
    examples=("my-env", "owner/my-env@1.0"),
    install="pip install --no-deps verifiers==0.4.0 prime-pydantic-config==0.4.3 prime-sandboxes==0.5.18 "
    "connectrpc==0.11.1 protobuf-py==0.1.1 protobuf-py-ext==0.1.1 pyqwest==0.12.0 aiofiles==25.1.0 renderers==0.1.12 "
    "openai-harmony==0.0.8 tenacity==9.2.1 tomli==2.5.0 tomli-w==1.2.0 prime-runs==0.1.4 prime-traces==0.0.10 "
    "prime-tunnel==0.1.17 gepa==0.1.4",
)  # fmt: skip
register_family(
    "crafter", "clew.envs.adapters.crafter_text:CrafterText", extra="crafter", requires="crafter",
    description="Crafter as text: local view in words, status, inventory, 17 named actions, 22 achievements",
    examples=("default", "collect_wood", "place_table", "make_wood_pickaxe", "collect_stone"),
)  # fmt: skip
register_family(
    "minihack", "clew.envs.adapters.nle_text:MiniHackText", extra="nethack", requires="minihack",
    description="MiniHack tasks on NLE as text: message, map, legend, status; named actions (run in env workers)",
    examples=("Room-5x5-v0", "Room-Random-5x5-v0", "Corridor-R2-v0", "MazeWalk-9x9-v0", "KeyRoom-S5-v0"),
)  # fmt: skip
register_family(
    "nethack", "clew.envs.adapters.nle_text:NetHackText", extra="nethack", requires="nle",
    description="NetHack (NLE) as text: the full game and its score, staircase, gold, eat, oracle tasks",
    examples=("score", "staircase", "gold", "challenge"),
)  # fmt: skip
register_family(
    "search", "clew.envs.library.search:SearchEnv", extra="search", requires="bm25s",
    description="multi-hop questions over a local corpus: search (BM25), open documents, answer (EM / F1)",
    examples=("synthetic", "jsonl"),
)  # fmt: skip
register_family(
    "rg", "clew.envs.adapters.reasoning_gym:ReasoningGym", extra="rg", requires="reasoning_gym",
    description="reasoning-gym datasets: answer, read the verifier's feedback, retry (max_attempts)",
    examples=("chain_sum", "basic_arithmetic", "leg_counting", "word_sorting", "simple_equations", "maze"),
)  # fmt: skip
register_family(
    "textarena", "clew.envs.adapters.textarena:TextArena", extra="textarena", requires="textarena",
    description="TextArena games; two-player games seat an opponent (scripted, random or a frozen checkpoint)",
    examples=("TicTacToe-v0", "ConnectFour-v0", "Mastermind-v0", "LightsOut-v0", "TowerOfHanoi-v0", "Minesweeper-v0"),
)  # fmt: skip
register_family(
    "scienceworld", "clew.envs.adapters.scienceworld:ScienceWorld", extra="scienceworld", requires="scienceworld",
    description="ScienceWorld tasks (JVM): long-horizon science experiments, gold paths, valid actions",
    examples=("find-living-thing", "boil", "measure-melting-point-known-substance", "identify-life-stages-1"),
)  # fmt: skip
register_family(
    "twx", "clew.envs.adapters.twx:TextWorldExpress", extra="twx", requires="textworld_express",
    description="TextWorldExpress games (JVM): cooking, coin collecting, map reading, sorting, ...",
    examples=("cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder"),
)  # fmt: skip
register_family(
    "textworld", "clew.envs.adapters.textworld:TextWorld", extra="textworld", requires="textworld",
    description="TextWorld generated games (cached): coin collector, treasure hunter, simple quests",
    examples=("coin_collector", "treasure_hunter", "simple"),
)  # fmt: skip
register_family(
    "tir", "clew.envs.adapters.tir:ToolReasoning", extra="tir", requires="math_verify",
    description="tool-integrated reasoning on reasoning-gym math: run Python in a bubblewrap sandbox, then answer",
    examples=("basic_arithmetic", "chain_sum", "simple_equations"),
)  # fmt: skip
register_family(
    "gym", "clew.envs.adapters.gym_text:GymText", extra="gym", requires="gymnasium",
    description="gymnasium toy-text as text: FrozenLake, Taxi, CliffWalking",
    examples=("FrozenLake-v1", "Taxi-v4", "CliffWalking-v1"),
)  # fmt: skip
