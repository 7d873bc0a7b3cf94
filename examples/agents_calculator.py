"""An OpenAI Agents SDK agent trained through clew's gateway: (A x B) + C with two function tools.

The agent is the SDK's own ``Agent`` with ``function_tool``s, run by ``Runner.run``; the only clew-specific
lines set its model client (the session's base URL, a dummy key) and turn tracing off. Three-digit factors
make the product out of reach of a 135 M model's arithmetic: it must call ``multiply``, then ``add``, then
answer with the number. Reward 1 when the final answer is exactly (A x B) + C.

- ``run(task, client)``: the harness (``harness.run``);
- ``tasks(seed)``: the task of a seed (``harness.tasks``);
- ``expert(prompt_text)``: what an expert replies to a prompt (``harness.expert``, for the SFT warm start):
  it reads the question and the tool results already in the prompt and writes the next tool call, in the
  gateway's ``<tool_call>`` format, or the final number.

Used by ``configs/smollm2-agents-calc.yaml``.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled

INSTRUCTIONS = "Use the tools for arithmetic. When you have the result, reply with the number only."
_QUESTION = re.compile(r"What is (\d+) times (\d+), plus (\d+)\?")
_RESULT = re.compile(r"<tool_response>\s*(-?[\d.]+)\s*</tool_response>")


@function_tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@function_tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def tasks(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    return {"a": rng.randint(100, 999), "b": rng.randint(100, 999), "c": rng.randint(100, 999)}


async def run(task: dict[str, int], client: Any) -> dict[str, Any]:
    set_tracing_disabled(True)
    model = OpenAIChatCompletionsModel(model="clew", openai_client=client)
    agent = Agent(name="calculator", instructions=INSTRUCTIONS, tools=[multiply, add], model=model)
    result = await Runner.run(agent, f"What is {task['a']} times {task['b']}, plus {task['c']}?", max_turns=5)
    answer = str(result.final_output).strip()
    right = answer == str(task["a"] * task["b"] + task["c"])
    return {"reward": float(right), "success": right, "answer": answer[:80]}


def expert(prompt_text: str) -> str:
    a, b, c = (int(x) for x in _QUESTION.findall(prompt_text)[-1])
    results = [int(float(r)) for r in _RESULT.findall(prompt_text)]
    if not results:
        return _call("multiply", a, b)
    if len(results) == 1:
        return _call("add", results[0], c)
    return str(results[-1])


def _call(name: str, a: int, b: int) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": {"a": a, "b": b}}) + "\n</tool_call>"
