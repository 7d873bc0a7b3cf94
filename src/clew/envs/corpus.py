"""Sample text from envs (observations and expert or valid actions), e.g. to train a tokenizer."""

from __future__ import annotations

import random
from typing import Any

from clew.envs.base import Closeable, Env, HasExpert, HasValidActions
from clew.envs.registry import make

DEFAULT_SPECS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("keydoor-v0", {"width": 6, "height": 6}),
    ("keydoor-v0", {"width": 12, "height": 12}),
    ("bifurcation-v0", {"branches": 4}),
    ("toolcalc-v0", {}),
)
ENV_EPISODES = 32  # seeded episodes of a run's env added to the built-in text
ENV_MAX_STEPS = 50  # steps per such episode: enough for its vocabulary, cheap for a slow env


def sample_texts(
    episodes_per_env: int = 120,
    specs: tuple[tuple[str, dict[str, Any]], ...] = DEFAULT_SPECS,
    *,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    env_episodes: int = ENV_EPISODES,
) -> list[str]:
    """Deterministic text: numbers 0-999, then every observation and expert action of the episodes.

    ``env_id`` (a run's env) adds ``env_episodes`` seeded episodes of that env, played on one
    instance, so that its words do not cost many tokens each. It plays the expert, else a seeded
    random valid action, else takes only the first observations. An env already in ``specs``
    adds nothing, so runs on the built-in envs keep their tokenizer.
    """
    texts = [str(i) for i in range(1000)]
    for spec_id, kwargs in specs:
        for seed in range(episodes_per_env):
            texts.extend(_episode_texts(make(spec_id, **kwargs), seed, max_steps=200))
    if env_id is not None and env_id not in {spec_id for spec_id, _ in specs}:
        env = make(env_id, **(env_kwargs or {}))
        try:
            for seed in range(env_episodes):
                texts.extend(_episode_texts(env, seed, ENV_MAX_STEPS))
        finally:
            if isinstance(env, Closeable):
                env.close()
    return texts


def _episode_texts(env: Env, seed: int, max_steps: int) -> list[str]:
    """One episode's text; an env that raises midway keeps the text gathered so far."""
    rng = random.Random(seed)
    out: list[str] = []
    try:
        out.append(env.reset(seed))
        for _ in range(max_steps):
            action = _next_action(env, rng)
            if action is None:
                break
            result = env.step(action)
            out += [action, result.observation]
            if result.terminated or result.truncated:
                break
    except Exception:  # a run's env shows its failures in the rollouts, not in the tokenizer
        pass
    return out


def _next_action(env: Env, rng: random.Random) -> str | None:
    if isinstance(env, HasExpert):
        return str(env.expert_action())
    if isinstance(env, HasValidActions) and (valid := env.valid_actions()):
        return str(rng.choice(valid))
    return None
