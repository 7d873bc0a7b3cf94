"""Judging as a service against a real HTTP judge (``judge_server``): the cache, the concurrency limit, deadlines,
crashes and unparsable replies (retried once, sampled) become failed verdicts; sources' scores become outcomes and
step rewards by hand-computed numbers; a failed judgement makes its episode ``infra``; rankings by group."""

from __future__ import annotations

import pytest

from clew.rewards import prompts
from clew.rewards.backends import OpenAIJudge
from clew.rewards.parse import parse_score
from clew.rewards.service import JudgeService, Verdict
from clew.rewards.sources import Scores, Source, VerifierParams, apply, judged_steps, parse_params
from clew.trainer.data_sections import JudgingConfig, RewardSourceConfig
from clew.trainer.judging import Judging, _combined
from clew.types import Episode, Group, Turn
from tests.rewards.judge_server import serve


def _parse(reply: str) -> list[float] | None:
    score = parse_score(reply, (0, 10))
    return None if score is None else [score]


def _messages(answer: str) -> prompts.Messages:
    return prompts.pointwise("Grade it.", f"Step 1, the agent: {answer}", (0, 10), 2048, 16, prompts.approximate_count)


def _service(url: str, **kw: float) -> JudgeService:
    return JudgeService(OpenAIJudge(url, "judge", timeout_s=10.0), **kw)  # type: ignore[arg-type]


def test_the_same_content_is_judged_once() -> None:
    with serve() as server:
        service = _service(server.url)
        first = service.results([service.submit("judge", _messages("one two three"), _parse, 0)])[0]
        again = service.results([service.submit("judge", _messages("one two three"), _parse, 1)])[0]
        other = service.results([service.submit("judge", _messages("one"), _parse, 0)])[0]
        service.close()
    assert first.scores == (pytest.approx(0.3),) and not first.cached
    assert again.scores == first.scores and again.cached
    assert other.scores == (pytest.approx(0.1),)
    assert server.requests == 2 and service.stats.cache_hits == 1


def test_concurrency_is_limited() -> None:
    with serve(delay=0.3) as server:
        service = _service(server.url, concurrency=3)
        futures = [service.submit("judge", _messages("x " * i), _parse, i) for i in range(1, 10)]
        verdicts = service.results(futures)
        service.close()
    assert all(v.scores is not None for v in verdicts)
    assert server.max_in_flight == 3 and service.stats.max_in_flight == 3


def test_a_slow_judge_times_out() -> None:
    with serve(delay=1.5) as server:
        service = _service(server.url, timeout_s=0.3)
        verdict = service.results([service.submit("judge", _messages("a"), _parse, 0)])[0]
        service.close()
    assert verdict.scores is None and verdict.failure == "timeout"


def test_a_crashing_judge_is_a_failed_verdict() -> None:
    with serve("error") as server:
        service = _service(server.url)
        verdict = service.results([service.submit("judge", _messages("a"), _parse, 0)])[0]
        service.close()
    assert verdict.scores is None and verdict.failure is not None and verdict.failure.startswith("error")


def test_an_unparsable_reply_is_asked_again_once_then_fails() -> None:
    with serve("garbage") as server:
        service = _service(server.url)
        verdict = service.results([service.submit("judge", _messages("a"), _parse, 5)])[0]
        service.close()
    assert verdict.failure == "unparsable" and verdict.attempts == 2 and server.requests == 2
    assert [b["temperature"] for b in server.bodies] == [0.0, 0.7]  # the retry samples
    assert server.bodies[0]["seed"] != server.bodies[1]["seed"]


def _two_step_episode() -> Episode:
    turns = [Turn([1], [2], [-1.0], "look", reward=0.0), Turn([1], [3], [-1.0], "take", reward=1.0)]
    return Episode("t", 0, 0, turns, outcome=1.0, terminated=True, first_observation="go")


def _sources(keep_steps: bool = False) -> list[Source]:
    return [Source("verifier", "verifier", 0.5, VerifierParams(keep_steps)),
            Source("judge", "judge", 2.0, parse_params("judge", {})),  # type: ignore[arg-type]
            Source("process", "process", 1.0, parse_params("process", {}))]  # type: ignore[arg-type]  # fmt: skip


