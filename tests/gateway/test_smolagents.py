"""A smolagents ``ToolCallingAgent`` (sync, with stop sequences) runs through the gateway unmodified but for its
model's base URL and key; the scripted engine double fixes what the model says."""

from __future__ import annotations

import pytest

from clew.gateway import Gateway, GatewayConfig
from clew.policy import HFPolicy
from tests.gateway.test_tools import CALL_TEXT, Scripted

smolagents = pytest.importorskip("smolagents", reason="smolagents: pip install smolagents")

FINAL = '<tool_call>\n{"name": "final_answer", "arguments": {"answer": "5"}}\n</tool_call>'


def test_a_smolagents_agent_calls_its_tool_through_the_gateway(tiny_policy: HFPolicy) -> None:
    calls: list[tuple[float, float]] = []

    @smolagents.tool
    def add(a: float, b: float) -> float:
        """Add two numbers.

        Args:
            a: the first number
            b: the second number
        """
        calls.append((a, b))
        return a + b

    engine = Scripted(tiny_policy.tokenizer, [CALL_TEXT, FINAL])
    with Gateway(engine, tiny_policy.tokenizer, GatewayConfig(open_on_demand=True)) as gateway:
        model = smolagents.OpenAIServerModel(model_id="clew", api_base=gateway.base_url("smol"), api_key="unused")
        agent = smolagents.ToolCallingAgent(tools=[add], model=model, max_steps=3, verbosity_level=0)
        answer = agent.run("What is 2 + 3?")
        episode = gateway.close_session("smol", outcome=1.0)
    assert calls == [(2, 3)] and str(answer) == "5"
    assert [t.info["tool_calls"] for t in episode.turns] == [1, 1]
    assert "Observation:\n5" in tiny_policy.tokenizer.decode(engine.prompts[1])  # smolagents' own history format
    # smolagents writes its past tool calls back as its own text ("Calling tools: ..."), not as sampled: the
    # second prompt does not extend the first, and the gateway says so (a new segment, trained apart)
    assert [t.info["segment_start"] for t in episode.turns] == [True, True]
