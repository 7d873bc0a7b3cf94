"""An in-process stand-in for verifiers 0.4.0's rollout and ``null`` harness, whose model is clew's policy
(``verifiers_text``): verifiers' trace, limits, ``@vf.stop`` s and intercepts, scoring and tool semantics, with
each model call awaiting the policy's next ``step`` through a ``Bridge``; no runtime, harness program or
interception server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import verifiers.v1 as vf
from verifiers.v1 import graph
from verifiers.v1.configs.agent import agent_config_fields, resolve_agent
from verifiers.v1.dialects.chat import parse_message
from verifiers.v1.errors import TaskError, ToolsetError, boundary
from verifiers.v1.session import RolloutLimits, RolloutSession, hook_boundary
from verifiers.v1.state import state_cls
from verifiers.v1.trace import AgentInfo, ModelCall, TraceTask
from verifiers.v1.utils.decorators import discover_decorated, invoke

from clew.envs.adapters.verifiers_tools import (
    TOOL_HINT,
    Parsed,
    Tools,
    parse_reply,
    render_message,
    render_tools,
    text_of,
)

MODEL = "clew-policy"


# --- the bridge between verifiers' coroutines and clew's step() --------------------------------------


class Bridge:
    """Where a rollout waits for the policy: ``ask`` publishes an observation and awaits the action."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self.asked = 0
        self.ready = asyncio.Event()
        self.observation = ""
        self.action: asyncio.Future[str] | None = None
        self.info: dict[str, Any] = {}

    async def ask(self, observation: str) -> str | None:
        """The policy's next reply, or None when its action budget is spent."""
        if self.asked >= self.max_steps:
            return None
        self.asked += 1
        self.observation = observation
        self.action = asyncio.get_running_loop().create_future()
        self.ready.set()
        return await self.action

    def flag(self, **info: Any) -> None:
        for key, value in info.items():
            if isinstance(value, list):
                self.info.setdefault(key, []).extend(value)
            else:
                self.info[key] = value


# --- an in-process stand-in for verifiers' Rollout + null harness ---------------------------------------