def test_scores_become_the_outcome_and_step_rewards_by_hand() -> None:
    """verifier 0.5 x outcome 1 + judge 2 x 0.7 = 1.9 as the reported outcome; the process scores 0.2, 0.9 are the
    step rewards; the env's step rewards leave the turns (they are in the verifier's score): return 3.0, once."""
    episode = _two_step_episode()
    apply(episode, _sources(), Scores({"verifier": 1.0, "judge": 0.7}, {"process": {0: 0.2, 1: 0.9}}), 0.5)
    assert episode.outcome == pytest.approx(1.9) and episode.outcome_explicit
    assert [t.reward for t in episode.turns] == pytest.approx([0.2, 0.9])
    assert [t.info["env_reward"] for t in episode.turns] == [0.0, 1.0]
    assert episode.turns[-1].info["rewards"] == {"verifier": 1.0, "judge": 0.7}
    assert episode.turns[1].info["process"] == {"process": 0.9}
    assert episode.success  # the env's verdict (terminated, outcome > 0 before) is not replaced by the threshold


def test_keep_steps_leaves_the_envs_step_rewards_on_their_turns() -> None:
    """The env reported no outcome apart from its step rewards: the verifier's outcome score is 0 and the step rewards
    stay, times its weight: outcome 2 x 0.7 = 1.4, rewards [0.2, 0.5 + 0.9]."""
    episode = _two_step_episode()
    apply(episode, _sources(True), Scores({"verifier": 0.0, "judge": 0.7}, {"process": {0: 0.2, 1: 0.9}}), None)
    assert episode.outcome == pytest.approx(1.4)
    assert [t.reward for t in episode.turns] == pytest.approx([0.2, 1.4])


def test_a_failed_judgement_makes_the_episode_infra() -> None:
    episode = _two_step_episode()
    apply(episode, _sources(), Scores(failed="judge: timeout"), None)
    assert episode.failure == "infra" and "timeout" in str(episode.error)
    assert episode.outcome == 1.0 and [t.reward for t in episode.turns] == [0.0, 1.0]  # as the env gave them


def test_process_judges_every_kth_env_step_and_the_last() -> None:
    turns = [Turn([1], [2], [-1.0], str(i)) for i in range(7)]
    turns[2].context_edit = "summary"  # not an env step
    episode = Episode("t", 0, 0, turns)
    assert judged_steps(episode, 1) == [0, 1, 3, 4, 5, 6]
    assert judged_steps(episode, 2) == [1, 4, 6]


def _group(gid: int, answers: list[str]) -> Group:
    episodes = [Episode("t", gid, gid, [Turn([1], [2], [-1.0], a)], terminated=True, first_observation="say")
                for a in answers]  # fmt: skip
    return Group(gid, "t", gid, episodes)


def test_rank_and_judge_sources_score_groups_through_the_service() -> None:
    """A ranking of each group and a pointwise judgement of each episode, from a judge that scores words (0-10):
    the outcome is rank 1 x words/10 + judge 0.5 x words/10. A policy failure gets 0 without a call."""
    with serve("ranks") as ranker, serve("length") as pointwise:
        rewards = [_cfg("rank", ranker.url, 1.0), _cfg("judge", pointwise.url, 0.5)]
        judging = Judging.open(rewards, JudgingConfig())
        groups = [_group(0, ["a b", "a b c d"]), _group(1, ["a", "a b c", "x"])]
        groups[1].episodes[2].error, groups[1].episodes[2].failure = "boom", "policy"
        for member, episode in enumerate(groups[0].episodes):  # as the rollout does when an episode ends
            judging.on_episode(episode, member)
        judging.score(groups)
        metrics = judging.metrics()
        judging.close()
    assert [e.outcome for e in groups[0].episodes] == pytest.approx([0.3, 0.6])
    assert [e.outcome for e in groups[1].episodes] == pytest.approx([0.15, 0.45, 0.0])
    assert ranker.requests == 2 and pointwise.requests == 4  # the failed episode is neither ranked nor judged
    assert "<<<TRANSCRIPT" in ranker.bodies[0]["messages"][1]["content"]
    assert metrics["rewards/judge_failed_share"] == 0.0 and metrics["rewards/judge/mean"] == pytest.approx(0.2)


def test_a_broken_judge_leaves_episodes_out_never_zero() -> None:
    with serve("garbage") as server:
        judging = Judging.open([_cfg("judge", server.url, 1.0)], JudgingConfig())
        groups = [_group(0, ["a", "b"])]
        judging.score(groups)
        metrics = judging.metrics()
        judging.close()
    assert all(e.failure == "infra" and e.outcome == 0.0 and not e.outcome_explicit for e in groups[0].episodes)
    assert metrics["rewards/judge_failed_share"] == 1.0 and metrics["rewards/judge_unparsable_share"] == 1.0
    assert metrics["rewards/infra_episodes"] == 2.0


