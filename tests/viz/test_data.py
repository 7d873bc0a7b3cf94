"""The viewer's DuckDB layer on a small run whose iteration 1 is a version-1 file and iteration 2 version 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clew.store.trajectories import turn_records, write_trajectories
from clew.table import TurnTable
from clew.types import Episode, Group, Turn
from clew.viz.data import RunData, first_divergence
from clew.viz.export import embed_json, export_html
from clew.viz.records import dumps
from tests.viz.conftest import IMG, SCRIPT, TOKEN_ADV, TURN_ADV, XSS_ACTION, XSS_OBSERVATION, build_run


@pytest.fixture()
def run(run_dir: Path) -> RunData:
    return RunData("small-run", run_dir)


@pytest.mark.parametrize("iteration", [1, 2])
def test_groups_summarise_each_episode(run: RunData, iteration: int) -> None:
    page = run.groups(iteration)
    assert (page.total_groups, page.total_episodes, page.iterations) == (3, 5, (1, 2))
    g0, g1, _ = page.groups
    assert (g0.task_id, g0.seed, g0.success_rate, g0.mean_outcome, g0.outcome_std) == ("t0", 7, 0.5, 0.5, 0.5)
    a, b = g0.episodes
    assert (a.episode, a.turns, a.total_reward, a.success, a.terminated) == (0, 2, 1.0, True, True)
    assert (b.turns, b.success, b.truncation_reason, b.invalid_actions, b.error) == (3, False, "max_turns", 1, None)
    assert [(e.episode, e.error, e.truncation_reason) for e in g1.episodes] == [
        (2, "boom <b>", "error"),
        (3, None, None),
    ]


@pytest.mark.parametrize(
    ("status", "episodes"),
    [
        ("success", [0, 3, 4]),
        ("failure", [1, 2]),
        ("invalid", [1]),
        ("truncated", [1, 2]),
        ("error", [2]),
        ("policy_error", [2]),
        ("infra_error", []),
        ("all", [0, 1, 2, 3, 4]),
    ],
)
def test_status_filters_episodes(run: RunData, status: str, episodes: list[int]) -> None:
    page = run.groups(2, status=status)
    assert [e.episode for g in page.groups for e in g.episodes] == episodes


def test_failure_types_show_and_files_before_them_read_as_infra(run: RunData) -> None:
    """Episode 2 is a policy failure; iteration 1's file predates the ``failure`` column: infra there."""
    assert run.episode(2, 2).summary.failure == "policy" and run.episode(2, 0).summary.failure is None
    assert run.episode(1, 2).summary.failure == "infra" and run.episode(1, 0).summary.failure is None
    assert [e.episode for g in run.groups(1, status="infra_error").groups for e in g.episodes] == [2]
    assert run.groups(1, status="policy_error").groups == ()
    assert [e.failure for e in run.groups(2).groups[1].episodes] == ["policy", None]


def test_sorts_order_groups_by_their_statistics(run: RunData) -> None:
    # success rates 0.5, 0.5, 1.0 (ties by group id); outcome std 0.5, 0.5, 0; mean turns 2.5, 1, 1
    assert [g.group for g in run.groups(2, sort="success").groups] == [2, 0, 1]
    assert [g.group for g in run.groups(2, sort="outcome").groups] == [2, 0, 1]
    assert [g.group for g in run.groups(2, sort="spread").groups] == [0, 1, 2]
    assert [g.group for g in run.groups(2, sort="turns", status="success").groups] == [0, 1, 2]
    with pytest.raises(ValueError, match="sort one of"):
        run.groups(2, sort="outcome; DROP TABLE x")


def test_search_matches_actions_and_observations_case_insensitively(run: RunData) -> None:
    by_action = run.groups(2, query="TAKE")
    assert [(e.episode, e.matches) for g in by_action.groups for e in g.episodes] == [(0, 1), (3, 1), (4, 1)]
    by_obs = run.groups(2, query="you see a KEY")
    assert [(e.episode, e.matches) for g in by_obs.groups for e in g.episodes] == [(0, 1), (1, 1)]
    assert run.groups(2, query="%").groups == ()  # a literal percent sign, not a wildcard
    assert [e.episode for g in run.groups(2, query="onerror").groups for e in g.episodes] == [1, 2]


