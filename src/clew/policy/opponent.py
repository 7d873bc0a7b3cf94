"""A model as the other seat of a game: an engine, injected, decoding greedily under the policy's chat framing.

``EngineOpponent(engine, tokenizer, chat)`` plays with any clew engine (``hf``, ``vllm``, a plug-in's): the
observation becomes the first user message of a chat, framed exactly as a clew policy sees its first turn
(``ChatFormat.first_segment``), the reply is decoded greedily up to ``max_new_tokens``, and its text is the
move. It satisfies the env layer's ``Opponent`` protocol (``act(observation, seed) -> str``), so an env never
loads a model itself: whoever builds the env injects the opponent.

``model_opponent(path)`` is what a config's ``opponent: <model directory>`` resolves to (the TextArena adapter
finds it by its entry point, ``MODEL_OPPONENT``, the mechanism envs and plug-ins are found by): the model and
its engine are loaded once per process and shared by every env that names the same directory and engine, so an
env built per episode does not reload the model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clew.policy.base import Engine, SamplingParams, engine_spec, make_engine
from clew.policy.chat import ChatFormat
from clew.policy.hf import HFPolicy


@dataclass
class EngineOpponent:
    """Greedy moves from ``engine``; ``tokenizer`` and ``chat`` frame the observation and decode the reply."""

    engine: Engine
    tokenizer: Any
    chat: ChatFormat
    max_new_tokens: int = 16

    def act(self, observation: str, seed: int) -> str:
        prompt = self.chat.first_segment(self.tokenizer, observation)
        params = SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens, stop_token_ids=(self.chat.eos_id,))
        completion = self.engine.generate([prompt], params, [seed])[0]
        return str(self.tokenizer.decode(completion.token_ids, skip_special_tokens=True)).strip()


def model_opponent(path: str | Path, max_new_tokens: int = 16, engine: str = "hf") -> EngineOpponent:
    """The model at ``path`` (a clew checkpoint, whose ``policy/`` it reads, or an HF model directory) on the
    registered engine ``engine``, loaded once per process."""
    root = Path(path).expanduser()
    model_dir = root / "policy" if (root / "policy" / "config.json").is_file() else root
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"opponent {str(path)!r} is not a model directory (no config.json or policy/config.json)")
    served, tokenizer, chat = _load(str(model_dir.resolve()), engine)
    return EngineOpponent(served, tokenizer, chat, max_new_tokens)


@functools.cache
def _load(model_dir: str, engine: str) -> tuple[Engine, Any, ChatFormat]:
    policy = HFPolicy.from_pretrained(model_dir)
    if engine_spec(engine).shares_learner_weights:  # it samples from the model object just loaded
        return make_engine(engine, policy.model, tokenizer=policy.tokenizer), policy.tokenizer, policy.chat
    return make_engine(engine, model_dir), policy.tokenizer, policy.chat
