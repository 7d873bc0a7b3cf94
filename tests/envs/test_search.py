"""search/<corpus>: the generated corpus and its questions, BM25 retrieval and its function tools, answer scoring
(SQuAD's normalisation and F1 by hand), the env's contract (check-env, the expert, invalid actions, bad arguments)
and a user's own JSONL corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("bm25s")

from clew.envs import make as make_env
from clew.envs.checker import check_env
from clew.envs.library.search import f1, normalise
from clew.envs.library.search_corpus import synthetic_corpus
from clew.tools.search import Doc, SearchIndex, SearchTools


def test_answer_scoring_by_hand() -> None:
    assert normalise("The  Paris!") == "paris" and normalise("an Apple, a day") == "apple day"
    assert f1("Paris France", "Paris") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert f1("Lyon", "Paris") == 0.0 and f1("the paris", "Paris") == 1.0


def test_the_corpus_is_deterministic_and_its_chains_hold() -> None:
    corpus = synthetic_corpus(300, 7)
    assert corpus is synthetic_corpus(300, 7) and len(corpus.docs) == 300
    assert synthetic_corpus(300, 8).docs[0] != corpus.docs[0]
    docs = {d.doc_id: d for d in corpus.docs}
    for hops in (1, 2, 3, 4):
        for seed in range(20):
            q = corpus.question(seed, hops)
            assert len(q.chain) == hops and len(set(q.chain)) == hops
            for here, nxt in zip(q.chain, q.chain[1:]):  # each document names the next one
                assert docs[nxt].title in docs[here].text
            assert q.answer in docs[q.chain[-1]].text  # the last one states the answer
    with pytest.raises(ValueError, match="1 to 4 hops"):
        corpus.question(0, 5)


def test_asking_for_the_river_or_either_keeps_the_chains() -> None:
    """``ask`` changes the fact asked of the last city, never the chain; ``either`` draws both kinds, and the fact
    not asked for is a wrong answer the last document also states."""
    corpus = synthetic_corpus(300, 7)
    docs = {d.doc_id: d for d in corpus.docs}
    drawn = {"country": 0, "river": 0}
    for hops in (2, 3, 4):
        for seed in range(20):
            country, river, either = (corpus.question(seed, hops, ask) for ask in ("country", "river", "either"))
            assert country.chain == river.chain == either.chain
            assert river.text.startswith("On which river lies the city where") and river.answer != country.answer
            assert river.answer in docs[river.chain[-1]].text and river.alternatives == (country.answer,)
            kind = "country" if either == country else "river"
            assert either == (country if kind == "country" else river)
            drawn[kind] += 1
    assert min(drawn.values()) > 10
    with pytest.raises(ValueError, match="'country' only at 1 hop"):
        corpus.question(0, 1, "river")


@pytest.mark.parametrize("hops", [1, 2, 3, 4])
def test_the_expert_answers_in_the_fewest_steps(hops: int) -> None:
    env = make_env("search/synthetic", hops=hops, size=500)
    for seed in range(5):
        env.reset(seed)
        steps, result = 0, None
        while result is None or not (result.terminated or result.truncated):
            result = env.step(env.expert_action())
            steps += 1
        assert result.info["em"] and result.reward == 1.0 and steps == 2 * hops + 1 == result.info["optimal_steps"]


@pytest.mark.parametrize(
    "kwargs", [{"hops": 1}, {"hops": 3, "k": 5}, {"hops": 2, "reward": "f1"}, {"hops": 2, "ask": "either"}]
)
def test_passes_check_env(kwargs: dict[str, object]) -> None:
    assert check_env(make_env("search/synthetic", size=300, **kwargs)).episodes == 3


def test_invalid_actions_cost_a_turn_and_running_out_truncates() -> None:
    env = make_env("search/synthetic", hops=2, size=300)
    env.reset(0)
    bad = env.step("look around")
    assert bad.info["invalid_action"] and not bad.terminated and "Error" in bad.observation
    assert env.step("open: d999999").info["invalid_action"]
    assert "Results for" in env.step("search: country").observation
    env.step("search: city")
    assert not env.step("search: river").truncated
    last = env.step("search: company")
    assert last.truncated and not last.terminated and "Out of steps" in last.observation  # 2 x hops + 2 = 6 steps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hops": 5}, "hops"),
        ({"reward": "bleu"}, "reward"),
        ({"k": 0}, "k must"),
        ({}, "jsonl needs"),
        ({"ask": "city"}, "ask must"),
        ({"hops": 1, "ask": "river"}, "ask must"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    name = "search/jsonl" if message == "jsonl needs" else "search/synthetic"
    with pytest.raises(ValueError, match=message):
        make_env(name, **kwargs)


def test_a_users_jsonl_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEW_CACHE", str(tmp_path / "cache"))
    docs = [{"id": "a", "title": "Ada Lovelace", "text": "Ada Lovelace was born in London."},
            {"id": "b", "title": "London", "text": "London is the capital of England."},
            {"id": "c", "title": "Paris", "text": "Paris is the capital of France."}]  # fmt: skip
    questions = [{"question": "In which country was Ada Lovelace born?", "answer": "England", "chain": ["a", "b"]}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    env = make_env("search/jsonl", docs=str(tmp_path / "docs.jsonl"), questions=str(tmp_path / "q.jsonl"))
    assert check_env(env).episodes == 3
    env.reset(0)
    actions = []
    while not actions or not actions[-1].startswith("answer"):
        actions.append(env.expert_action())
        env.step(actions[-1])
    assert actions == ["search: Ada Lovelace", "open: a", "search: London", "open: b", "answer: England"]


def test_search_tools_for_the_gateway(tmp_path: Path) -> None:
    docs = [Doc("a", "Ada Lovelace", "Ada was born in London."), Doc("b", "London", "London is in England.")]
    index = SearchIndex.cached(docs, tmp_path)
    again = SearchIndex.cached(docs, tmp_path)  # loaded from disk
    assert [h.doc_id for h in again.search("born London", 2)] == [h.doc_id for h in index.search("born London", 2)]
    tools = SearchTools(index)
    assert [s["function"]["name"] for s in tools.schemas()] == ["search", "open"]
    assert "[a] Ada Lovelace" in tools.call("search", '{"query": "Ada", "k": 1}').text
    assert tools.call("open", {"doc_id": "b"}).text == "[b] London\nLondon is in England."
    assert tools.call("open", {"doc_id": "z"}).error == "unknown_document"
    assert tools.call("search", {"query": ""}).error == "bad_arguments"
    assert tools.call("search", "{not json").error == "bad_arguments"
    assert tools.call("browse", {}).error == "unknown_tool"
