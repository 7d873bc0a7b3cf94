"""The credit contract: columnar ``CreditInput`` in, ``Credit`` out, estimators by name.

Shapes: ``N`` turn rows (all episodes of all groups, episode-contiguous, turns in order),
``K`` tokens (the action tokens of every row, addressed by ``token_offsets`` of shape ``N + 1``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from clew.credit.anchors import check_grouping_params
from clew.credit.inputs import CreditInput
from clew.registry import ParamRegistry, keyword_params

Array = np.ndarray


@dataclass(frozen=True)
class Credit:
    """What an estimator returns.

    Attributes:
        turn_advantage: (N,) advantage broadcast to every action token of the row.
        turn_return: (N,) the return the advantage was built from.
        token_advantage: (K,) per-token advantages (same offsets) or None.
        diagnostics: plain numbers, namespaced ``credit/...``.
        penalty_charged: the estimator put the rows' penalties into its own statistics
            (``penalty_placement="statistics"``), so ``compute`` charges nothing after it.
        anchor_group: (N,) int or None, the anchor-state group each row's step advantage was computed in
            (GiGPO; ids unique over the batch, -1: in no group); the store keeps it for the viewer.
        value, value_target: (K,) or None, the value head's V at each action token as the estimator read it,
            and its regression target there (GAE's returns A + V), for estimators that need values.
        clip_scale: (N,) or None, a factor on each row's clip range in the objective (A^2TGPO's adaptive
            turn-level clipping); None: the configured range everywhere.
    """

    turn_advantage: Array
    turn_return: Array
    token_advantage: Array | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    penalty_charged: bool = False
    anchor_group: Array | None = None
    value: Array | None = None
    value_target: Array | None = None
    clip_scale: Array | None = None


PENALTY_PLACEMENTS = ("advantage", "statistics")


def penalties_in_statistics(inp: CreditInput, placement: str) -> Array:
    """(N,) the penalties an estimator puts into its statistics: ``inp.penalty`` for ``"statistics"``, else 0.

    ``"advantage"`` (clew's default): ``compute`` subtracts a penalty from its own row's advantage after the
    estimator, so it never moves another row's advantage or a group baseline. ``"statistics"``: the estimator
    subtracts it from the scores its group statistics are built from (verl-agent's
    ``apply_invalid_action_penalty``; DAPO's overlong reward term), so the penalised episode also scores
    lower against its group and the penalty costs more than its coefficient.
    """
    check_choice("penalty_placement", placement, PENALTY_PLACEMENTS)
    if placement == "advantage" or inp.penalty is None:
        return np.zeros(inp.n_turns)
    return inp.penalty


Estimator = Callable[..., Credit]


@dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator and what it needs from the input; ``compute`` enforces the input needs.

    Attributes:
        needs_state_keys: anchor-state grouping. With ``state_grouping="exact"`` (the default) it reads the
            env's state keys and is refused when no row has one; ``"normalized"`` and ``"similarity"`` read
            the observation text (or ``state_vector``) instead, see ``clew.credit.anchors``.
        needs_tokens: per-token ids and offsets.
        needs_entropy: per-token entropies of the sampled tokens.
        needs_outcome: the env-reported outcome apart from the step rewards (``outcome_explicit``);
            episodes cut short before the env reported one are the estimator's to handle.
        needs_group: a group-relative baseline; enforced by the run config (``group_size >= 2``),
            since one batch cannot tell a group of one from a one-episode task.
        needs_values: the value head's V at every action token (``CreditInput.value``), computed by the trainer
            when the run has a critic (``critic.value_coef > 0``); the estimator returns ``value_target``.
        needs_greedy_baseline: the return of one greedy (temperature 0) rollout of each group's task
            (``CreditInput.baseline``), which the trainer plays before credit (ReMax).
        needs_gold_beliefs: the policy's belief in each episode's gold answer before every turn
            (``CreditInput.gold_logprob``), which the trainer computes for envs with ``HasGoldReply``.
        needs_counterfactual_gain: what each observation told the policy, against a placeholder observation
            (``CreditInput.counterfactual_gain``, InfoPO), scored by the trainer.
        needs_privileged_logratio: each action's log-likelihood ratio with and without the verified answer in
            the prompt (``CreditInput.privileged_logratio``, PBSD), scored by the trainer; needs ``HasGoldReply``.
        needs_outcome_modes: the group's final answers clustered into outcome modes, a target weight per mode and
            the policy's belief in its episode's mode before every turn (``mode_weight``, ``mode_logprob``, SIOP).
        needs_implicit_prm: an implicit process reward model the trainer trains online beside the policy and its
            score of every action against the old policy (``CreditInput.prm_logratio``, OPRL).
        needs_branch_values: Monte-Carlo values of states inside episodes, from rollouts the trainer branches by
            replaying each episode's seeded prefix (``CreditInput.branch_value``, SPO); needs an env to replay.
        needs_segments: which rows open a subgoal segment (``CreditInput.segment_start``, HiPER), marked by the
            trainer from the ``plan`` context's ``<subgoal>`` blocks.
        reference_param: the parameter that, when > 0, makes the estimator read the sampled tokens'
            log-probs under the KL reference (``ref_logprob``), e.g. REINFORCE++'s ``kl_coef``.
        clip_scale_param: the parameter that, when > 0, makes the estimator return ``Credit.clip_scale`` (a clip
            range per row), which only an objective with a per-token clip range can use.
    """

    name: str
    fn: Estimator
    needs_state_keys: bool = False
    needs_tokens: bool = False
    needs_entropy: bool = False
    needs_outcome: bool = False
    needs_group: bool = False
    needs_gold_beliefs: bool = False
    needs_values: bool = False
    needs_greedy_baseline: bool = False
    needs_counterfactual_gain: bool = False
    needs_privileged_logratio: bool = False
    needs_outcome_modes: bool = False
    needs_implicit_prm: bool = False
    needs_branch_values: bool = False
    needs_segments: bool = False
    reference_param: str | None = None
    clip_scale_param: str | None = None
    summary: str = ""

    @property
    def needs_gold_reply(self) -> bool:
        """Whether the env must know each task's gold reply (``clew.envs.HasGoldReply``)."""
        return self.needs_gold_beliefs or self.needs_privileged_logratio

    @property
    def scores_with_policy(self) -> bool:
        """Whether the trainer scores extra spans with the policy before credit (in the driver's learner)."""
        return (self.needs_gold_beliefs or self.needs_counterfactual_gain or self.needs_privileged_logratio
                or self.needs_outcome_modes or self.needs_implicit_prm)  # fmt: skip

    @property
    def params(self) -> dict[str, Any]:
        return keyword_params(self.fn)

    def needs_reference(self, params: dict[str, Any]) -> bool:
        """Whether these parameters make the estimator read ``ref_logprob``."""
        name = self.reference_param
        return name is not None and float(params.get(name, self.params.get(name, 0.0)) or 0.0) > 0

    def scales_clip(self, params: dict[str, Any]) -> bool:
        """Whether these parameters make the estimator set a clip range per row (``Credit.clip_scale``)."""
        name = self.clip_scale_param
        return name is not None and float(params.get(name, self.params.get(name, 0.0)) or 0.0) > 0

    def state_grouping(self, params: dict[str, Any]) -> str | None:
        """The anchor grouping these parameters pick (``"exact"`` unless set), or None without anchor groups."""
        return str(self._setting(params, "state_grouping", "exact")) if self.needs_state_keys else None

    def needs_env_state_keys(self, params: dict[str, Any]) -> bool:
        """Whether these parameters group turns by the env's ``state_key()`` (``state_grouping="exact"``)."""
        return self.state_grouping(params) == "exact"

    def needs_state_vectors(self, params: dict[str, Any]) -> bool:
        """Whether these parameters make the estimator read ``state_vector`` (similarity on hidden states)."""
        hidden = self._setting(params, "state_features", "tfidf") == "hidden"
        return self.state_grouping(params) == "similarity" and hidden

    def _setting(self, params: dict[str, Any], name: str, default: Any) -> Any:
        return params.get(name, self.params.get(name, default))


ESTIMATORS: ParamRegistry[EstimatorSpec] = ParamRegistry("credit estimator")


def register(name: str, **meta: Any) -> Callable[[Estimator], Estimator]:
    """Decorator: ``@register("grpo", needs_group=True, summary=...)``."""

    def wrap(fn: Estimator) -> Estimator:
        ESTIMATORS.add(EstimatorSpec(name, fn, **meta))
        return fn

    return wrap


def available() -> dict[str, EstimatorSpec]:
    """Every estimator by name, with its metadata and default parameters."""
    return ESTIMATORS.available()


def get(name: str) -> EstimatorSpec:
    return ESTIMATORS.get(name)


def check_params(name: str, params: dict[str, Any]) -> None:
    """Fail on parameters the estimator does not take, listing the valid ones, and on anchor-grouping values
    outside their choices (``clew.credit.anchors.check_grouping``)."""
    ESTIMATORS.check_params(name, params)
    check_grouping_params(params)


def compute(name: str, inp: CreditInput, **params: Any) -> Credit:
    """Run estimator ``name`` on ``inp``, then charge each row its ``penalty``.

    Unknown names or parameters fail with the valid ones; an input lacking what the estimator's
    metadata says it needs fails naming it. Penalties (invalid actions, overlong outputs) are
    subtracted from the penalised row's advantage only, after the returns are formed: undiscounted,
    never leaking into earlier turns, the episode outcome or the group baselines — unless the
    estimator took them into its statistics itself (``penalty_placement="statistics"`` of ``grpo``
    and ``gigpo``, see ``penalties_in_statistics``).
    """
    spec = get(name)
    check_params(name, params)
    check_inputs(spec, inp, params)
    return charge_penalties(spec.fn(inp, **params), inp)


def check_inputs(spec: EstimatorSpec, inp: CreditInput, params: dict[str, Any] | None = None) -> None:
    """Fail when ``inp`` lacks something ``spec`` needs (with ``params``, the estimator's parameters)."""
    name = spec.name
    if spec.needs_tokens and (inp.token_offsets is None or inp.token_ids is None):
        raise ValueError(f"credit estimator {name!r} needs token_offsets and token_ids")
    if spec.needs_entropy and (inp.token_offsets is None or inp.entropy is None):
        raise ValueError(f"credit estimator {name!r} needs per-token entropy and token_offsets")
    _check_anchor_inputs(spec, inp, params or {})
    if spec.needs_gold_beliefs:
        _check_gold_inputs(name, inp)
    _check_scored_inputs(spec, inp)
    if spec.needs_greedy_baseline and inp.baseline is None:
        raise ValueError(
            f"credit estimator {name!r} needs CreditInput.baseline: the return of a greedy rollout of each row's task, "
            "which the trainer plays before credit"
        )
    if spec.needs_values and (inp.value is None or inp.token_offsets is None):
        raise ValueError(
            f"credit estimator {name!r} needs CreditInput.value (the value head's V at every action token) and "
            "token_offsets; the trainer computes them when the run has a critic (critic.value_coef > 0)"
        )
    explicit = inp.outcome_explicit
    if spec.needs_outcome and explicit is None:
        raise ValueError(
            f"credit estimator {name!r} needs the outcome_explicit column: which episodes' outcome the env "
            "reported apart from its step rewards (StepResult.outcome); CreditInput.from_table fills it"
        )


def _check_anchor_inputs(spec: EstimatorSpec, inp: CreditInput, params: dict[str, Any]) -> None:
    """Fail when the anchor grouping ``params`` pick cannot be formed from ``inp``."""
    name, grouping = spec.name, spec.state_grouping(params)
    if spec.needs_env_state_keys(params) and inp.n_turns and not np.any(inp.state_key >= 0):
        raise ValueError(
            f"credit estimator {name!r} groups turns by environment state, but no turn has a state key; "
            "give the env a state_key() method, set state_grouping='normalized' (anchor groups from the "
            "observation text) or pick an estimator without step-level grouping (e.g. grpo)"
        )
    if spec.needs_state_vectors(params) and inp.state_vector is None:
        raise ValueError(
            f"credit estimator {name!r} with state_features='hidden' needs CreditInput.state_vector (N, D): the "
            "policy's hidden state at each turn's last prompt token, which the trainer computes"
        )
    reads_text = grouping in ("normalized", "similarity") and not spec.needs_state_vectors(params)
    if reads_text and inp.observation_text is None:
        raise ValueError(
            f"credit estimator {name!r} with state_grouping={grouping!r} keys on the observation text, but "
            "CreditInput.observation_text is None; CreditInput.from_table fills it"
        )


def _check_gold_inputs(name: str, inp: CreditInput) -> None:
    """Fail when the beliefs in the gold answer are missing, or no episode of a non-empty batch has one."""
    if inp.gold_logprob is None:
        raise ValueError(
            f"credit estimator {name!r} needs CreditInput.gold_logprob: the policy's belief in each episode's gold "
            "answer before every turn, which the trainer computes for envs whose tasks have a gold reply"
        )
    if inp.n_turns and np.all(np.isnan(inp.gold_logprob)):
        raise ValueError(
            f"credit estimator {name!r} scores the policy's belief in the gold answer, but no episode has one; "
            "use an env with a gold reply (clew.envs.HasGoldReply: toolcalc-v0, tir/*, rg/* datasets with "
            "answers) or an estimator that needs no answer (e.g. grpo)"
        )


def _check_scored_inputs(spec: EstimatorSpec, inp: CreditInput) -> None:
    """Fail when a column the trainer scores with the policy (InfoPO, PBSD, SIOP) is missing."""
    wanted = {
        "counterfactual_gain": spec.needs_counterfactual_gain,
        "privileged_logratio": spec.needs_privileged_logratio,
        "mode_logprob": spec.needs_outcome_modes,
        "mode_weight": spec.needs_outcome_modes,
        "prm_logratio": spec.needs_implicit_prm,
        "branch_value": spec.needs_branch_values,
        "segment_start": spec.needs_segments,
    }
    for column in (c for c, needed in wanted.items() if needed and getattr(inp, c) is None):
        raise ValueError(
            f"credit estimator {spec.name!r} needs CreditInput.{column}, which the trainer scores with the policy "
            "before credit (clew.trainer.credit_inputs); build it the same way when calling compute() directly"
        )
    if spec.needs_privileged_logratio and inp.n_turns and np.all(np.isnan(inp.privileged_logratio)):  # type: ignore[arg-type]
        raise ValueError(
            f"credit estimator {spec.name!r} conditions on each episode's verified answer, but no episode has one; "
            "use an env with a gold reply (clew.envs.HasGoldReply) or an estimator that needs no answer (e.g. grpo)"
        )


def charge_penalties(credit: Credit, inp: CreditInput) -> Credit:
    """Subtract each row's penalty from its advantage (and from each of its tokens' advantages)."""
    if credit.penalty_charged or inp.penalty is None or not np.any(inp.penalty):
        return credit
    token_adv = credit.token_advantage
    if token_adv is not None and inp.token_offsets is not None:
        token_adv = token_adv - np.repeat(inp.penalty, np.diff(inp.token_offsets))
    diagnostics = {**credit.diagnostics, "credit/penalty_mean": float(inp.penalty.mean())}
    adv = credit.turn_advantage - inp.penalty
    return replace(credit, turn_advantage=adv, token_advantage=token_adv, diagnostics=diagnostics)


def check_choice(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Fail when an option is not one of ``allowed``, naming both."""
    if value not in allowed:
        raise ValueError(f"{field_name} must be one of {list(allowed)}, got {value!r}")


# --- validation ----------------------------------------------------------------------------------
