import itertools
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from clew.envs import HasStateKey, make
from clew.envs.base import StepResult
from clew.policy import Completion, HFEngine, HFPolicy, SamplingParams
from clew.rollout import Framing, PolicyActor, RolloutConfig, ScriptedActor, Task, collect
from clew.types import Episode, Group

# many stop tokens, so an untrained model ends most actions early and episodes run several turns
STOPS = tuple(range(2, 300))
TASKS = [Task("keydoor-v0", 1), Task("toolcalc-v0", 2), Task("bifurcation-v0", 3)]


def _params(cfg: RolloutConfig) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_new_tokens=cfg.max_new_tokens, stop_token_ids=STOPS)


def _collect(
    policy: HFPolicy, engine: Any, cfg: RolloutConfig, seed: int = 0, tasks: Sequence[Task] | None = None
) -> list[Group]:
    actor = PolicyActor(engine, _params(cfg))
    return collect(actor, tasks or TASKS, cfg, seed=seed, framing=Framing(policy.tokenizer, policy.chat))


def _episodes(groups: list[Group]) -> list[Episode]:
    return [e for g in groups for e in g.episodes]


def _assert_same(a: list[Group], b: list[Group], logprob_tol: float = 0.0) -> None:
    """Equal ids, rewards, observations and endings; behavior log-probs within ``logprob_tol`` (0: exact).

    The hf engine decodes whatever is in flight as one batch, so its log-probs carry the float rounding
    of differently shaped matmuls (~1e-7) when two runs batch differently; its sampled ids do not.
    """
    for x, y in zip(_episodes(a), _episodes(b), strict=True):
        assert [t.prompt_ids for t in x.turns] == [t.prompt_ids for t in y.turns]
        assert [t.action_ids for t in x.turns] == [t.action_ids for t in y.turns]
        assert [(t.reward, t.observation, t.state_key) for t in x.turns] == [
            (t.reward, t.observation, t.state_key) for t in y.turns
        ]
        assert (x.outcome, x.terminated, x.truncation_reason) == (y.outcome, y.terminated, y.truncation_reason)
        lp_x = [v for t in x.turns for v in t.behavior_logprobs]
        lp_y = [v for t in y.turns for v in t.behavior_logprobs]
        if logprob_tol == 0.0:
            assert lp_x == lp_y
        else:
            assert max((abs(u - v) for u, v in zip(lp_x, lp_y, strict=True)), default=0.0) < logprob_tol


class Batched:
    """A plain ``Engine`` (no ``Streams``) over another engine; records each batch size it is asked for."""

    continuous_batching = False

    def __init__(self, inner: Any, max_model_len: int = 1 << 30) -> None:
        self.inner, self.batches, self.max_model_len = inner, list[int](), max_model_len

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]) -> list[Any]:
        self.batches.append(len(prompts))
        return self.inner.generate(prompts, params, seeds)

    def load_weights(self, named_tensors: Any) -> None: ...

    def close(self) -> None: ...


class SeedEngine:
    """Each completion is a pure function of its seed; records submissions (keys) and batch sizes."""

    max_model_len = 1 << 62
    continuous_batching = False  # streams requests, yet the scheduler gathers them into waves

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.submitted, self.batches, self.fail_on_call = list[int](), list[int](), fail_on_call
        self._queue: list[tuple[int, list[int], int]] = []

    def submit(self, key: int, prompt: Sequence[int], params: SamplingParams, seed: int) -> None:
        self.submitted.append(key)
        self._queue.append((key, list(prompt), seed))

    def poll(self) -> list[tuple[int, Completion]]:
        self.batches.append(len(self._queue))
        if len(self.batches) == self.fail_on_call:
            raise RuntimeError("engine crashed")
        queue, self._queue = self._queue, []
        return [(k, _seeded_completion(prompt, s)) for k, prompt, s in queue]

    def pending(self) -> int:
        return len(self._queue)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]) -> list[Any]:
        return [_seeded_completion(p, s) for p, s in zip(prompts, seeds, strict=True)]

    def load_weights(self, named_tensors: Any) -> None: ...

    def close(self) -> None: ...


def _seeded_completion(prompt: Sequence[int], seed: int) -> Completion:
    """1-3 tokens and log-probs drawn from (prompt, seed) alone; the text is a keydoor action."""
    rng = random.Random(f"{seed}/{list(prompt)}")
    ids = [rng.randrange(3, 300) for _ in range(rng.randint(1, 3))]
    text = rng.choice(["up", "down", "left", "right", "pickup", "open", "calc 1+2", "answer 3"])
    return Completion(ids, [-rng.random() for _ in ids], "stop", text)


