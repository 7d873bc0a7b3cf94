"""openenv/<env>: environments written for OpenEnv (``openenv-core`` 0.3.0), played in words.

OpenEnv environments are server-side classes
(``openenv.core.env_server.interfaces.Environment``) with ``reset(seed=, episode_id=) -> Observation``,
``step(action) -> Observation`` and a ``state`` property, over pydantic models
(``openenv.core.env_server.types.Action`` / ``Observation`` / ``State``); an ``Observation`` carries
``done``, ``reward`` (``bool | int | float | None``) and ``metadata`` besides its own fields. Normally they
are served from a container; this adapter runs them locally, without Docker or the HF Hub.

Ids (the part after ``openenv/``):
    ``package.module:Class``: an ``Environment`` subclass (or a factory returning one), run in-process.
    ``path/to/file.py:Class``: the same from a file (its folder joins ``sys.path``, the file imports as a module
        named by its stem, so a server subprocess imports it too): ``openenv/examples/hub_envs/guess_openenv.py:Guess``.
    ``<name>``: an installed OpenEnv env package laid out as ``openenv init`` makes it (module ``<name>`` or
        ``<name>_env``, its ``server`` subpackage exporting the ``Environment`` subclass, ``models`` its
        ``Action``/``Observation``), run in-process.
    any name with ``base_url=...``: an OpenEnv server already running (a label only), over its ``/ws``
        WebSocket session.

Kwargs:
    mode: ``"inprocess"`` (default for a class), ``"server"`` (start a local ``uvicorn`` subprocess on a free
        127.0.0.1 port serving the class, or ``app``, and talk to it over ``/ws``: isolates an env that
        wants its own process), ``"remote"`` (implied by ``base_url``).
    base_url: ``http://host:port`` of a running OpenEnv server.
    app: ``"module:app"``, a FastAPI app (``openenv.core.env_server.create_app(...)``) to serve in
        ``"server"`` mode instead of building one from the class.
    action: ``"module:Class"``, the env's ``Action`` type, where it cannot be read from the class
        (``Environment[Act, Obs, State]`` generic arguments, the ``step`` annotation, ``<pkg>.models``).
    action_field: the action field the policy's text fills (default: the only field, when there is one).
        With one field, the text is that field's value (a string as written; numbers, booleans, lists
        parsed by pydantic's lax validation or as JSON). With several, the text must hold a JSON object of
        the fields (code fences and prose around it are tolerated).
    observation_field: render only this observation field (default: the only field alone, else
        ``name: value`` lines of every field but ``done``/``reward``/``metadata``).
    instructions: append how to write an action to the first observation (default True).
    max_steps: turn budget, invalid actions included (default 100); running out truncates.
    invalid_action_reward: reward of a step whose text does not make a valid action (default 0.0).
    success_reward: when set, ``info["success"]`` on the ending step is ``reward >= success_reward``.
    env_kwargs: constructor kwargs of the Environment class (in-process and ``"server"`` modes).
    reset_kwargs: extra kwargs for ``reset`` (passed only where its signature accepts them).
    start_timeout_s / message_timeout_s: server start-up and per-message limits (server/remote modes; the
        message limit defaults to 50 s, under clew's 60 s ``rollout.env_step_timeout_s``). A message that fails or
        times out ends the session (a late reply would answer the next message): the episode fails, the next
        ``reset`` opens a new session.

A text that is not a valid action (bad JSON, a pydantic validation error, here or on the server) is a
recorded step flagged ``info["invalid_action"]`` with ``info["error"]``; the env is not stepped and the
turn counts. An exception from the env's own ``step`` propagates (the policy's failure, as clew types
it); a lost or unreachable server raises ``InfraError``. ``reward`` is the observation's reward (None is
0); ``terminated`` is its ``done``; ``info["metadata"]`` is its metadata (in-process only: the OpenEnv
wire format drops it). The seed goes to ``reset(seed=...)`` when the env takes one (in-process, ``seeded`` says
whether it did after ``reset``; the server filters it the same way).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clew.envs.adapters.openenv_codec import ActionCodec, render_observation
from clew.envs.adapters.openenv_wire import (
    InProcess,
    InvalidAction,
    LocalServer,
    Remote,
)
from clew.envs.base import StepResult, ensure_running

if TYPE_CHECKING:
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, Observation


# --------------------------------------------------------------------------- resolving ids


def _import_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{path!r} is not 'module:attr'")
    if module_name.endswith(".py"):
        module_name = _file_module(module_name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"openenv: cannot import {module_name!r}: {exc}") from exc
    found: Any = module
    for part in attr.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ValueError(f"openenv: module {module_name!r} has no {attr!r}")
    return found


def _file_module(file: str) -> str:
    """The module name a ``.py`` file imports as, its folder put on ``sys.path`` (for this process and servers)."""
    path = Path(file).resolve()
    if not path.is_file():
        raise ValueError(f"openenv: no file {file!r}")
    loaded = sys.modules.get(path.stem)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != path:
        raise ValueError(f"openenv: {file} would import as module {path.stem!r}, which is already {loaded!r}; "
                         "rename the file")  # fmt: skip
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    return path.stem


def _subclasses_in(namespace: Any, base: type) -> list[type]:
    seen: list[type] = []
    for value in vars(namespace).values():
        concrete = inspect.isclass(value) and issubclass(value, base) and not inspect.isabstract(value)
        if concrete and value is not base and value not in seen:
            seen.append(value)
    return seen


def _package_env(name: str) -> tuple[type, Any]:
    """The Environment class of an installed ``openenv init``-style package, and the package."""
    from openenv.core.env_server.interfaces import Environment

    base = re.sub(r"[-_]env$", "", name.replace("-", "_"))
    tried = []
    for module_name in dict.fromkeys((name.replace("-", "_"), f"{base}_env", base)):
        tried.append(module_name)
        try:
            server = importlib.import_module(f"{module_name}.server")
        except ImportError:
            continue
        found = _subclasses_in(server, Environment)
        if len(found) == 1:
            return found[0], importlib.import_module(module_name)
        if found:
            names = ", ".join(f"{c.__module__}:{c.__qualname__}" for c in found)
            raise ValueError(f"openenv/{name}: {module_name}.server exports several environments ({names}); name one")
    raise ValueError(
        f"openenv/{name}: no OpenEnv env package found (tried {', '.join(m + '.server' for m in tried)}); "
        "pass 'module:Class' or base_url"
    )


def _generic_args(cls: type) -> tuple[Any, ...]:
    """``(Act, Obs, State)`` from ``class X(Environment[Act, Obs, State])`` anywhere in the MRO."""
    from openenv.core.env_server.interfaces import Environment

    for klass in cls.__mro__:
        for orig in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(orig) is Environment:
                return typing.get_args(orig)
    return ()


def _model_types(
    env_cls: type[Environment[Any, Any, Any]], package: Any, explicit_action: str | None
) -> tuple[type[Action], type[Observation]]:
    """The env's Action and Observation classes."""
    from openenv.core.env_server.types import Action, Observation

    def usable(candidate: Any, base: type) -> bool:
        return inspect.isclass(candidate) and issubclass(candidate, base) and candidate is not base

    args = _generic_args(env_cls)
    try:
        hints = typing.get_type_hints(env_cls.step)
    except Exception:  # unresolvable forward references: fall back to the other sources
        hints = {}
    models = getattr(package, "models", None) if package is not None else None
    if package is not None and models is None:
        try:
            models = importlib.import_module(f"{package.__name__}.models")
        except ImportError:
            models = None

    def pick(index: int, hint: str, base: type) -> type | None:
        if len(args) > index and usable(args[index], base):
            return args[index]  # type: ignore[no-any-return]
        if usable(hints.get(hint), base):
            return hints[hint]  # type: ignore[no-any-return]
        if models is not None:
            found = _subclasses_in(models, base)
            if len(found) == 1:
                return found[0]
        return None

    action_cls = _import_path(explicit_action) if explicit_action else pick(0, "action", Action)
    if action_cls is None:
        raise ValueError(
            f"openenv: cannot tell the Action type of {env_cls.__qualname__} (no Environment[...] arguments, "
            "no step annotation): pass action='module:Class'"
        )
    return action_cls, pick(1, "return", Observation) or Observation


