"""A smolagents agent as a clew harness: the framework's ``ToolCallingAgent`` with a calculator tool, changed
from its upstream example only in the model's client configuration (the session's base URL and a dummy key).
smolagents is synchronous, so the harness runs it in a thread. Reward: the answer equals the product."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from smolagents import OpenAIServerModel, ToolCallingAgent, tool


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
    model = OpenAIServerModel(model_id="clew", api_base=base_url, api_key="unused", max_tokens=16)
    agent = ToolCallingAgent(tools=[multiply], model=model, max_steps=2, verbosity_level=0)
    return agent.run(f"What is {task['a']} times {task['b']}? Use the multiply tool.")


async def run(task: dict[str, int], client: Any) -> float:
    answer = await asyncio.to_thread(solve, task, str(client.base_url))
    return float(str(answer).strip() == str(task["a"] * task["b"]))
