"""verifiers/<env>: environments of Prime Intellect's ``verifiers`` 0.4.0 (its v1 API), played turn by turn.

verifiers 0.4.0 is not the 0.1.x API (no SingleTurnEnv / MultiTurnEnv / ToolEnv / Rubric): an environment
is a ``vf.Taskset`` (yields ``vf.Task`` s; a task scores a finished ``vf.Trace`` with its ``@vf.reward``
methods, each weighted), tools are ``vf.Toolset`` methods marked ``@vf.tool``, and multi-turn games are
``vf.Env`` subclasses whose ``async run(task, agents)`` drives ``agents.<role>.interaction(task)`` turn by
turn. verifiers itself runs every model call through a harness program (a subprocess chat loop) and an
HTTP interception server; this adapter replaces both with an in-process stand-in for the ``null``
harness, so clew's policy writes every assistant message and nothing leaves the process.

Ids: ``verifiers/<taskset-id>``: the id of an installed environment package (``my-env``, ``owner/my-env``
or ``owner/my-env@1.2``: verifiers imports module ``my_env``, which exports its ``Taskset`` subclass, and
optionally an ``Env`` subclass, through ``__all__``), or any name with ``module=`` naming a local module.

Kwargs:
    module: a module object, an import path or a ``.py`` file/package folder that holds the taskset;
        registered under the id's module name before verifiers resolves the id (tests, local envs). Envs in
        worker processes (``rollout.env_workers``) need a path or import path: a module object does not pickle.
    env_id: a reusable ``vf.Env`` paired with the taskset (verifiers' ``--env.id``); default: the
        taskset's own ``Env`` or the single-agent one.
    env: extra ``EnvConfig`` fields (a dict), e.g. ``{"agent": {"max_turns": 4}}``.
    max_steps: the policy's actions per episode (default 16), malformed ones included; past it the
        episode ends as ``max_turns`` (truncated) and the partial trace is scored.
    success_threshold: ``info["success"]`` is ``outcome >= success_threshold`` (default 1.0).
    Any other kwarg is a field of the taskset's config (``num_tasks=...``, ``game=...``).

Episodes: ``reset(seed)`` plays task ``seed % len(taskset)`` (item ``seed`` of an infinite taskset) and
returns the system prompt, the tools and the task's prompt as text. A bounded taskset has no held-out split of
its own: clew's eval seeds land on the training tasks modulo its length, so give held-out tasks a taskset (or
taskset kwargs) of their own in ``eval.env_kwargs``. Each ``step`` is one model turn;
its observation is what the conversation gained since (tool results, the env's next user message).

Tool calls: the policy writes ``<tool_call>{"name": "...", "arguments": {...}}</tool_call>`` (several
blocks allowed) or a bare JSON object / list of them; a reply without one is a plain message, which
ends the turn's segment (as in verifiers' chat loop). Tool names are ``<server>_<tool>`` as verifiers
advertises them. A block that does not parse, names no tool or has non-object arguments is an invalid
action (``info["invalid_action"]``): nothing enters the trace, the observation says why and the policy
moves again. An unknown tool, arguments that do not validate or a tool that raises are committed
as verifiers does (the tool result is the error) and flagged ``invalid_action`` too.

Reward: every step's reward is 0; on the final step ``outcome`` is the trace's weighted reward
(``sum(score * weight)`` over the task's ``@vf.reward`` s, rewards the env recorded itself and the
env's ``finalize``). ``info``: ``success``, ``score``, ``rewards`` ({name: score}), ``metrics``,
``stop_condition``; ``scoring_error`` when a reward raised (the rewards that ran still count).

Not supported (refused with a clear error): tasks that need a container or a runtime (rewards taking
``runtime`` are skipped, as verifiers does offline), LLM judges (they call an API), envs with a second
policy rollout or a non-trainable model partner (user-sim), harness-specific behaviour (bash, codex).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import importlib.util
import itertools
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import verifiers.v1 as vf

from clew.envs.adapters.verifiers_rollout import Bridge, Episode
from clew.envs.base import StepResult, ensure_running

# --- loading ------------------------------------------------------------------------------------


def module_name(env_name: str) -> str:
    """The module verifiers imports for a taskset id (``owner/my-env@1.0`` -> ``my_env``)."""
    return env_name.rsplit("/", 1)[-1].split("@", 1)[0].replace("-", "_").lower()


def register_module(env_name: str, module: types.ModuleType | str | Path) -> types.ModuleType:
    """Make ``module`` (object, import path, ``.py`` file or package folder) importable as the id's module."""
    target = module_name(env_name)
    if isinstance(module, types.ModuleType):
        mod = module
    elif isinstance(module, Path) or str(module).endswith(".py") or Path(str(module)).is_dir():
        path = Path(module)
        init = path / "__init__.py" if path.is_dir() else path
        spec = importlib.util.spec_from_file_location(
            target, init, submodule_search_locations=[str(path)] if path.is_dir() else None
        )
        if spec is None or spec.loader is None:
            raise ValueError(f"verifiers/{env_name}: cannot import {module}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[target] = mod  # before exec: a package's own imports resolve to it
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(str(module))
    sys.modules[target] = mod
    return mod


def load_vf_env(
    name: str,
    *,
    module: types.ModuleType | str | Path | None = None,
    env_id: str = "",
    env: dict[str, Any] | None = None,
    **taskset: Any,
) -> vf.Env:
    """The ``vf.Env`` for taskset id ``name`` (verifiers' own loader: ``resolve_env_config`` + ``load_environment``)."""
    if module is not None:
        register_module(name, module)
    data = {**(env or {}), "id": env_id, "taskset": {**taskset, "id": name}}
    return vf.load_environment(vf.resolve_env_config(data))


# --- the clew env ---------------------------------------------------------------------------------


class VerifiersEnv:
    """A verifiers 0.4.0 environment as a clew text env (see the module docstring).

    Args:
        name: the taskset id (``my-env``, ``owner/my-env@1.0``).
        module: a local module/file/package holding the taskset (registered under the id's module name).
        env_id: a reusable ``vf.Env`` paired with the taskset.
        env: extra ``EnvConfig`` fields.
        max_steps: the policy's actions per episode.
        success_threshold: ``info["success"]`` is ``outcome >= success_threshold``.
        **taskset: the taskset config's fields.
    """

    def __init__(
        self,
        name: str,
        *,
        module: types.ModuleType | str | Path | None = None,
        env_id: str = "",
        env: dict[str, Any] | None = None,
        max_steps: int = 16,
        success_threshold: float = 1.0,
        **taskset: Any,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"verifiers/{name}: max_steps must be >= 1, got {max_steps}")
        self.name, self.max_steps, self.success_threshold = name, max_steps, success_threshold
        try:
            self.vf_env = load_vf_env(name, module=module, env_id=env_id, env=env, **taskset)
        except (ModuleNotFoundError, TypeError, AttributeError, pydantic.ValidationError) as exc:
            raise ValueError(f"verifiers/{name}: cannot load the environment: {exc}") from exc
        if any(True for _ in self.vf_env.taskset.config.task.judges):
            raise NotImplementedError(f"verifiers/{name}: LLM judges call a model API and are not supported")
        self.taskset = self.vf_env.taskset
        self._tasks: list[vf.Task] | None = list(self.taskset) if self.taskset.bounded else None
        if self._tasks is not None and not self._tasks:
            raise ValueError(f"verifiers/{name}: the taskset has no tasks")
        self._stream: Iterator[vf.Task] | None = None
        self._drawn: list[vf.Task] = []
        self._loop = asyncio.new_event_loop()
        self._shared: list[Any] | None = None
        self._task: asyncio.Task[vf.Episode] | None = None
        self._bridge: Bridge | None = None
        self._episode: Episode | None = None
        self._finished = True
        self.steps = 0
        self.trace: vf.Trace | None = None  # the finished episode's trace (what verifiers would record)

    # --- running the private event loop ------------------------------------------------------
    def _run(self, coro: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._loop.run_until_complete(coro)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from async code: drive it off-thread
            return pool.submit(self._loop.run_until_complete, coro).result()

    async def _until_turn_or_end(self) -> None:
        assert self._task is not None and self._bridge is not None
        ready = asyncio.ensure_future(self._bridge.ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready

    async def _start_shared(self) -> list[Any]:
        servers = list(self.taskset.toolsets(self.taskset.config))
        for server in servers:
            await server.setup()
        await self.vf_env.start()
        return servers

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self._run(asyncio.wait({self._task}))
        self._task = None

    # --- contract --------------------------------------------------------------------------
    def task_for(self, seed: int) -> vf.Task:
        """Task ``seed % len`` of a bounded taskset; item ``seed`` of an unbounded one (the prefix drawn so far is
        kept, so each item is generated once per env)."""
        if seed < 0:
            raise ValueError(f"verifiers/{self.name}: seeds are >= 0, got {seed}")
        if self._tasks is not None:
            return self._tasks[seed % len(self._tasks)]
        if self._stream is None:
            self._stream = iter(self.taskset)
        self._drawn.extend(itertools.islice(self._stream, max(0, seed + 1 - len(self._drawn))))
        if seed >= len(self._drawn):
            raise ValueError(f"verifiers/{self.name}: the taskset ended after {len(self._drawn)} tasks")
        return self._drawn[seed]

    def reset(self, seed: int) -> str:
        self._cancel()
        if self._shared is None:
            self._shared = self._run(self._start_shared())
        task = self.task_for(seed)
        self._bridge = Bridge(self.max_steps)
        self._episode = Episode(self.vf_env, self._bridge, self._shared)
        self._task = self._loop.create_task(self._episode.play(task))
        self.steps, self.trace, self._finished = 0, None, False
        self._run(self._until_turn_or_end())
        if not self._bridge.ready.is_set():
            self._finished = True
            episode = self._task.result()  # raises what run() raised
            errors = [e.message for t in episode.traces for e in t.errors]
            raise RuntimeError(f"verifiers/{self.name}: the episode ended before the policy's first turn: {errors}")
        self._bridge.ready.clear()
        self._bridge.info = {}
        return self._bridge.observation

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, f"VerifiersEnv({self.name})")
        assert self._bridge is not None and self._bridge.action is not None and self._task is not None
        self.steps += 1
        self._bridge.info = {}
        self._bridge.action.set_result(action)
        try:
            self._run(self._until_turn_or_end())
        except BaseException:
            self._finished = True
            raise
        info = dict(self._bridge.info)
        if self._bridge.ready.is_set():
            self._bridge.ready.clear()
            return StepResult(self._bridge.observation, 0.0, False, False, info)
        self._finished = True
        episode = self._task.result()  # an exception from the env's run()/finalize() propagates (policy-charged)
        assert self._episode is not None and self._episode.rollout is not None
        trace = self.trace = self._episode.rollout.trace
        score = float(trace.reward)
        rewards = {k: r.score for k, r in trace.rewards.items() if r is not None}
        info.update(
            score=score,
            success=score >= self.success_threshold,
            rewards=rewards,
            metrics={k: v for k, v in trace.metrics.items() if v is not None},
            stop_condition=trace.stop_condition,
            turns=trace.num_turns,
        )
        if not episode.ok and trace.errors and "scoring_error" not in info:
            info["error"] = trace.errors[-1].message
        truncated = trace.is_truncated
        summary = f"Episode over ({trace.stop_condition}). Reward {score:g}."
        return StepResult(summary, 0.0, not truncated, truncated, info, outcome=score)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._cancel()
        with contextlib.suppress(Exception):
            self._run(self.vf_env.stop())
        for server in self._shared or []:
            with contextlib.suppress(Exception):
                self._run(server._exit_stack.aclose())
        self._loop.close()

    def __del__(self) -> None:  # best effort: an env dropped mid-episode leaves no pending task behind
        with contextlib.suppress(Exception):
            self.close()