# --------------------------------------------------------------------------- backends


# --------------------------------------------------------------------------- the adapter


class OpenEnv:
    """An OpenEnv environment as a clew text env (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        mode: str | None = None,
        base_url: str | None = None,
        app: str | None = None,
        action: str | None = None,
        action_field: str | None = None,
        observation_field: str | None = None,
        instructions: bool = True,
        max_steps: int = 100,
        invalid_action_reward: float = 0.0,
        success_reward: float | None = None,
        env_kwargs: dict[str, Any] | None = None,
        reset_kwargs: dict[str, Any] | None = None,
        start_timeout_s: float = 60.0,
        message_timeout_s: float = 50.0,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"openenv/{name}: max_steps must be >= 1, got {max_steps}")
        mode = mode or ("remote" if base_url else "server" if app else "inprocess")
        if mode not in ("inprocess", "server", "remote"):
            raise ValueError(f"openenv/{name}: mode must be inprocess, server or remote, got {mode!r}")
        if (mode == "remote") != (base_url is not None):
            raise ValueError(f"openenv/{name}: base_url goes with mode='remote' (and only there)")
        self.name, self.mode = name, mode
        self.max_steps, self.invalid_action_reward, self.success_reward = (
            max_steps,
            invalid_action_reward,
            success_reward,
        )
        self.observation_field, self.show_instructions = observation_field, instructions
        self.reset_kwargs = dict(reset_kwargs or {})
        self._server: LocalServer | None = None
        self._backend: InProcess | Remote
        env_kwargs = dict(env_kwargs or {})

        if mode == "remote":
            assert base_url is not None
            self._backend = Remote(base_url, message_timeout_s)
        elif app is not None:
            self._serve({"app": app}, start_timeout_s, message_timeout_s)
        else:
            factory, package = (_import_path(name), None) if ":" in name else _package_env(name)
            env = None if inspect.isclass(factory) and mode == "server" else factory(**env_kwargs)
            env_cls = factory if inspect.isclass(factory) else type(env)
            action_cls, obs_cls = _model_types(env_cls, package, action)
            if mode == "inprocess":
                self._backend = InProcess(env, action_cls)
            else:
                if env is not None:
                    env.close()  # a factory's probe, built to read its types
                where = {"env": factory, "action": action_cls, "observation": obs_cls}
                spec = {key: f"{obj.__module__}:{obj.__qualname__}" for key, obj in where.items()}
                self._serve({**spec, "kwargs": env_kwargs}, start_timeout_s, message_timeout_s)
        try:
            self._codec = ActionCodec(self._backend.schema, action_field)
        except BaseException:
            self.close()
            raise
        self._steps = 0
        self._finished = True

    def _serve(self, spec: dict[str, Any], start_timeout_s: float, message_timeout_s: float) -> None:
        """Start a local server for ``spec`` and open a session on it (the server stops if that fails)."""
        self._server = LocalServer(spec, start_timeout_s)
        try:
            self._backend = Remote(self._server.base_url, message_timeout_s)
        except BaseException:
            self._server.close()
            raise

    @property
    def base_url(self) -> str | None:
        """Where the env is served (server and remote modes)."""
        return self._backend.base_url if isinstance(self._backend, Remote) else None

    def reset(self, seed: int) -> str:
        reply, seeded = self._backend.reset(seed, self.reset_kwargs)
        if self.observation_field is not None and self.observation_field not in reply.fields:
            raise ValueError(f"openenv/{self.name}: observation_field {self.observation_field!r} is not a field of the "
                             f"observation; it has {sorted(reply.fields)}")  # fmt: skip
        self._steps = 0
        self._finished = reply.done
        self.seeded = seeded
        text = render_observation(reply.fields, self.observation_field)
        hint = self._codec.instructions() if self.show_instructions else ""
        return f"{text}\n\n{hint}" if hint else text

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, f"openenv/{self.name}")
        self._steps += 1
        info: dict[str, Any] = {}
        try:
            try:
                payload = self._codec.payload(action)
            except ValueError as exc:
                raise InvalidAction(str(exc)) from None
            reply = self._backend.step(payload)  # the env's own exceptions propagate
        except InvalidAction as exc:
            hint = self._codec.instructions()
            text = f"Invalid action: {exc}." + (f" {hint}" if hint else "")
            truncated = self._steps >= self.max_steps
            self._finished = truncated
            info.update(invalid_action=True, error=str(exc))
            return StepResult(text, self.invalid_action_reward, False, truncated, info)
        reward = 0.0 if reply.reward is None else float(reply.reward)
        terminated = reply.done
        truncated = not terminated and self._steps >= self.max_steps
        self._finished = terminated or truncated
        info["openenv_reward"] = reply.reward
        if reply.metadata:
            info["metadata"] = reply.metadata
        if terminated and self.success_reward is not None:
            info["success"] = reward >= self.success_reward
        return StepResult(render_observation(reply.fields, self.observation_field), reward, terminated, truncated, info)

    def close(self) -> None:
        try:
            self._backend.close()
        finally:
            if self._server is not None:
                self._server.close()
                self._server = None
