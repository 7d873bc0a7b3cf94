"""An unmodified OpenAI Agents SDK agent with a function tool runs through the gateway: only its client is
configured (base URL, key, tracing off), and every model call is a recorded turn. The engine is the scripted
test double of ``test_tools`` (what it samples is fixed, so the agent's path can be checked exactly)."""

from __future__ import annotations

import asyncio

import pytest

from clew.gateway import Gateway, GatewayConfig
from clew.policy import HFPolicy
from tests.gateway.test_tools import CALL_TEXT, Scripted

agents = pytest.importorskip("agents", reason="the OpenAI Agents SDK: pip install openai-agents")
openai = pytest.importorskip("openai")


def test_an_agents_sdk_agent_calls_its_tool_through_the_gateway(tiny_policy: HFPolicy) -> None:
    calls: list[tuple[float, float]] = []

    @agents.function_tool
    def add(a: float, b: float) -> float:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    engine = Scripted(tiny_policy.tokenizer, [CALL_TEXT, "The sum is 5."])
    with Gateway(engine, tiny_policy.tokenizer, GatewayConfig(open_on_demand=True)) as gateway:
        # the only change to the SDK's own example: its client points at the gateway, tracing off
        client = openai.AsyncOpenAI(base_url=gateway.base_url("agent"), api_key="unused", max_retries=0)
        agents.set_tracing_disabled(True)
        model = agents.OpenAIResponsesModel(model="clew", openai_client=client)
        agent = agents.Agent(name="calculator", instructions="Use the add tool.", tools=[add], model=model)
        result = asyncio.run(agents.Runner.run(agent, "What is 2 + 3?"))
        episode = gateway.close_session("agent", outcome=1.0)
    assert calls == [(2, 3)] and result.final_output == "The sum is 5."
    assert len(episode.turns) == 2 and episode.turns[0].info["tool_calls"] == 1
    shown = tiny_policy.tokenizer.decode(engine.prompts[1])
    assert "Use the add tool." in shown and "<tool_response>\n5" in shown  # the tool's result reached the model


def test_a_streamed_agents_sdk_run_goes_through_the_gateway(tiny_policy: HFPolicy) -> None:
    @agents.function_tool
    def add(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    engine = Scripted(tiny_policy.tokenizer, [CALL_TEXT, "The sum is 5."])

    async def streamed(agent: object) -> object:
        result = agents.Runner.run_streamed(agent, "What is 2 + 3?")
        async for _ in result.stream_events():
            pass
        return result

    with Gateway(engine, tiny_policy.tokenizer, GatewayConfig(open_on_demand=True)) as gateway:
        client = openai.AsyncOpenAI(base_url=gateway.base_url("stream"), api_key="unused", max_retries=0)
        agents.set_tracing_disabled(True)
        model = agents.OpenAIResponsesModel(model="clew", openai_client=client)
        agent = agents.Agent(name="calculator", instructions="Use the add tool.", tools=[add], model=model)
        result = asyncio.run(streamed(agent))
        episode = gateway.close_session("stream", outcome=1.0)
    assert result.final_output == "The sum is 5." and len(episode.turns) == 2  # type: ignore[attr-defined]