class _PolicyRollout:
    """One agent rollout whose model is clew's policy: verifiers' trace, limits, @stop s and intercepts,
    scoring and tool semantics, without a runtime, a harness program or an interception server."""

    def __init__(self, owner: Episode, task: vf.Task, agent: _PolicyAgent, has_user: bool) -> None:
        if task.NEEDS_CONTAINER:
            raise NotImplementedError(f"task {type(task).__name__} needs a container runtime")
        self.owner, self.task, self.has_user = owner, task, has_user
        self.trace = vf.Trace(
            task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
            state=state_cls(type(task))(),
            agent=AgentInfo(config=agent.config, name=agent.name, trainable=agent.trainable),
        )
        stops = [(hook_boundary(fn, allow_trace=True), fn) for fn in task.hooks("stop")]
        hooks = [(hook_boundary(fn, allow_trace=False), fn) for fn in discover_decorated(task, "intercept")]
        cfg = agent.config
        self.session = RolloutSession(
            ctx=vf.ModelContext(
                model=MODEL, client=vf.EvalClientConfig(base_url="http://unused.invalid", api_key_var="CLEW_UNUSED")
            ),
            trace=self.trace,
            trace_stops=[fn for kind, fn in stops if kind is vf.Trace],
            request_stops=[fn for kind, fn in stops if kind is vf.Request],
            response_stops=[fn for kind, fn in stops if kind is vf.Response],
            request_interceptors=[fn for kind, fn in hooks if kind is vf.Request],
            response_interceptors=[fn for kind, fn in hooks if kind is vf.Response],
            limits=RolloutLimits(cfg.max_turns, cfg.max_input_tokens, cfg.max_output_tokens, cfg.max_total_tokens),
            gates_tools=True,
        )
        self.servers: list[Any] = []
        self.tools = Tools([])
        self.failed = False
        self.failure: Exception | None = None
        self.closed = False
        self.seen = 0  # messages of the conversation the policy has already read or written

    @property
    def ok(self) -> bool:
        return not self.failed and self.trace.stop_condition is None

    def fail(self, error: Exception) -> None:
        self.failed, self.failure = True, error
        self.trace.record_error(error)

    async def open(self) -> None:
        try:
            if self.task.data.prompt is None and not self.has_user:
                raise TaskError("task has no prompt and no user to open the conversation")
            async with boundary(TaskError, "task setup"):
                await invoke(self.task.setup, {"trace": self.trace, "runtime": None})
            async with boundary(ToolsetError, "building tool servers"):
                self.servers = list(self.task.toolsets(self.task.config))
                for server in self.servers:
                    await server.setup()
                    await server.setup_task(self.task)
                self.tools = Tools([*self.servers, *self.owner.shared_servers])
        except Exception as exc:
            self.fail(exc)

    def _opening(self) -> list[Any]:
        data = self.task.data
        messages: list[Any] = [vf.SystemMessage(content=data.system_prompt)] if data.system_prompt else []
        if isinstance(data.prompt, str):
            messages.append(vf.UserMessage(content=data.prompt))
        elif data.prompt is not None:
            messages.extend(data.prompt)
        return messages

    def _observation(self, messages: list[Any]) -> str:
        new = messages[self.seen :]
        if self.seen:
            return "\n\n".join(render_message(m) for m in new)
        parts = [text_of(m.content) for m in new if isinstance(m, vf.SystemMessage)]
        if self.tools:
            parts.append(render_tools(self.tools.specs))
        parts += [render_message(m) for m in new if not isinstance(m, vf.SystemMessage)]
        return "\n\n".join(p for p in parts if p)

    async def _ask(self, messages: list[Any]) -> Parsed | None:
        observation = self._observation(messages)
        while True:
            text = await self.owner.policy_turn(self, observation)
            if text is None:
                return None
            parsed = parse_reply(text, bool(self.tools))
            if parsed.error is None:
                return parsed
            self.owner.bridge.flag(invalid_action=True, tool_error=parsed.error)
            observation = f"Error: {parsed.error}. {TOOL_HINT}"

    async def segment(self, messages: list[Any] | None) -> None:
        """One harness segment: model turns (each one ``step``) and tool calls until a text-only reply."""
        if self.closed or not self.ok:
            return
        if messages is None:
            conversation = self._opening()
        else:
            base = list(self.trace.messages) if self.trace.nodes else self._opening()
            conversation = [*base, *messages]
        session, trace = self.session, self.trace
        while True:
            if await session.refused() is not None:
                return
            request = vf.Request(messages=conversation, tools=self.tools.specs or None)
            request, rewrites, stopped = await session.rewrite_request(request)
            trace.request_rewrites.extend(rewrites)
            if stopped is not None:
                graph.prepare_turn(trace, request.messages, request.tools).commit_prompt()
                trace.stop(stopped)
                return
            turn = graph.prepare_turn(trace, request.messages, request.tools)
            parsed = await self._ask(request.messages)
            if parsed is None:
                turn.abandon()
                trace.stop("max_turns")
                return
            calls = [
                vf.ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=name, arguments=arguments)
                for name, arguments in parsed.calls
            ]
            response = vf.Response(
                id=f"clew-{uuid.uuid4().hex}",
                created=int(time.time()),
                model=MODEL,
                message=vf.AssistantMessage(content=parsed.content, tool_calls=calls or None),
                finish_reason="tool_calls" if calls else "stop",
            )
            stopped = None
            if session.response_interceptors or session.response_stops:
                response, rewrites, stopped = await session.rewrite_response(response)
                trace.response_rewrites.extend(rewrites)
            node = turn.commit(response)
            session.consume_prepared(turn.tail)
            trace.calls.append(ModelCall(node=node, model=MODEL, finish_reason=response.finish_reason))
            if stopped is None:
                stopped = await session.gate_tool_calls(node)
            if stopped is not None:
                trace.stop(stopped)
                return
            conversation = [*request.messages, response.message]
            self.seen = len(conversation)
            if not response.message.tool_calls:
                return
            gated = bool(session.request_interceptors or session.request_stops)
            for call in response.message.tool_calls:
                if gated:  # verifiers' tool gate: a request hook may deny a call or stop the rollout
                    decision = await session.decide_tool(call.id, call.name, json.loads(call.arguments))
                    if decision["action"] == "stop":
                        return
                    if decision["action"] == "deny":
                        conversation.append(parse_message(decision["message"]))
                        continue
                content, error = await self.tools.call(call.name, call.arguments, trace.state)
                self.owner.bridge.flag(tool_calls=[call.name])
                if error is not None:
                    self.owner.bridge.flag(invalid_action=True, tool_error=error)
                conversation.append(vf.ToolMessage(tool_call_id=call.id, content=content, name=call.name))

    async def close(self) -> vf.Trace:
        """Finalize and score (skipped after a failure; a stopped run scores its partial trace)."""
        if self.closed:
            return self.trace
        self.closed = True
        try:
            if not self.failed:
                async with boundary(TaskError, "task finalize"):
                    await invoke(self.task.finalize, {"trace": self.trace, "runtime": None})
                await self.task.score(self.trace, None)  # runtime-dependent rewards are skipped, as offline
        except Exception as exc:
            self.fail(exc)
            self.owner.bridge.flag(scoring_error=f"{type(exc).__name__}: {exc}")
        finally:
            await self.abort()
            self.trace.is_completed = True
            self.trace.ok = not self.failed
        return self.trace

    async def abort(self) -> None:
        self.closed = True
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server._exit_stack.aclose()