def test_version_1_tokens_repeat_the_turn_advantage(run: RunData) -> None:
    ep = run.episode(1, 1)
    assert [[k.advantage for k in t.tokens] for t in ep.turns] == [[-0.5, -0.5], [-2.0, -2.0], [-0.5]]
    assert [k.entropy for k in ep.turns[0].tokens] == [0.3, 0.4]  # from the v1 info JSON
    assert [t.advantage for t in ep.turns] == list(TURN_ADV[2:5])


def test_version_2_tokens_carry_stored_credit_and_text(run: RunData) -> None:
    ep = run.episode(2, 1)
    assert [[k.advantage for k in t.tokens] for t in ep.turns] == [
        list(TOKEN_ADV[3:5]),
        list(TOKEN_ADV[5:7]),
        [TOKEN_ADV[7]],
    ]
    tokens = ep.turns[1].tokens
    assert [(k.id, k.text) for k in tokens] == [(8, SCRIPT), (9, " x")]
    assert [k.logprob for k in tokens] == pytest.approx([-0.1, -0.2])
    assert (ep.turns[1].action_text, ep.turns[1].observation, ep.turns[1].invalid) == (
        XSS_ACTION,
        XSS_OBSERVATION,
        True,
    )
    assert ep.prompt_text == "<bos> Hello world" and ep.prompt_tokens == 3
    assert ep.tokenizer is not None and ep.tokenizer.endswith("base/tokenizer.json")


def test_segment_starts_where_a_prompt_does_not_extend_the_last_turn(run: RunData) -> None:
    assert [t.segment_start for t in run.episode(2, 0).turns] == [True, False]  # turn 1 extends turn 0's ids
    assert [t.segment_start for t in run.episode(2, 1).turns] == [True, True, True]  # each prompt starts over
    assert [t.segment_start for t in run.episode(1, 0).turns] == [True, False]  # a batch-1 file too


def test_anchor_group_is_same_group_same_state(run: RunData) -> None:
    ep = run.episode(2, 0)
    # state s0 in group 0: episode 1 turns 0 and 2 (episode 2 of group 1 also has s0 but is another task)
    assert [(m.episode, m.turn, m.advantage) for m in ep.turns[0].anchor] == [(1, 0, -0.5), (1, 2, -0.5)]
    assert [(m.episode, m.turn, m.turn_return) for m in ep.turns[1].anchor] == [(1, 1, 0.0)]
    assert run.episode(2, 3).turns[0].anchor == ()  # no state key


def test_compare_marks_the_first_diverging_turn(run: RunData) -> None:
    cmp = run.compare(2, 0, 1)
    assert cmp.first_divergence == 1 and (cmp.a.summary.episode, cmp.b.summary.episode) == (0, 1)
    with pytest.raises(ValueError, match="groups 0 and 1"):
        run.compare(2, 0, 3)


def test_first_divergence() -> None:
    assert first_divergence([[1], [2]], [[1], [2]]) is None
    assert first_divergence([[1], [2]], [[1], [3]]) == 1
    assert first_divergence([[1]], [[1], [2]]) == 1
    assert first_divergence([[1, 2]], [[1]]) == 0


def test_curves_mix_version_1_and_2_files(run: RunData) -> None:
    curves = run.curves()
    assert curves.series["rollout/success_rate"] == [(7.0, 0.5), (14.0, 0.75)]
    assert [(m.iteration, m.env_steps, m.detector) for m in curves.markers] == [(2, 14.0, "length_drift")]
    # action tokens per turn: 11 tokens / 8 turns in both files (union_by_name over v1 + v2)
    assert curves.series["lengths/action_tokens"] == [(7.0, pytest.approx(11 / 8)), (14.0, pytest.approx(11 / 8))]
    assert [(p.env_steps, p.success, p.low, p.high) for p in curves.evals] == [
        (0.0, 0.25, 0.1, 0.5),
        (14.0, 0.5, 0.3, 0.7),
    ]
    info = run.info()
    assert (info.iterations, info.env_steps, info.last_eval.success if info.last_eval else None) == ((1, 2), 14.0, 0.5)


