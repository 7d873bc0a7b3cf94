"""A search agent of one's own (``examples/search_agent.py``: the OpenAI client, clew's search tools) runs through
the gateway: its expert, recorded as SFT demonstrations are, answers every 2-hop question with five calls."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("openai", reason="a harness gets an openai.AsyncOpenAI client: pip install openai")
pytest.importorskip("bm25s")

from clew.gateway import Gateway, GatewayConfig
from clew.gateway.expert import ExpertEngine
from clew.gateway.harness import Harness, entry
from clew.policy.hf import HFPolicy
from clew.policy.models import materialize
from clew.rollout import Task

AGENT = Path(__file__).parents[2] / "examples" / "search_agent.py"


def test_the_search_agents_expert_through_the_gateway() -> None:
    tokenizer = HFPolicy.from_pretrained(materialize("smollm2-135m-instruct")).tokenizer
    harness = Harness(f"{AGENT}:run", f"{AGENT}:tasks", timeout_s=60.0)
    expert = ExpertEngine(entry(f"{AGENT}:expert", "harness expert"), tokenizer)
    with Gateway(expert, tokenizer, GatewayConfig(max_tokens=1 << 20)) as gateway:
        groups = harness.collect(gateway, [Task("harness", seed, {}) for seed in range(4)], 1, 0)
    episodes = [e for g in groups for e in g.episodes]
    assert all(e.error is None and e.outcome == 1.0 for e in episodes), [e.error for e in episodes]
    assert all(len(e.turns) == 5 for e in episodes)  # search, open, search, open, answer
