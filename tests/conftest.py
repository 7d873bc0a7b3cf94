"""Shared fixtures: one tiny model built in-process per test session (no downloads)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

torch.set_num_threads(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.gpu`` tests need CUDA; CPU machines (and CI) skip them."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clew.envs.corpus import sample_texts
    from clew.policy import TinyModelConfig, build_tiny

    cfg = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2)
    return build_tiny(tmp_path_factory.mktemp("tiny"), sample_texts(), cfg)


@pytest.fixture(scope="session")
def tiny_policy(tiny_dir: Path):  # type: ignore[no-untyped-def]
    from clew.policy import HFPolicy

    return HFPolicy.from_pretrained(tiny_dir)


@pytest.fixture(scope="session")
def tiny_engine(tiny_policy):  # type: ignore[no-untyped-def]
    from clew.policy import make_engine

    return make_engine("hf", tiny_policy.model, tokenizer=tiny_policy.tokenizer)


@pytest.fixture()
def lab_plugin() -> Iterator[ModuleType]:
    """``tests/e2e/lab_plugin.py`` loaded in this process; its registry entries leave with the test."""
    from clew import plugins
    from clew.credit import base as credit_base
    from clew.envs import registry as env_registry
    from clew.policy import base as engine_base
    from clew.rollout.context import CONTEXTS

    saved = [(d, dict(d)) for d in (engine_base.ENGINES._specs, CONTEXTS._specs, credit_base.ESTIMATORS._specs,
                                     env_registry.FAMILIES._specs, plugins._LOADED)]  # fmt: skip
    yield plugins.load_plugin(str(Path(__file__).parent / "e2e" / "lab_plugin.py"))
    for registry, before in saved:
        registry.clear()
        registry.update(before)  # type: ignore[attr-defined]
