"""Sample text from the built-in envs (observations and expert actions), e.g. to train a tokenizer."""

from __future__ import annotations

from typing import Any

from clew.envs.registry import make

DEFAULT_SPECS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("keydoor-v0", {"width": 6, "height": 6}),
    ("keydoor-v0", {"width": 12, "height": 12}),
    ("bifurcation-v0", {"branches": 4}),
    ("toolcalc-v0", {}),
)


def sample_texts(
    episodes_per_env: int = 120, specs: tuple[tuple[str, dict[str, Any]], ...] = DEFAULT_SPECS
) -> list[str]:
    """Deterministic text: numbers 0-999, then every observation and expert action of the episodes."""
    texts = [str(i) for i in range(1000)]
    for env_id, kwargs in specs:
        for seed in range(episodes_per_env):
            texts.extend(_expert_texts(env_id, kwargs, seed))
    return texts


def _expert_texts(env_id: str, kwargs: dict[str, Any], seed: int) -> list[str]:
    env = make(env_id, **kwargs)
    out = [env.reset(seed)]
    for _ in range(200):
        action = env.expert_action()  # type: ignore[attr-defined]
        result = env.step(action)
        out += [action, result.observation]
        if result.terminated or result.truncated:
            break
    return out
