"""The opponent league: Elo and PFSP by hand, opponents per task, ratings from games, and a run that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clew.store.run import checkpoints, read_jsonl
from clew.trainer.config import load_config
from clew.trainer.data_sections import LeagueConfig
from clew.trainer.league import League, Member, elo_update, expected_score, pfsp_weights
from clew.trainer.loop import Trainer
from clew.types import Episode, Group, Turn


def test_elo_and_pfsp_by_hand() -> None:
    assert expected_score(1000, 1000) == 0.5
    assert expected_score(1200, 1000) == pytest.approx(0.759747, abs=1e-6)  # 1 / (1 + 10^(-200/400))
    assert elo_update(1000, 1000, 1.0, 16) == (1008.0, 992.0)
    assert elo_update(1000, 1200, 0.5, 32) == pytest.approx((1000 + 32 * (0.5 - 0.240253), 1200 - 32 * 0.259747))
    # P[win] 0.5 against an equal member, 0.240253 against one 200 points up: (0.5^2, 0.759747^2) normalised
    assert pfsp_weights(1000, [1000, 1200]) == pytest.approx([0.25 / 0.827215, 0.577215 / 0.827215], abs=1e-5)


def _league(**cfg: object) -> League:
    league = League(LeagueConfig(snapshot_every=1, **cfg), Path("/nonexistent"), seed=0)  # type: ignore[arg-type]
    league.members = [Member("iter_000001", "m/1", 1000.0), Member("iter_000002", "m/2", 1000.0)]
    return league


def test_each_task_meets_itself_or_a_member_the_same_way_every_time() -> None:
    assert _league(self_share=1.0).task_kwargs({"max_steps": 9}, 3, 17) == {"max_steps": 9, "opponent": "self"}
    league = _league(self_share=0.0)
    picks = [league.task_kwargs({}, 3, seed)["opponent"] for seed in range(40)]
    again = [_league(self_share=0.0).task_kwargs({}, 3, seed)["opponent"] for seed in range(40)]
    assert set(picks) == {"/nonexistent/m/1", "/nonexistent/m/2"} and picks == again
    assert league.met[5] == ("iter_000001" if picks[5] == "/nonexistent/m/1" else "iter_000002")
    mixed = [_league().task_kwargs({}, 0, seed)["opponent"] for seed in range(200)]
    assert 70 < mixed.count("self") < 130  # self_share 0.5
    strong = _league(self_share=0.0, pick="rating")
    strong.members[1].rating = 1400.0  # it beats the policy: PFSP meets it most
    meets = [strong.task_kwargs({}, 0, seed)["opponent"] for seed in range(300)]
    assert meets.count("/nonexistent/m/2") > 2 * meets.count("/nonexistent/m/1")


def _game(seed: int, outcomes: list[float], agent: int | None = None) -> Group:
    episodes = [Episode("nim", seed, seed, [Turn([1], [2], [0.0], "x")], r, True, agent=agent) for r in outcomes]
    return Group(seed, "nim", seed, episodes)


def test_league_games_rate_the_policy_and_the_member_in_order() -> None:
    league = _league(elo_k=16.0)
    league.met = {1: "iter_000001", 2: "iter_000002"}
    broken = Episode("nim", 1, 1, [], 0.0, True, error="lost", failure="infra")
    first = _game(1, [1.0, -1.0])
    first.episodes.append(broken)  # no game: its outcome is not the policy's
    league.record([first, _game(2, [0.0]), _game(3, [1.0], agent=0)])  # seed 3: a self-play game, rated by nobody
    policy, one = elo_update(1000.0, 1000.0, 1.0, 16.0)  # a win against member 1 ...
    policy, one = elo_update(policy, one, 0.0, 16.0)  # ... a loss against it ...
    policy, two = elo_update(policy, 1000.0, 0.5, 16.0)  # ... and a draw against member 2
    assert (league.rating, league.members[0].rating, league.members[1].rating) == pytest.approx((policy, one, two))
    assert (league.games, league.members[0].games, league.members[1].games) == (3, 2, 1)
    assert league.met == {}  # the round is rated once


def test_a_league_needs_a_self_play_env(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"league.snapshot_every > 0 needs a self-play env"):
        load_config(None, [f"policy.model={tiny_dir}", "env.id=textarena/Nim-v0", "league.snapshot_every=2"])


def _run(tiny_dir: Path, run: Path, stop_after: int | None = None, resume: bool = False) -> None:
    cfg = load_config(None, [
        f"policy.model={tiny_dir}", "env.id=textarena/Nim-v0", "env.kwargs={opponent: self, max_steps: 6}",
        "iterations=4", "tasks_per_iteration=4", "rollout.group_size=2", "rollout.max_turns=3",
        "rollout.max_new_tokens=4", "rollout.context=window", "train.minibatch_rows=32", "train.microbatch_rows=16",
        "eval.every=0", "eval.at_start=false", "eval.at_end=false", "checkpoint_every=1",
        "league.snapshot_every=1", "league.self_share=0.25", "league.pool_size=2",
        "rollout.engine_params={batch_invariant: true}",
    ])  # fmt: skip
    Trainer(cfg, run).fit(resume=resume, stop_after=stop_after)


def test_a_league_run_snapshots_rates_and_resumes_bit_for_bit(tiny_dir: Path, tmp_path: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _run(tiny_dir, whole)
    _run(tiny_dir, cut, stop_after=2)
    _run(tiny_dir, cut, resume=True)
    league = json.loads((checkpoints(whole)[-1] / "league.json").read_text())
    assert [m["name"] for m in league["members"]] == ["iter_000003", "iter_000004"]  # the pool keeps the latest 2
    assert league["games"] > 0  # (the tiny model's games run out of turns: draws, which leave equal ratings alone)
    assert sum(m["games"] for m in league["members"]) <= league["games"]  # members that left the pool took theirs
    assert (checkpoints(cut)[-1] / "league.json").read_text() == (checkpoints(whole)[-1] / "league.json").read_text()
    rated = [r for r in read_jsonl(whole / "metrics.jsonl") if r.get("kind") == "iteration"]
    assert [r["league/pool"] for r in rated] == [1.0, 2.0, 2.0, 2.0]
    assert rated[0]["league/games"] == 0.0 and rated[-1]["league/games"] == league["games"]
    mine = load_file(str(checkpoints(cut)[-1] / "policy" / "model.safetensors"))
    theirs = load_file(str(checkpoints(whole)[-1] / "policy" / "model.safetensors"))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert (whole / "league" / "iter_000001" / "config.json").exists()  # every snapshot stays a model directory
