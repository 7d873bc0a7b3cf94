import pytest

from clew.envs.base import StepResult
from clew.policy import HFPolicy, SamplingParams
from clew.rollout import Framing, PolicyActor, RolloutConfig, ScriptedActor, Task, collect
from clew.types import Group


def _collect(policy: HFPolicy, cfg: RolloutConfig, seed: int = 0, tasks: list[Task] | None = None) -> list[Group]:
    # many stop tokens, so an untrained model ends most actions early and episodes run several turns
    params = SamplingParams(temperature=1.0, max_new_tokens=cfg.max_new_tokens, stop_token_ids=tuple(range(2, 300)))
    actor = PolicyActor(policy, params)
    tasks = tasks or [Task("keydoor-v0", 1), Task("toolcalc-v0", 2), Task("bifurcation-v0", 3)]
    return collect(actor, tasks, cfg, seed=seed, framing=Framing(policy.tokenizer, policy.chat))


def test_rows_are_exact_and_logprobs_reproduce(tiny_policy: HFPolicy) -> None:
    """Several turns, padded batches: learner rows == shown prompt + sampled ids; log-probs match."""
    cfg = RolloutConfig(group_size=3, max_turns=4, max_new_tokens=3, context="full")
    groups = _collect(tiny_policy, cfg)
    turns = [t for g in groups for e in g.episodes for t in e.turns]
    assert len(turns) > 9 and len({len(t.prompt_ids) for t in turns}) > 3
    scored = tiny_policy.logprobs([(t.prompt_ids, t.action_ids) for t in turns])
    for turn, lp in zip(turns, scored):
        assert len(lp) == len(turn.action_ids) == len(turn.behavior_logprobs)
        assert max(abs(a - b) for a, b in zip(lp, turn.behavior_logprobs)) < 1e-4


def test_full_context_prompts_extend_prompt_plus_action(tiny_policy: HFPolicy) -> None:
    cfg = RolloutConfig(group_size=2, max_turns=4, max_new_tokens=2, context="full")
    # keep episodes alive: an action cut at 2 tokens ends the episode, so use a scripted actor
    actor = ScriptedActor("random", tokenizer=tiny_policy.tokenizer)
    groups = collect(actor, [Task("keydoor-v0", 5)], cfg, 0, Framing(tiny_policy.tokenizer, tiny_policy.chat))
    for ep in groups[0].episodes:
        for prev, nxt in zip(ep.turns, ep.turns[1:]):
            assert nxt.prompt_ids[: len(prev.prompt_ids) + len(prev.action_ids)] == prev.prompt_ids + prev.action_ids


def test_window_context_keeps_only_recent_turns(tiny_policy: HFPolicy) -> None:
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    actor = ScriptedActor("expert", tokenizer=tiny_policy.tokenizer)
    cfg = RolloutConfig(group_size=1, max_turns=6, context="window", window_turns=0)
    ep = collect(actor, [Task("keydoor-v0", 2, {"width": 6, "height": 6})], cfg, 0, framing)[0].episodes[0]
    for turn, obs in zip(ep.turns[1:], [t.observation for t in ep.turns]):
        assert turn.prompt_ids == tiny_policy.chat.first_segment(tiny_policy.tokenizer, obs)


def test_same_seed_same_episodes(tiny_policy: HFPolicy) -> None:
    cfg = RolloutConfig(group_size=2, max_turns=3, max_new_tokens=4)
    a, b = _collect(tiny_policy, cfg, seed=11), _collect(tiny_policy, cfg, seed=11)
    assert [g.to_dict() for g in a] == [g.to_dict() for g in b]
    c = _collect(tiny_policy, cfg, seed=12)
    assert [g.to_dict() for g in a] != [g.to_dict() for g in c]


def test_budgets_end_episodes_as_truncated_with_reason(tiny_policy: HFPolicy) -> None:
    short = collect(
        PolicyActor(tiny_policy, SamplingParams(max_new_tokens=1)),
        [Task("keydoor-v0", 0)],
        RolloutConfig(group_size=4, max_turns=3, max_new_tokens=1),
        0,
        Framing(tiny_policy.tokenizer, tiny_policy.chat),
    )
    reasons = {e.truncation_reason for g in short for e in g.episodes}
    assert "max_new_tokens" in reasons
    tiny = _collect(tiny_policy, RolloutConfig(group_size=1, max_prompt_tokens=5))
    assert all(e.truncation_reason == "max_prompt_tokens" and not e.turns for g in tiny for e in g.episodes)
    actor = ScriptedActor("random")
    capped = collect(
        actor, [Task("keydoor-v0", 0, {"width": 9, "height": 9})], RolloutConfig(group_size=4, max_turns=2), 0
    )
    assert all(e.truncation_reason == "max_turns" and len(e.turns) == 2 for e in capped[0].episodes)


class Exploding:
    """An env whose step raises on the second call, or hangs."""

    def __init__(self, mode: str = "raise") -> None:
        self.mode, self.n = mode, 0

    def reset(self, seed: int) -> str:
        return "go"

    def step(self, action: str) -> StepResult:
        self.n += 1
        if self.n == 2 and self.mode == "raise":
            raise RuntimeError("tool crashed")
        if self.n == 2 and self.mode == "hang":
            import time

            time.sleep(2)
        return StepResult("ok", 0.0, False, False, {})

    def valid_actions(self) -> list[str]:
        return ["a"]


@pytest.mark.parametrize("mode, error", [("raise", "tool crashed"), ("hang", "timeout")])
def test_env_failures_end_only_that_episode(mode: str, error: str) -> None:
    tasks = [Task("tests.test_rollout:Exploding", 0, {"mode": mode}), Task("keydoor-v0", 0)]
    cfg = RolloutConfig(group_size=2, max_turns=4, env_step_timeout_s=0.5)
    groups = collect(ScriptedActor("random"), tasks, cfg, 0)
    for ep in groups[0].episodes:
        assert error in (ep.error or "") and ep.truncation_reason == "error" and len(ep.turns) == 2
    assert all(ep.error is None for ep in groups[1].episodes)
