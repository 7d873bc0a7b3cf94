"""Context strategies: the registry, the prompts each builds, token invariants per segment, credit across edits."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from clew.credit import CreditInput, compute
from clew.policy import Completion, HFEngine, HFPolicy, SamplingParams
from clew.rollout import Framing, PolicyActor, RolloutConfig, ScriptedActor, Task, collect
from clew.rollout.batch import to_rows
from clew.rollout.context import CONTEXTS, History, make_context
from clew.table import TurnTable
from clew.tensors import loss_units, pack_spans
from clew.types import Episode, Group, Turn

STOPS = tuple(range(512))  # every id ends a completion: one-token actions, so no episode is cut at max_new_tokens
KEYDOOR = Task("keydoor-v0", 3, {"width": 6, "height": 6, "max_steps": 40})


def _framing(policy: HFPolicy) -> Framing:
    return Framing(policy.tokenizer, policy.chat)


def _run(policy: HFPolicy, engine: HFEngine, context: dict[str, Any], max_turns: int = 8) -> tuple[Episode, list]:
    served: list[tuple[list[int], list[int]]] = []

    class Logged(PolicyActor):
        def submit(self, key: int, prompt: Sequence[int], env: Any, seed: int) -> None:
            self._prompts = {**getattr(self, "_prompts", {}), key: list(prompt)}
            super().submit(key, prompt, env, seed)

        def poll(self) -> list[tuple[int, Completion]]:
            done = super().poll()
            served.extend((self._prompts[k], list(c.token_ids)) for k, c in done)
            return done

    actor = Logged(engine, SamplingParams(temperature=1.0, max_new_tokens=4, stop_token_ids=STOPS))
    cfg = RolloutConfig(group_size=1, max_turns=max_turns, max_new_tokens=4, context=context)
    group = collect(actor, [KEYDOOR], cfg, seed=5, framing=_framing(policy))[0]
    return group.episodes[0], served


# --- registry and config -----------------------------------------------------------------------------------
def test_registry_lists_the_strategies_and_rejects_unknown_names_and_params() -> None:
    assert set(CONTEXTS.available()) == {"full", "window", "summary", "memory", "markovian", "plan"}
    with pytest.raises(ValueError, match="unknown context strategy 'everything'; available: full, markovian"):
        make_context("everything")
    with pytest.raises(ValueError, match=r"'window' has no parameter\(s\) \['k'\]; valid: \['turns'\]"):
        make_context("window", {"k": 2})
    with pytest.raises(ValueError, match="turns must be >= 0, got -1"):
        make_context("window", {"turns": -1})
    with pytest.raises(ValueError, match=r"chunk_tokens \(64\) must exceed carry_tokens \(64\)"):
        make_context("markovian", {"chunk_tokens": 64, "carry_tokens": 64})
    with pytest.raises(ValueError, match="would never summarize"):
        make_context("summary", {"every": 0})
    with pytest.raises(ValueError, match="context 'summary': bad parameter value"):
        make_context("summary", {"every": "2"})


def test_config_validates_at_construction_and_reads_older_forms() -> None:
    with pytest.raises(ValidationError, match="context"):
        RolloutConfig(context={"name": "summary", "params": {"every_turns": 3}})
    assert RolloutConfig(context="window").context.name == "window"  # type: ignore[arg-type]
    legacy = RolloutConfig.model_validate({"context": "window", "window_turns": 2})  # runs from batch 1
    assert legacy.context.params == {"turns": 2} and legacy.context.make() == make_context("window", {"turns": 2})


# --- prompts, by hand --------------------------------------------------------------------------------------
def _history(framing: Framing, n: int) -> History:
    history = History(["task: find the key"])
    for i in range(n):
        history.add(framing.tokenizer.encode(f"act{i}") + [framing.chat.eos_id], f"obs{i + 1}", framing)
    return history


def test_summary_request_and_compacted_prompt(tiny_policy: HFPolicy) -> None:
    framing, summary = _framing(tiny_policy), make_context("summary", {"every": 2})
    history = _history(framing, 1)
    assert summary.after_step(history, framing) is None  # one env turn since the start: not due
    history = _history(framing, 2)
    request = summary.after_step(history, framing)
    full = framing.first("task: find the key") + history.exchanges(0)
    asked = framing.after(history.actions[1], f"obs2\n\n{summary.instruction}")  # type: ignore[attr-defined]
    assert request == full[: len(full) - len(history.segments[1])] + asked
    note = [7, 8, 9, framing.chat.eos_id]
    summary.take_edit(history, note)
    expected = framing.first("task: find the key") + note + framing.after(note, "obs2")
    assert summary.build(history, framing) == expected  # the summary ids as sampled, then the current observation
    history.add([11, 12], "obs3", framing)
    assert summary.build(history, framing) == expected + [11, 12] + history.segments[2]


def test_summary_after_a_summary(tiny_policy: HFPolicy) -> None:
    framing, summary = _framing(tiny_policy), make_context("summary", {"every": 1})
    history = _history(framing, 1)
    first_note, second_note = [5, 6, framing.chat.eos_id], [9, framing.chat.eos_id]
    summary.take_edit(history, first_note)
    history.add([11], "obs2", framing)
    request = summary.after_step(history, framing)  # every=1: due again after one exchange
    opening = framing.first("task: find the key") + first_note + framing.after(first_note, "obs1")
    assert request == opening + [11] + framing.after([11], f"obs2\n\n{summary.instruction}")  # type: ignore[attr-defined]
    summary.take_edit(history, second_note)
    expected = framing.first("task: find the key") + second_note + framing.after(second_note, "obs2")
    assert summary.build(history, framing) == expected and summary.start == 2  # type: ignore[attr-defined]


def test_summary_by_token_budget(tiny_policy: HFPolicy) -> None:
    framing = _framing(tiny_policy)
    history = _history(framing, 3)
    size = len(make_context("full").build(history, framing))
    assert make_context("summary", {"every": 0, "budget_tokens": size}).after_step(history, framing) is None
    assert make_context("summary", {"every": 0, "budget_tokens": size - 1}).after_step(history, framing) is not None


def test_memory_blocks_are_stored_and_cut_from_the_env_text(tiny_policy: HFPolicy) -> None:
    framing, memory = _framing(tiny_policy), make_context("memory", {"turns": 1, "max_chars": 10})
    history = _history(framing, 2)
    assert memory.take_action(history, "up") == "up" and memory.memory == ""  # type: ignore[attr-defined]
    assert memory.take_action(history, "<memory>key at 3,4 door</memory> left") == "left"
    assert memory.memory == "key at 3,4"  # type: ignore[attr-defined]  # the last block, capped at max_chars
    opening = framing.first("task: find the key\n\nYour memory: key at 3,4\n\nobs1")
    assert memory.build(history, framing) == opening + history.actions[1] + history.segments[1]


def test_markovian_chunks_carry_the_last_ids(tiny_policy: HFPolicy) -> None:
    framing = _framing(tiny_policy)
    first = framing.first("task: find the key")
    history = _history(framing, 3)
    stream = history.exchanges(0)
    markov = make_context("markovian", {"chunk_tokens": len(first) + len(stream) - 1, "carry_tokens": 5})
    assert markov.after_step(history, framing) is None
    newest = history.segments[-1]
    carry = markov.carry  # type: ignore[attr-defined]
    assert carry == stream[: len(stream) - len(newest)][-5:] + newest and markov.start == 3  # type: ignore[attr-defined]
    assert markov.build(history, framing) == first + carry


# --- rollouts: every turn is what the engine saw and sampled --------------------------------------------------
@pytest.mark.parametrize(
    "context",
    [
        {"name": "summary", "params": {"every": 2}},
        {"name": "markovian", "params": {"chunk_tokens": 300, "carry_tokens": 16}},
        {"name": "memory", "params": {"turns": 1}},
        {"name": "window", "params": {"turns": 1}},
    ],
)
def test_turns_and_rows_are_exactly_what_the_engine_saw(
    tiny_policy: HFPolicy, tiny_engine: HFEngine, context: dict[str, Any]
) -> None:
    episode, served = _run(tiny_policy, tiny_engine, context)
    assert [(t.prompt_ids, t.action_ids) for t in episode.turns] == served
    table = TurnTable.from_groups([Group(0, "t", 0, [episode])])
    for merge in (False, True):
        rows = to_rows(table, np.zeros(table.n_turns), merge_prefix=merge)
        for row in rows:  # a row's tokens are one turn's prompt + action, byte for byte
            ids = [t for span, _ in row.spans for t in span]
            last = next(t for t in episode.turns if t.prompt_ids + t.action_ids == ids)
            assert row.spans[-1][0] == last.action_ids


def test_summaries_are_sampled_turns_and_their_ids_reach_later_prompts(
    tiny_policy: HFPolicy, tiny_engine: HFEngine
) -> None:
    episode, _ = _run(tiny_policy, tiny_engine, {"name": "summary", "params": {"every": 2}})
    kinds = ["S" if t.context_edit else "a" for t in episode.turns]
    # 8 env turns (summaries do not count against max_turns), and no summary after the last one
    assert "".join(kinds) == "aaSaaSaaSaa" and episode.truncation_reason == "max_turns"
    framing = _framing(tiny_policy)
    for i, turn in enumerate(episode.turns):
        if kinds[i] == "S":
            after = episode.turns[i + 1]
            obs = episode.turns[i - 1].observation
            expected = framing.first(episode.first_observation) + turn.action_ids + framing.after(turn.action_ids, obs)
            assert after.prompt_ids == expected
            assert turn.reward == 0.0 and turn.state_key.startswith("summary:")  # type: ignore[union-attr]


def test_each_episode_has_its_own_strategy_state(tiny_policy: HFPolicy, tiny_engine: HFEngine) -> None:
    summary = {"name": "summary", "params": {"every": 2}}
    cfg = RolloutConfig(group_size=3, max_turns=6, max_new_tokens=4, context=summary)
    assert cfg.context.make() is not cfg.context.make()  # a fresh instance per episode, never shared
    actor = PolicyActor(tiny_engine, SamplingParams(temperature=1.0, max_new_tokens=4, stop_token_ids=STOPS))
    group = collect(actor, [KEYDOOR], cfg, seed=5, framing=_framing(tiny_policy))[0]
    framing = _framing(tiny_policy)
    for episode in group.episodes:  # a shared summary state would splice one episode's summary into another's prompt
        assert "".join("S" if t.context_edit else "a" for t in episode.turns) == "aaSaaSaa"
        summaries = [i for i, t in enumerate(episode.turns) if t.context_edit]
        for i in summaries:
            after = episode.turns[i + 1].prompt_ids
            assert after[: len(framing.first(episode.first_observation)) + len(episode.turns[i].action_ids)] == (
                framing.first(episode.first_observation) + episode.turns[i].action_ids
            )


def test_markovian_rollout_rolls_chunks_and_always_shows_the_newest_observation(
    tiny_policy: HFPolicy, tiny_engine: HFEngine
) -> None:
    episode, _ = _run(
        tiny_policy, tiny_engine, {"name": "markovian", "params": {"chunk_tokens": 300, "carry_tokens": 16}}
    )
    framing, lengths = _framing(tiny_policy), [len(t.prompt_ids) for t in episode.turns]
    assert max(lengths) <= 300 and any(b < a for a, b in itertools.pairwise(lengths))  # chunks rolled over
    for prev, turn in itertools.pairwise(episode.turns):
        newest = framing.after(prev.action_ids, prev.observation)
        assert turn.prompt_ids[-len(newest) :] == newest


def test_a_scripted_expert_is_never_asked_for_a_summary_and_gets_an_empty_one(tiny_policy: HFPolicy) -> None:
    actor = ScriptedActor("expert", tokenizer=tiny_policy.tokenizer)
    cfg = RolloutConfig(group_size=1, max_turns=8, context={"name": "summary", "params": {"every": 2}})
    episode = collect(actor, [KEYDOOR], cfg, seed=0, framing=_framing(tiny_policy))[0].episodes[0]
    assert len(episode.turns) > 3 and not any(t.context_edit for t in episode.turns)
    framing = _framing(tiny_policy)  # turn 2 follows the (empty) summary due after two env turns
    assert episode.turns[2].prompt_ids == framing.first(episode.first_observation) + framing.after(
        [], episode.turns[1].observation
    )


# --- credit across context edits, by hand ---------------------------------------------------------------------
def _edited_group() -> list[Group]:
    def turn(reward: float, edit: bool = False) -> Turn:
        return Turn([1, 2], [3, 4], [-0.1, -0.1], "x", reward=reward, context_edit="summary" if edit else None)

    a = Episode("t", 0, 0, [turn(0), turn(0), turn(0, edit=True), turn(1)], 1.0, terminated=True)
    b = Episode("t", 0, 0, [turn(0), turn(0, edit=True), turn(0)], 0.0, terminated=True)
    for e in (a, b):
        e.first_observation = "start"
    return [Group(0, "t", 0, [a, b])]


def test_outcome_and_turn_credit_reach_the_summary_turns() -> None:
    table = TurnTable.from_groups(_edited_group())
    inp = CreditInput.from_table(table)
    returns = compute("reinforce", inp, gamma=0.9).turn_advantage
    # episode a: rewards 0, 0, 0 (summary), 1; gamma counts env steps, the summary takes the return of the step
    # after it -> returns 0.81, 0.9, 1, 1 (a summary is not a step of the horizon); b: all 0
    assert returns.tolist() == pytest.approx([0.81, 0.9, 1.0, 1.0, 0.0, 0.0, 0.0])
    # DCPO's worked example (credit.md section 23): statistics once per episode, not per segment or turn:
    # outcomes 1, 0 -> mean 0.5, sample std 0.7071 -> +-0.7071 on every turn, the summary turns included
    grpo = compute("grpo", inp).turn_advantage
    assert grpo == pytest.approx([0.5**0.5] * 4 + [-(0.5**0.5)] * 3, abs=1e-5)


# --- weighting: episode | segment | turn, merged rows == per-turn rows ---------------------------------------
def _fractured_rows(merge: bool) -> list:
    """Episode 0: turns 1-2 extend each other, then a context edit starts a new segment (turns 3-4)."""
    t = [
        Turn([1, 2], [3], [-0.1], "a"),
        Turn([1, 2, 3, 9], [4, 5], [-0.1, -0.2], "b"),
        Turn([1, 7], [6], [-0.3], "c"),  # compacted: does not extend turn 2
        Turn([1, 7, 6, 9], [8, 8, 8], [-0.1] * 3, "d"),
    ]
    e0 = Episode("t", 0, 0, t, 1.0, terminated=True)
    e1 = Episode("t", 0, 0, [Turn([1], [2, 2], [-0.5, -0.5], "z")], 0.0, terminated=True)
    table = TurnTable.from_groups([Group(0, "t", 0, [e0, e1])])
    return to_rows(table, np.arange(table.n_turns, dtype=float), merge_prefix=merge)


def _token_weights(rows: list, weighting: str) -> list[float]:
    from clew.objectives import aggregation_weights

    mask = pack_spans([r.spans for r in rows], 0).action_mask
    w = aggregation_weights(mask, "seq_mean_token_mean", units=loss_units(rows, weighting))
    return w[mask.bool()].tolist()  # one weight per action token, in turn order


def test_rows_record_their_segment_and_merges_stay_inside_it() -> None:
    merged, split = _fractured_rows(True), _fractured_rows(False)
    assert [(r.episode, r.segment, r.turns) for r in merged] == [(0, 0, 2), (0, 1, 2), (1, 0, 1)]
    assert [(r.episode, r.segment) for r in split] == [(0, 0), (0, 0), (0, 1), (0, 1), (1, 0)]


@pytest.mark.parametrize(
    ("weighting", "expected"),
    [
        # seq_mean_token_mean; tokens: e0 seg0 = [3], [4, 5]; e0 seg1 = [6], [8, 8, 8]; e1 = [2, 2]
        ("episode", [1 / 14] * 7 + [1 / 4] * 2),  # 2 episodes: 1/2 each over 7 and 2 tokens
        ("segment", [1 / 9] * 3 + [1 / 12] * 4 + [1 / 6] * 2),  # 3 segments: 1/3 each over 3, 4, 2 tokens
        ("turn", [1 / 5, 1 / 10, 1 / 10, 1 / 5, 1 / 15, 1 / 15, 1 / 15, 1 / 10, 1 / 10]),  # 5 turns
    ],
)
def test_weighting_by_hand_and_merged_equals_split(weighting: str, expected: list[float]) -> None:
    assert _token_weights(_fractured_rows(False), weighting) == pytest.approx(expected)
    assert _token_weights(_fractured_rows(True), weighting) == pytest.approx(expected)


def test_row_weighting_lets_merging_change_the_loss() -> None:
    """The reason for an explicit weighting: with ``row`` units, merging turns changes their weights."""
    assert _token_weights(_fractured_rows(True), "row") != pytest.approx(_token_weights(_fractured_rows(False), "row"))
    with pytest.raises(ValueError, match="weighting must be one of"):
        loss_units(_fractured_rows(True), "segments")
    assert torch.equal(loss_units(_fractured_rows(True), "turn")[0][:6], torch.tensor([-1, -1, 0, -1, 1, 1]))
