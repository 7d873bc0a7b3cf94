"""A smolagents agent trained through clew's gateway: the framework's ``ToolCallingAgent`` with a ``multiply``
tool, changed from its upstream example only in the model's client configuration (the session's base URL, a
dummy key, a completion budget). smolagents is synchronous, so the harness runs it in a thread. The task is
A x B with three-digit numbers: the agent must call ``multiply``, then ``final_answer`` with the product.
Reward 1 when the answer equals the product.

- ``run(task, client)``: the harness (``harness.run``);
- ``tasks(seed)``: the task of a seed (``harness.tasks``);
- ``expert(prompt_text)``: the next call an expert makes, in the gateway's ``<tool_call>`` format, read from
  the question and the observations already in the prompt (``harness.expert``, for the SFT warm start).

Used by ``configs/smollm2-smolagents-multiply.yaml`` and by the end-to-end test on the tiny model.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Any

from smolagents import OpenAIServerModel, ToolCallingAgent, tool

_QUESTION = re.compile(r"What is (\d+) times (\d+)\?")
_OBSERVED = re.compile(r"Observation:\s*(-?\d+)")


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: the first factor
        b: the second factor
    """
    return a * b


def tasks(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    return {"a": rng.randint(100, 999), "b": rng.randint(100, 999)}


def solve(task: dict[str, int], base_url: str) -> Any:
    model = OpenAIServerModel(model_id="clew", api_base=base_url, api_key="unused", max_tokens=64)
    agent = ToolCallingAgent(tools=[multiply], model=model, max_steps=3, verbosity_level=0)
    return agent.run(f"What is {task['a']} times {task['b']}? Use the multiply tool.")


async def run(task: dict[str, int], client: Any) -> float:
    answer = await asyncio.to_thread(solve, task, str(client.base_url))
    return float(str(answer).strip() == str(task["a"] * task["b"]))


def expert(prompt_text: str) -> str:
    question = list(_QUESTION.finditer(prompt_text))[-1]  # the task; the system prompt's examples come before it
    observed = _OBSERVED.findall(prompt_text[question.end() :])
    if observed:
        return _call("final_answer", {"answer": int(observed[-1])})
    return _call("multiply", {"a": int(question[1]), "b": int(question[2])})


def _call(name: str, arguments: dict[str, int]) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"