class _PolicyInteraction:
    """``vf.Interaction``'s ``turn``/``trace`` surface over a ``_PolicyRollout``."""

    def __init__(self, rollout: _PolicyRollout) -> None:
        self._run = rollout
        self._started = False
        self._over = False

    @property
    def trace(self) -> vf.Trace:
        return self._run.trace

    async def turn(self, message: str | list[Any] | None = None) -> vf.Segment:
        if self._run.closed:
            raise RuntimeError("this interaction is closed")
        if self._over:
            raise RuntimeError("the exchange is over (the run ended); read interaction.trace")
        prompted = not self._started and self.trace.task.data.prompt is not None
        if message is None and not prompted:
            raise ValueError("a bare turn() takes a prompted task's opening reply")
        if message is not None and prompted:
            raise ValueError("the task's prompt opens this exchange: take its first reply with a bare turn()")
        messages = None
        if isinstance(message, str):
            messages = [vf.UserMessage(content=message)]
        elif message is not None:
            messages = [parse_message(m) if isinstance(m, dict) else m for m in message]
        self._started = True
        turns_before, nodes_before = self.trace.num_turns, len(self.trace.nodes)
        await self._run.segment(messages)
        if self.trace.num_turns > turns_before:
            out: list[Any] = []
            for node in self.trace.nodes[nodes_before:]:
                if node.sampled or (out and isinstance(node.message, vf.ToolMessage)):
                    out.append(node.message)
            return vf.Segment(messages=out, root_reply=self.trace.root_reply)
        self._over = True
        return vf.Segment(messages=[], terminated=True)

    async def send(self, *args: Any, **kwargs: Any) -> dict:
        raise NotImplementedError("steering/queued sends are not supported by the clew adapter")

    steer = send


class _PolicyAgent:
    """A role played by clew's policy: ``vf.Agent``'s ``run``/``interaction``/``trainable`` surface."""

    def __init__(self, owner: Episode, name: str, config: vf.AgentConfig) -> None:
        self.owner, self.name, self.config = owner, name, config
        self.trainable = True

    async def run(self, task: vf.Task, **_: Any) -> vf.Trace:
        rollout = self.owner.start_rollout(task, self, has_user=False)
        try:
            await rollout.open()
            if rollout.ok:
                await rollout.segment(None)
                if rollout.ok:
                    rollout.trace.stop("agent_completed")
            return await rollout.close()
        except BaseException:
            await rollout.abort()
            raise

    @contextlib.asynccontextmanager
    async def interaction(self, task: vf.Task, **_: Any) -> AsyncIterator[_PolicyInteraction]:
        rollout = self.owner.start_rollout(task, self, has_user=True)
        await rollout.open()
        if rollout.failure is not None:  # as vf.Agent.interaction: a failed open raises before the context
            await rollout.close()
            raise rollout.failure
        interaction = _PolicyInteraction(rollout)
        try:
            yield interaction
        except Exception as exc:
            rollout.fail(exc)
            raise
        except BaseException:
            await rollout.abort()
            raise
        finally:
            if not rollout.closed:
                if rollout.ok:
                    rollout.trace.stop("user_closed")
                await rollout.close()


class _Agents:
    """``vf.Agents``: the env config's roles by attribute."""

    def __init__(self, agents: dict[str, _PolicyAgent]) -> None:
        self._agents = agents

    def __getattr__(self, name: str) -> _PolicyAgent:
        agents = self.__dict__.get("_agents") or {}
        if name not in agents:
            raise AttributeError(f"no agent {name!r}; this config declares {sorted(agents)}")
        return agents[name]


class Episode:
    """One episode of a ``vf.Env`` on one task, played by the policy."""

    def __init__(self, env: vf.Env, bridge: Bridge, shared_servers: list[Any]) -> None:
        self.env, self.bridge, self.shared_servers = env, bridge, shared_servers
        self.rollout: _PolicyRollout | None = None
        self.episode: vf.Episode | None = None

    def start_rollout(self, task: vf.Task, agent: _PolicyAgent, has_user: bool) -> _PolicyRollout:
        if self.rollout is not None:
            raise NotImplementedError("envs that run more than one policy rollout per episode are not supported")
        self.rollout = _PolicyRollout(self, task, agent, has_user)
        assert self.episode is not None
        self.episode.traces.append(self.rollout.trace)
        return self.rollout

    async def policy_turn(self, rollout: _PolicyRollout, observation: str) -> str | None:
        agent = rollout.trace.agent
        if not agent.trainable:
            raise NotImplementedError(f"role {agent.name!r} is a fixed partner model; the policy cannot play it")
        return await self.bridge.ask(observation)

    async def play(self, task: vf.Task) -> vf.Episode:
        env = self.env
        self.episode = vf.Episode(
            env=vf.EnvInfo(id=env.config.env_id),
            task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
        )
        specs = agent_config_fields(env.config)
        agents = _Agents(
            {
                name: _PolicyAgent(self, name, resolve_agent(spec, model=MODEL, harness=env._agent_harness(spec)))
                for name, spec in specs.items()
            }
        )
        await env.setup(agents)
        await env.run(task, agents)
        if self.rollout is None:
            raise ValueError(f"{type(env).__name__}.run() ran no agent")
        await env.finalize(task, self.episode)
        self.episode.ok = all(t.ok for t in self.episode.traces)
        return self.episode
