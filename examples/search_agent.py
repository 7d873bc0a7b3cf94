"""A search agent of your own, trained through clew's gateway: the OpenAI client, a plain tool-calling loop and
clew's search tools (``clew.tools.search``: BM25 ``search`` and ``open``) over the generated multi-hop corpus.

- ``tasks(seed)``: a 2-hop question of the 1,000-document corpus ("In which country was P born?");
- ``run(task, client)``: up to ``MAX_CALLS`` model calls; each tool call is answered by ``SearchTools`` and sent
  back as a ``tool`` message; the first reply without a tool call is the answer, rewarded 1 on an exact match
  (SQuAD's normalisation);
- ``expert(prompt_text)``: the gold path read off the prompt (search the person, open their page, search their
  city of birth, open it, answer its country), in the gateway's ``<tool_call>`` format (``harness.expert``: SFT
  demonstrations recorded through the gateway).

Run it with ``harness: {run: examples/search_agent.py:run, tasks: examples/search_agent.py:tasks, expert:
examples/search_agent.py:expert}`` in a config (as ``configs/smollm2-agents-calc.yaml`` runs its agent).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from clew.envs.library.search import normalise
from clew.envs.library.search_corpus import synthetic_corpus
from clew.tools.search import SearchIndex, SearchTools

MAX_CALLS = 6
SYSTEM = "Answer the question. Use the search and open tools to find facts; reply with the answer only."
_QUESTION = re.compile(r"In which country was (.+?) born\?")
_HIT = re.compile(r"^\[(d\d+)\] ([^:]+):", re.MULTILINE)
_RESPONSE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.DOTALL)


@lru_cache(maxsize=1)
def tools() -> SearchTools:
    return SearchTools(SearchIndex(synthetic_corpus(1000, 0).docs))


def tasks(seed: int) -> dict[str, str]:
    question = synthetic_corpus(1000, 0).question(seed, 2)
    return {"question": question.text, "answer": question.answer}


async def run(task: dict[str, str], client: Any) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                      {"role": "user", "content": task["question"]}]  # fmt: skip
    for _ in range(MAX_CALLS):
        response = await client.chat.completions.create(model="clew", messages=messages, tools=tools().schemas())
        reply = response.choices[0].message
        if not reply.tool_calls:
            right = normalise(reply.content or "") == normalise(task["answer"])
            return {"reward": float(right), "success": right, "answer": (reply.content or "")[:80]}
        calls = [c.model_dump() for c in reply.tool_calls]
        messages.append({"role": "assistant", "content": reply.content or "", "tool_calls": calls})
        for call in reply.tool_calls:
            result = await tools().acall(call.function.name, call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result.text})
    return {"reward": 0.0, "success": False, "answer": ""}


def expert(prompt_text: str) -> str:
    """The next step of the gold path, read off the prompt (its question and the tool responses so far)."""
    person = _QUESTION.findall(prompt_text)[-1]
    responses = _RESPONSE.findall(prompt_text)
    if not responses:
        return _call("search", query=person)
    last = responses[-1]
    hits = _HIT.findall(last)
    if hits and last.startswith("Results for"):
        target = person if len(responses) == 1 else re.findall(r"was born in ([^.]+)\.", responses[-2])[-1]
        doc = next((i for i, title in hits if title == target), hits[0][0])
        return _call("open", doc_id=doc)
    born = re.findall(r"was born in ([^.]+)\.", last)
    if born:
        return _call("search", query=born[-1])
    country = re.findall(r"is a city in ([^.]+)\.", last)
    return country[-1] if country else "unknown"


def _call(name: str, **arguments: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"
