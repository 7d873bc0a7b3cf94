"""A hand-written agent loop, as a user would write it against any OpenAI-compatible endpoint (the harness
contract of ``clew.gateway.harness``): two calls per episode, the reward whether the last reply says the word.
``tasks(seed)`` gives the task; a task with ``fail`` raises, one with ``hang`` never returns (typed failures);
``expert`` writes the demonstrations for an SFT warm start."""

from __future__ import annotations

import asyncio
import random
from typing import Any

WORDS = ["up", "down", "left", "right"]


def tasks(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    return {"word": rng.choice(WORDS), "fail": False, "hang": False}


def flaky_tasks(seed: int) -> dict[str, Any]:
    return {**tasks(seed), "fail": seed % 3 == 0, "hang": seed % 3 == 1}


def expert(prompt_text: str) -> str:
    """The reply an expert writes: the word the last "Say the word X." asks for."""
    return prompt_text.rsplit("Say the word ", 1)[1].split(".", 1)[0]


async def run(task: dict[str, Any], client: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"Say the word {task['word']}."}]
    text = ""
    for _ in range(2):
        reply = await client.chat.completions.create(model="policy", messages=messages, max_tokens=3)
        text = reply.choices[0].message.content or ""
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "Once more."}]
        if task["fail"]:
            raise RuntimeError("the agent's parser choked")
        if task["hang"]:
            await asyncio.sleep(3600)
    said = task["word"] in text
    if task.get("miscount"):  # per-call rewards for one call of two: the harness's own mistake
        return {"reward": float(said), "rewards": [1.0]}
    return {"reward": float(said), "success": said, "said": text}


def miscounting_tasks(seed: int) -> dict[str, Any]:
    return {**tasks(seed), "miscount": True}
