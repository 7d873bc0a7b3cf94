"""SmolLM2-135M-Instruct as the local judge (the default judge, offline): rendered by its own chat template, the
reply continuing ``SCORE:``, parsed; the same content judged twice costs one generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from clew.policy.models import materialize
from clew.rewards import prompts
from clew.rewards.parse import parse_score
from clew.rewards.service import JudgeService
from clew.rewards.sources import JudgeParams, parse_params
from clew.trainer.judging import SCORE_PREFIX, build_backend
from clew.types import Episode, Turn

NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smol() -> Path:
    return materialize(NAME)


def test_smollm2_judges_in_the_format(smol: Path) -> None:
    params = parse_params("judge", {"model": NAME, "reference": True, "max_tokens": 3})
    assert isinstance(params, JudgeParams)
    backend = build_backend(params)
    episode = Episode("t", 0, 0, [Turn([1], [2], [-1.0], "Paris")], first_observation="Capital of France?",
                      gold_reply="Paris")  # fmt: skip
    text = prompts.transcript(episode, reference=True)
    msgs = prompts.pointwise(params.rubric, text, params.scale, backend.context_tokens, params.max_tokens,
                             backend.count, backend.special_tokens)  # fmt: skip
    assert "<|im_start|>system" in backend.tokenizer.decode(backend.render(msgs))  # its own template, a system turn
    service = JudgeService(backend, max_tokens=3)

    def parse(reply: str) -> list[float] | None:
        score = parse_score(reply, params.scale)
        return None if score is None else [score]

    first = service.results([service.submit("judge", msgs, parse, 0, SCORE_PREFIX)])[0]
    again = service.results([service.submit("judge", msgs, parse, 0, SCORE_PREFIX)])[0]
    service.close()
    assert first.reply.startswith(SCORE_PREFIX) and first.scores is not None and 0 <= first.scores[0] <= 1
    assert again.cached and again.scores == first.scores and service.stats.calls == 1
