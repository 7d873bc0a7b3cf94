"""A lab's own clew extensions in one file, outside the package: an engine, a context strategy, a credit
estimator and an env family, each registered where it is defined.

Load it in a run config (``plugins: [tests/e2e/lab_plugin.py]``) or on the command line
(``clew --plugin tests/e2e/lab_plugin.py eval ...``); see ``clew.plugins``. ``USED`` records which entries
ran, for the test that drives it through the CLI.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from clew.credit import Credit, CreditInput
from clew.credit import register as register_estimator
from clew.envs import StepResult, register_family
from clew.policy import Completion, EngineSpec, SamplingParams, register_engine
from clew.rollout import Framing, History, WindowContext, register_context

USED: set[str] = set()
WAYS = ["up", "down", "left", "right"]


# --- an engine: transformers generate() on the learner's model, counting its calls -------------------
class CountingEngine:
    def __init__(self, model: Any, tokenizer: Any = None) -> None:
        from clew.policy.hf import HFEngine

        self.inner = HFEngine(model, tokenizer=tokenizer)
        self.max_model_len, self.continuous_batching, self.calls = self.inner.max_model_len, False, 0

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]:
        USED.add("engine")
        self.calls += 1
        return self.inner.generate(prompts, params, seeds)

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        self.inner.load_weights(named_tensors)

    def close(self) -> None:
        self.inner.close()


register_engine(
    EngineSpec(
        "lab-hf", f"{__name__}:CountingEngine", "transformers generate(), counted",
        shares_learner_weights=True, reports_entropies=True, exact_under_top_p=True,
    )
)  # fmt: skip


# --- a context strategy: the last `turns` exchanges, as window does -----------------------------------
class LabWindow(WindowContext):
    name: str = "lab-window"

    def build(self, history: History, framing: Framing) -> list[int]:
        USED.add("context")
        return super().build(history, framing)


def lab_window(*, turns: int = 0) -> LabWindow:
    return LabWindow(turns)


register_context("lab-window", lab_window, "the last `turns` exchanges (a plug-in)")


# --- a credit estimator: the sign of the outcome against its group's mean -----------------------------
@register_estimator("lab-sign", needs_group=True, summary="sign(outcome - group mean), per turn (a plug-in)")
def lab_sign(inp: CreditInput, *, margin: float = 0.0) -> Credit:
    USED.add("estimator")
    groups = np.unique(inp.group, return_inverse=True)[1]
    means = np.bincount(groups, weights=inp.outcome) / np.bincount(groups)
    gap = inp.outcome - means[groups]
    return Credit(np.where(np.abs(gap) > margin, np.sign(gap), 0.0), inp.outcome.copy())


# --- an env family: lab/<name>, follow the arrow `steps` times --------------------------------------
class ArrowEnv:
    def __init__(self, name: str, steps: int = 2) -> None:
        self.name, self.steps = name, steps

    def reset(self, seed: int) -> str:
        USED.add("env")
        self.rng, self.left, self.right = random.Random(seed), self.steps, 0
        return self._show()

    def step(self, action: str) -> StepResult:
        self.right += action.strip() == self.way
        self.left -= 1
        done = self.left == 0
        outcome = float(self.right == self.steps) if done else 0.0
        return StepResult("Done." if done else self._show(), outcome, done, False, {"success": outcome == 1.0})

    def valid_actions(self) -> list[str]:
        return list(WAYS)

    def expert_action(self) -> str:
        return self.way

    def _show(self) -> str:
        self.way = self.rng.choice(WAYS)
        return f"The key is {self.way}."


register_family("lab", f"{__name__}:ArrowEnv", extra="lab", requires="numpy", description="a plug-in family",
                examples=("arrow",))  # fmt: skip