def _cfg(name: str, url: str, weight: float):  # type: ignore[no-untyped-def]
    from clew.trainer.data_sections import RewardSourceConfig

    return RewardSourceConfig(name=name, weight=weight, params={"url": url, "model": "judge"})


def test_an_offset_centres_process_scores() -> None:
    """A process score s of weight 0.5 and offset 0.5 pays 0.5 x (s - 0.5): an indifferent step (0.5) is worth 0."""
    episode = _two_step_episode()
    process = Source("process", "process", 0.5, parse_params("process", {"offset": 0.5}))  # type: ignore[arg-type]
    apply(episode, [process], Scores({}, {"process": {0: 0.5, 1: 0.9}}), None)
    assert [t.reward for t in episode.turns] == pytest.approx([0.0, 0.2])
    assert episode.turns[1].info["process"] == {"process": 0.9}  # logged as the judge gave it


def test_a_score_is_the_mean_of_its_samples_each_cached_apart() -> None:
    """Three sampled verdicts per episode (seeds s + 104729 k); the judge answers seed mod 11: the score is their mean.
    Judging the same episodes again costs no request."""
    with serve("seeded") as server:
        rewards = [RewardSourceConfig(name="judge", params={"url": server.url, "model": "j", "samples": 3,
                                                             "temperature": 1.0})]  # fmt: skip
        judging = Judging.open(rewards, JudgingConfig())
        groups = [_group(5, ["a", "b"])]
        judging.score(groups)
        first = server.requests
        again = [_group(5, ["a", "b"])]
        judging.score(again)
        judging.close()
    expected = sum((5 + 104_729 * k) % 11 for k in range(3)) / 3 / 10
    assert [e.outcome for e in groups[0].episodes] == pytest.approx([expected, expected])
    assert first == 6 and server.requests == 6  # 2 episodes x 3 samples, then all from the cache
    assert all(b["temperature"] == 1.0 for b in server.bodies)
    assert [e.outcome for e in again[0].episodes] == pytest.approx([expected, expected])


def test_fewer_than_half_parsed_samples_fail_the_judgement() -> None:
    ok, bad = Verdict((0.2,)), Verdict(None, "unparsable")
    assert _combined([(0, ok), (0, bad)])[0][1].scores == (0.2,)
    assert _combined([(0, ok), (0, bad), (0, bad)])[0][1].failure == "unparsable"
    assert _combined([(0, ok), (1, Verdict((0.6,))), (0, Verdict((0.4,)))]) == [
        (0, Verdict((pytest.approx(0.3),), attempts=2)),
        (1, Verdict((0.6,), attempts=1)),
    ]


class _Garbage:
    """A local backend (batch 8) that never follows the format; its first call waits until released."""

    name, context_tokens, batch, special_tokens = "garbage", 4096, 8, ()

    def __init__(self) -> None:
        import threading

        self.release, self.requests = threading.Event(), 0

    def count(self, text: str) -> int:
        return len(text)

    def complete(self, requests, temperature, max_tokens, seeds, prefix=""):  # type: ignore[no-untyped-def]
        first = self.requests == 0
        self.requests += len(requests)
        if first:
            self.release.wait(5)
        return ["no verdict"] * len(requests)

    def close(self) -> None:
        return None


def test_a_retry_and_a_fresh_judgement_in_one_batch_each_run_once() -> None:
    """A's retry and B's first try come out of the queue together: B's retry must wait for the next take, not join
    A's call (it did once, and its verdict was set twice, killing the worker)."""
    backend = _Garbage()
    service = JudgeService(backend, concurrency=1, timeout_s=10)  # type: ignore[arg-type]
    a = service.submit("judge", _messages("a"), _parse, 0)
    while backend.requests == 0:
        pass
    b = service.submit("judge", _messages("b"), _parse, 1)
    backend.release.set()
    verdicts = service.results([a, b])
    alive = all(t.is_alive() for t in service._threads)
    service.close()
    assert [v.failure for v in verdicts] == ["unparsable", "unparsable"] and alive
    assert backend.requests == 4  # A, then A's retry with B, then B's retry