def test_unknown_iteration_or_episode_is_a_key_error(run: RunData) -> None:
    with pytest.raises(KeyError):
        run.groups(9)
    with pytest.raises(KeyError):
        run.episode(2, 99)


def test_without_a_tokenizer_tokens_are_ids(run_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    (bare / "trajectories").mkdir(parents=True)
    for f in (run_dir / "trajectories").iterdir():
        (bare / "trajectories" / f.name).write_bytes(f.read_bytes())
    ep = RunData("bare", bare).episode(2, 1)
    assert [k.text for k in ep.turns[1].tokens] == ["#8", "#9"] and ep.prompt_text is None and ep.tokenizer is None
    assert json.loads(dumps(ep))["turns"][1]["action_text"] == XSS_ACTION


def test_export_embeds_json_that_cannot_close_its_script(run_dir: Path, tmp_path: Path) -> None:
    out = export_html(run_dir, 2, tmp_path / "out.html")
    html = out.read_text()
    start = html.index('<script type="application/json" id="clew-data">') + len(
        '<script type="application/json" id="clew-data">'
    )
    data = html[start : html.index("</script>", start)]
    assert "<" not in data and ">" not in data
    bundle = json.loads(data)
    assert bundle["episodes"]["1"]["turns"][1]["observation"] == XSS_OBSERVATION
    assert set(bundle["episodes"]) == {"0", "1", "2", "3", "4"} and 'src="/static' not in html
    assert embed_json(IMG) == '"\\u003cimg src=x onerror=\\"window.__pwned=1\\"\\u003e"'


def test_view_never_imports_torch(run_dir: Path, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom clew.cli import main\nimport clew.viz.server\n"
        f"assert main(['view', '--export', {str(run_dir)!r}, '--iteration', '2', {str(tmp_path / 'x.html')!r}]) == 0\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\nassert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert (tmp_path / "x.html").stat().st_size > 0


def test_self_play_episodes_show_their_seat_and_game(tmp_path: Path) -> None:
    """Iteration 1 of a self-play run: two games of two seats; an episode page lists both seats of its game with the
    outcome from each side and the mean advantage; the seat of every turn and of every episode tile shows."""
    seat = lambda agent, game, outcome: Episode(  # noqa: E731
        "nim#0", agent, 0, [Turn([1], [5], [-0.1], "[0 1]", observation="ok")] * (2 + agent), outcome, True,
        outcome_explicit=True, agent=agent, match=game,
    )  # fmt: skip
    a0, a1, b0, b1 = seat(0, "A", 1.0), seat(1, "A", -1.0), seat(0, "B", -1.0), seat(1, "B", 1.0)
    table = TurnTable.from_groups([Group(0, "nim#0", 0, [a0, b0]), Group(1, "nim#0", 0, [a1, b1])])
    adv = np.arange(table.n_turns, dtype=np.float64)
    (tmp_path / "trajectories").mkdir()
    write_trajectories(tmp_path / "trajectories" / "iter_000001.parquet", turn_records(table, 1, adv, adv))
    run = RunData("selfplay", tmp_path)
    page = run.groups(1)
    assert [[(e.episode, e.agent, e.match) for e in g.episodes] for g in page.groups] == [
        [(0, 0, "A"), (1, 0, "B")], [(2, 1, "A"), (3, 1, "B")]
    ]  # fmt: skip
    view = run.episode(1, 2)  # seat 1 of game A: rows 4-6 (seat 0 plays 2 turns, seat 1 plays 3)
    assert {t.agent for t in view.turns} == {1} and view.summary.agent == 1
    assert [(g.episode, g.agent, g.outcome, g.turns) for g in view.game] == [(0, 0, 1.0, 2), (2, 1, -1.0, 3)]
    assert [g.mean_advantage for g in view.game] == [0.5, 5.0]
    assert (
        run.episode(1, 0).game[1].episode == 2 and RunData("small", build_run(tmp_path / "v")).episode(2, 0).game == ()
    )