class Jitter:
    """A registered env whose steps sleep a random few ms (when ``jitter`` > 0): steps end out of order."""

    _draws = itertools.count()

    def __init__(self, inner: str = "keydoor-v0", jitter: int = 0) -> None:
        self.env, self.jitter = make(inner), jitter

    def reset(self, seed: int) -> str:
        return self.env.reset(seed)

    def step(self, action: str) -> StepResult:
        if self.jitter:
            time.sleep(random.Random(self.jitter * 1_000_003 + next(Jitter._draws)).uniform(0.0, 0.005))
        return self.env.step(action)

    def state_key(self) -> str | None:
        return self.env.state_key() if isinstance(self.env, HasStateKey) else None


class Slow:
    """Never ends on its own; every step sleeps ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s, self.n = delay_s, 0

    def reset(self, seed: int) -> str:
        return "start"

    def step(self, action: str) -> StepResult:
        time.sleep(self.delay_s)
        self.n += 1
        return StepResult(f"obs {self.n}", 1.0, False, False, {})

    def valid_actions(self) -> list[str]:
        return ["a", "b"]


RELEASE = threading.Event()


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
            RELEASE.wait(60)  # hangs until the test releases it
        return StepResult("ok", 0.0, False, False, {})

    def valid_actions(self) -> list[str]:
        return ["a"]


def test_rows_are_exact_and_logprobs_reproduce(tiny_policy: HFPolicy, tiny_engine: HFEngine) -> None:
    """Several turns, padded batches: learner rows == shown prompt + sampled ids; log-probs match."""
    cfg = RolloutConfig(group_size=3, max_turns=4, max_new_tokens=3, context="full")
    turns = [t for e in _episodes(_collect(tiny_policy, tiny_engine, cfg)) for t in e.turns]
    assert len(turns) > 9 and len({len(t.prompt_ids) for t in turns}) > 3
    scored = tiny_policy.logprobs([(t.prompt_ids, t.action_ids) for t in turns])
    for turn, lp in zip(turns, scored):
        assert len(lp) == len(turn.action_ids) == len(turn.behavior_logprobs)
        assert max(abs(a - b) for a, b in zip(lp, turn.behavior_logprobs)) < 1e-4


@pytest.mark.parametrize("actor_kind", ["scripted", "engine"])
def test_full_context_prompts_extend_prompt_plus_action(
    tiny_policy: HFPolicy, tiny_engine: HFEngine, actor_kind: str
) -> None:
    """Tokens in, tokens out: turn k+1's prompt starts with turn k's prompt ids + its sampled ids."""
    cfg = RolloutConfig(group_size=4, max_turns=4, max_new_tokens=4, context="full")
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    # a scripted actor keeps episodes alive (an action cut at max_new_tokens ends the episode)
    scripted = ScriptedActor("random", tokenizer=tiny_policy.tokenizer)
    actor = scripted if actor_kind == "scripted" else PolicyActor(tiny_engine, _params(cfg))
    episodes = _episodes(collect(actor, [Task("keydoor-v0", 5), Task("toolcalc-v0", 6)], cfg, 0, framing))
    assert sum(len(ep.turns) for ep in episodes) > len(episodes)
    for ep in episodes:
        for prev, nxt in zip(ep.turns, ep.turns[1:]):
            assert nxt.prompt_ids[: len(prev.prompt_ids) + len(prev.action_ids)] == prev.prompt_ids + prev.action_ids


def test_window_context_keeps_only_recent_turns(tiny_policy: HFPolicy) -> None:
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    actor = ScriptedActor("expert", tokenizer=tiny_policy.tokenizer)
    cfg = RolloutConfig(group_size=1, max_turns=6, context="window", window_turns=0)
    ep = collect(actor, [Task("keydoor-v0", 2, {"width": 6, "height": 6})], cfg, 0, framing)[0].episodes[0]
    for turn, obs in zip(ep.turns[1:], [t.observation for t in ep.turns]):
        assert turn.prompt_ids == tiny_policy.chat.first_segment(tiny_policy.tokenizer, obs)


def test_same_seed_same_episodes(tiny_policy: HFPolicy, tiny_engine: HFEngine) -> None:
    cfg = RolloutConfig(group_size=2, max_turns=3, max_new_tokens=4)
    a, b = _collect(tiny_policy, tiny_engine, cfg, seed=11), _collect(tiny_policy, tiny_engine, cfg, seed=11)
    _assert_same(a, b, logprob_tol=1e-5)
    c = _collect(tiny_policy, tiny_engine, cfg, seed=12)
    assert [t.action_ids for e in _episodes(a) for t in e.turns] != [
        t.action_ids for e in _episodes(c) for t in e.turns
    ]


@pytest.mark.parametrize("engine_kind", ["seeded", "hf"])
def test_fixed_seed_same_groups_whatever_the_scheduling(
    tiny_policy: HFPolicy, tiny_engine: HFEngine, engine_kind: str
) -> None:
    """1 env thread, 4 threads, 4 threads with jittered steps, a batching engine: identical groups.

    The seeded engine's samples are pure functions of (prompt, seed), so every number must be equal.
    """
    tasks = [
        Task("tests.rollout.test_loop:Jitter", s, {"inner": e}) for s, e in enumerate(["keydoor-v0", "toolcalc-v0"])
    ]
    jittered = [Task(t.env_id, t.seed, {**t.env_kwargs, "jitter": 7}) for t in tasks]
    engine: Any = SeedEngine() if engine_kind == "seeded" else tiny_engine
    cfg = RolloutConfig(group_size=3, max_turns=5, max_new_tokens=4, env_workers=1)
    base = _collect(tiny_policy, engine, cfg, seed=3, tasks=tasks)
    assert sum(len(e.turns) for e in _episodes(base)) > 2 * len(_episodes(base))
    runs = [
        _collect(tiny_policy, engine, cfg.model_copy(update={"env_workers": 4}), seed=3, tasks=tasks),
        _collect(tiny_policy, engine, cfg.model_copy(update={"env_workers": 4}), seed=3, tasks=jittered),
        _collect(tiny_policy, Batched(engine), cfg.model_copy(update={"env_workers": 3}), seed=3, tasks=jittered),
    ]
    for run in runs:
        _assert_same(base, run, logprob_tol=0.0 if engine_kind == "seeded" else 1e-5)


def test_episodes_advance_independently() -> None:
    """While a slow env steps once, the fast episodes run all their turns (a lock-step loop would wait)."""
    engine = SeedEngine()
    tasks = [Task("tests.rollout.test_loop:Slow", 0, {"delay_s": 0.2}), Task("tests.rollout.test_loop:Slow", 1)]
    cfg = RolloutConfig(group_size=2, max_turns=5, env_workers=4, batch_window_s=0.0)
    groups = collect(PolicyActor(engine, SamplingParams()), tasks, cfg, 0)
    assert all(len(e.turns) == 5 and e.truncation_reason == "max_turns" for e in _episodes(groups))
    # keys 0, 1: slow episodes; 2, 3: fast ones
    second_slow_turn = [i for i, k in enumerate(engine.submitted) if k == 0][1]
    last_fast_turn = max(i for i, k in enumerate(engine.submitted) if k in (2, 3))
    assert last_fast_turn < second_slow_turn
    assert min(b for b in engine.batches if b) < 4


def test_a_wave_engine_gets_full_batches_when_env_steps_are_quick() -> None:
    """An engine that decodes one batch per poll (hf) waits for env steps in flight (``batch_window_s``), so
    with quick envs every poll carries every running episode; without the window they could trickle in."""
    engine = SeedEngine()
    tasks = [Task("tests.rollout.test_loop:Slow", s, {"delay_s": 0.002 * s}) for s in range(3)]
    cfg = RolloutConfig(group_size=4, max_turns=5, env_workers=4, batch_window_s=5.0)
    groups = collect(PolicyActor(engine, SamplingParams()), tasks, cfg, 0)
    assert all(len(e.turns) == 5 for e in _episodes(groups))
    assert engine.batches == [12] * 5


def test_streaming_and_batched_engines_agree(tiny_policy: HFPolicy, tiny_engine: HFEngine) -> None:
    """``PolicyActor`` over a ``Streams`` engine == over the same engine seen as a plain ``generate`` engine."""
    cfg = RolloutConfig(group_size=2, max_turns=3, max_new_tokens=4)
    batched = Batched(tiny_engine)
    a, b = _collect(tiny_policy, tiny_engine, cfg, seed=5), _collect(tiny_policy, batched, cfg, seed=5)
    _assert_same(a, b, logprob_tol=1e-5)
    assert batched.batches and max(batched.batches) <= 6


def test_budgets_end_episodes_as_truncated_with_reason(tiny_policy: HFPolicy, tiny_engine: HFEngine) -> None:
    short = collect(
        PolicyActor(tiny_engine, SamplingParams(max_new_tokens=1)),
        [Task("keydoor-v0", 0)],
        RolloutConfig(group_size=4, max_turns=3, max_new_tokens=1),
        0,
        Framing(tiny_policy.tokenizer, tiny_policy.chat),
    )
    assert "max_new_tokens" in {e.truncation_reason for e in _episodes(short)}
    tiny = _collect(tiny_policy, tiny_engine, RolloutConfig(group_size=1, max_prompt_tokens=5))
    assert all(e.truncation_reason == "max_prompt_tokens" and not e.turns for e in _episodes(tiny))
    actor = ScriptedActor("random")
    capped = collect(
        actor, [Task("keydoor-v0", 0, {"width": 9, "height": 9})], RolloutConfig(group_size=4, max_turns=2), 0
    )
    assert all(e.truncation_reason == "max_turns" and len(e.turns) == 2 for e in capped[0].episodes)


def test_prompt_too_long_for_the_engine_is_truncated(tiny_policy: HFPolicy, tiny_engine: HFEngine) -> None:
    """A prompt over ``max_model_len - max_new_tokens`` ends the episode before that turn."""
    cfg = RolloutConfig(group_size=2, max_turns=20, max_new_tokens=4)
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    first = len(tiny_policy.chat.first_segment(tiny_policy.tokenizer, "start"))
    engine = Batched(tiny_engine, max_model_len=first + 4 + 30)  # room for the first prompt, not for many turns
    scripted = ScriptedActor("random", tokenizer=tiny_policy.tokenizer)
    scripted_groups = collect(scripted, [Task("tests.rollout.test_loop:Slow", 0)], cfg, 0, framing)
    model_groups = collect(
        PolicyActor(engine, _params(cfg)), [Task("tests.rollout.test_loop:Slow", 0)], cfg, 0, framing
    )
    assert all(e.truncation_reason == "max_turns" for e in _episodes(scripted_groups))  # unbounded actor
    for ep in _episodes(model_groups):
        assert ep.truncation_reason in ("max_prompt_tokens", "max_new_tokens") and ep.turns
        assert all(len(t.prompt_ids) <= first + 30 for t in ep.turns)
    assert "max_prompt_tokens" in {e.truncation_reason for e in _episodes(model_groups)}


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("mode, error", [("raise", "tool crashed"), ("hang", "timeout")])
def test_env_failures_end_only_that_episode(mode: str, error: str, workers: int) -> None:
    tasks = [Task("tests.rollout.test_loop:Exploding", 0, {"mode": mode}), Task("keydoor-v0", 0)]
    cfg = RolloutConfig(group_size=2, max_turns=4, env_step_timeout_s=0.5, env_workers=workers)
    RELEASE.clear()
    groups = collect(ScriptedActor("random"), tasks, cfg, 0)
    hung_still_running = any(t.name.startswith("clew-env") and t.is_alive() for t in threading.enumerate())
    RELEASE.set()
    assert mode == "raise" or hung_still_running  # collect returned without waiting for the hung step
    for ep in groups[0].episodes:
        assert error in (ep.error or "") and ep.truncation_reason == "error" and len(ep.turns) == 2
    assert all(ep.error is None for ep in groups[1].episodes)


def test_broken_env_is_recorded_in_member_order() -> None:
    tasks = [Task("tests.rollout.test_loop:Exploding", 0, {"bad_kwarg": 1}), Task("keydoor-v0", 0)]
    groups = collect(ScriptedActor("random"), tasks, RolloutConfig(group_size=2, max_turns=2), 0)
    assert [e.truncation_reason for e in groups[0].episodes] == ["error", "error"]
    assert all("bad_kwarg" in (e.error or "") for e in groups[0].episodes)
    assert [len(e.turns) for e in groups[1].episodes] == [2, 2]


def test_engine_errors_propagate() -> None:
    cfg = RolloutConfig(group_size=2, max_turns=4)
    with pytest.raises(RuntimeError, match="engine crashed"):
        collect(
            PolicyActor(SeedEngine(fail_on_call=2), SamplingParams()), [Task("tests.rollout.test_loop:Slow", 0)], cfg, 0
        )


class LosesMember1(ScriptedActor):
    """A scripted actor whose requests for group member 1 come back lost (a remote worker died twice)."""

    def poll(self) -> Sequence[tuple[int, Completion | Exception]]:
        return [(k, RuntimeError("engine worker 0 died twice") if k == 1 else c) for k, c in super().poll()]


def test_a_lost_request_ends_only_its_episode_as_an_error() -> None:
    cfg = RolloutConfig(group_size=3, max_turns=4)
    groups = collect(LosesMember1("random"), [Task("keydoor-v0", 0)], cfg, 0)
    lost, kept = groups[0].episodes[1], [groups[0].episodes[0], groups[0].episodes[2]]
    assert lost.truncation_reason == "error" and "died twice" in (lost.error or "") and not lost.turns
    assert all(e.error is None and len(e.turns) == 4 for e in kept)


def test_progress_counts_turns() -> None:
    calls: list[tuple[int, int]] = []
    cfg = RolloutConfig(group_size=3, max_turns=4)
    groups = collect(
        ScriptedActor("random"), [Task("tests.rollout.test_loop:Slow", 0)], cfg, 0, on_turn=lambda *a: calls.append(a)
    )
    assert calls[-1][0] == sum(len(e.turns) for e in _episodes(groups)) == 12
    assert [c[0] for c in calls] == sorted(c[0] for c in calls) and all(0 <= c[1] <= 3 for c in calls)
