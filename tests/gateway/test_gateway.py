"""The gateway through the real OpenAI SDK: rows are what it served, segments, GiGPO on harness episodes,
sessions that never mix, and hostile clients that get a 4xx while nothing is lost."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from clew.credit import CreditInput, compute
from clew.gateway import Gateway, GatewayConfig
from clew.policy import HFEngine, HFPolicy, SamplingParams
from clew.rollout.batch import to_rows
from clew.table import TurnTable
from clew.types import Episode, Group

openai = pytest.importorskip("openai", reason="the gateway tests drive it with the OpenAI SDK: pip install openai")


@pytest.fixture()
def gateway(tiny_engine: HFEngine, tiny_policy: HFPolicy) -> Iterator[Gateway]:
    with Gateway(tiny_engine, tiny_policy.tokenizer, GatewayConfig(max_tokens=6, seed=3)) as gw:
        yield gw


def _client(gateway: Gateway, session: str) -> Any:
    return openai.OpenAI(base_url=gateway.base_url(session), api_key="unused", max_retries=0)


def _rendered(policy: HFPolicy, messages: list[dict[str, str]]) -> list[int]:
    text = policy.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(policy.tokenizer.encode(text, add_special_tokens=False))


def _chat(client: Any, messages: list[dict[str, str]], **kw: Any) -> Any:
    return client.chat.completions.create(model="tiny", messages=messages, **kw)


def _post(gateway: Gateway, path: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(gateway.url + path, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# --- tokens in, tokens out -------------------------------------------------------------------------------
def test_rows_are_byte_for_byte_what_the_gateway_served(
    gateway: Gateway, tiny_policy: HFPolicy, tiny_engine: HFEngine
) -> None:
    gateway.open_session("e0")
    client, messages, served = _client(gateway, "e0"), [{"role": "user", "content": "find the key"}], []
    for step in range(3):
        reply = _chat(client, messages, logprobs=True, seed=100 + step)
        served.append((list(messages), reply))
        answer = reply.choices[0].message.content
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": f"obs {step}"}]
    episode = gateway.close_session("e0", outcome=1.0)
    params = SamplingParams(1.0, 1.0, 6, (tiny_policy.eos_id,))
    for step, (turn, (shown, reply)) in enumerate(zip(episode.turns, served, strict=True)):
        assert turn.prompt_ids == _rendered(tiny_policy, shown)  # the model's own template, encoded once
        again = tiny_engine.generate([turn.prompt_ids], params, [100 + step])[0]
        assert turn.action_ids == again.token_ids  # the ids it sampled, never a re-tokenisation of its text
        assert turn.behavior_logprobs == pytest.approx([c.logprob for c in reply.choices[0].logprobs.content])
        assert reply.usage.prompt_tokens == len(turn.prompt_ids) and turn.action_text == again.text
    assert episode.outcome == 1.0 and episode.outcome_explicit and episode.turns[0].observation == "obs 0"
    table = TurnTable.from_groups([Group(0, "t", 0, [episode])])
    for row in to_rows(table, np.zeros(table.n_turns), merge_prefix=False):
        ids = [t for span, _ in row.spans for t in span]
        turn = next(t for t in episode.turns if t.prompt_ids + t.action_ids == ids)  # exactly one served call
        assert row.spans[-1][0] == turn.action_ids and row.behavior_logprobs == turn.behavior_logprobs


def test_a_history_that_is_not_an_extension_starts_a_segment(gateway: Gateway) -> None:
    gateway.open_session("s")
    client = _client(gateway, "s")
    first = [{"role": "user", "content": "one"}]
    reply = _chat(client, first, max_tokens=1)
    sampled = gateway.sessions.get("s").turns[0]
    # the next prompt extends the last call's ids exactly: the same prompt + the sampled ids + more, as tokens
    client.completions.create(model="tiny", prompt=[*sampled.prompt_ids, *sampled.action_ids, 5, 6], max_tokens=1)
    _chat(client, [{"role": "user", "content": "a trimmed history"}], max_tokens=1)  # the harness dropped the past
    session = gateway.sessions.get("s")
    assert [t.info["segment_start"] for t in session.turns] == [True, False, True] and session.segments == 2
    episode = gateway.close_session("s", 0.0)
    table = TurnTable.from_groups([Group(0, "t", 0, [episode])])
    rows = to_rows(table, np.zeros(3), merge_prefix=True)
    assert len(rows) == 2 and {r.segment for r in rows} == {0, 1}  # a segment's turns merge, segments never do
    assert reply.choices[0].finish_reason in {"stop", "length"}


# --- credit on harness episodes ----------------------------------------------------------------------------
def test_gigpo_credit_runs_on_harness_episodes(gateway: Gateway) -> None:
    episodes: list[Episode] = []
    for member in range(4):
        key = f"g0-{member}"
        gateway.open_session(key, task_id="t", group_id=0, seed=7)
        client, messages = _client(gateway, key), [{"role": "user", "content": "start"}]
        for _ in range(2):
            answer = _chat(client, messages).choices[0].message.content
            messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "go on"}]
        episodes.append(gateway.close_session(key, outcome=float(member % 2)))
    assert len({e.turns[0].state_key for e in episodes}) == 1  # the same opening state: one anchor group
    table = TurnTable.from_groups([Group(0, "t", 7, episodes)])
    credit = compute("gigpo", CreditInput.from_table(table))
    first = [0, 2, 4, 6]  # each episode's first turn: same state, outcomes 0, 1, 0, 1
    assert np.sign(credit.turn_advantage[first]).tolist() == [-1.0, 1.0, -1.0, 1.0]


# --- sessions never mix; hostile clients ------------------------------------------------------------------
def test_concurrent_sessions_do_not_mix(gateway: Gateway) -> None:
    keys = [f"c{i}" for i in range(12)]
    for key in keys:
        gateway.open_session(key)

    def run(key: str) -> None:
        client, messages = _client(gateway, key), [{"role": "user", "content": f"I am {key}"}]
        for step in range(2):
            answer = _chat(client, messages).choices[0].message.content
            messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": f"{key} step {step}"}]

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(run, keys))
    for key in keys:
        episode = gateway.close_session(key, 0.0)
        assert len(episode.turns) == 2 and episode.first_observation == f"I am {key}"
        assert episode.turns[0].observation == f"{key} step 0"


def test_hostile_clients_get_a_4xx_and_nothing_is_lost(gateway: Gateway) -> None:
    gateway.open_session("h")
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    json_headers = {"Content-Type": "application/json"}
    assert _post(gateway, "/s/h/v1/chat/completions", b"{not json", json_headers)[0] == 400
    assert _post(gateway, "/s/h/v1/chat/completions", b"[1, 2]", json_headers)[0] == 400
    assert _post(gateway, "/s/h/v1/chat/completions", json.dumps({"messages": "hi"}).encode())[0] == 400
    status, body = _post(gateway, "/s/nobody/v1/chat/completions", good)
    assert status == 404 and "unknown session 'nobody'" in body["error"]["message"]
    status, body = _post(gateway, "/s/h/v1/chat/completions", b" " * (10 << 20))  # 10 MB
    assert status == 413 and "limit" in body["error"]["message"]
    assert _post(gateway, "/s/h/v1/chat/completions", json.dumps({"messages": [], "n": 2}).encode())[0] == 400
    assert _post(gateway, "/s/h/v1/nothing/here", good)[0] == 404
    status, body = _post(gateway, "/s/h/v1/completions", json.dumps({"prompt": [10**9], "max_tokens": 1}).encode())
    assert status == 400 and "token ids must lie in" in body["error"]["message"]  # never reaches the engine
    assert not gateway.sessions.get("h").turns  # nothing refused was recorded
    with ThreadPoolExecutor(50) as pool:  # 200 concurrent calls on one session: every one answered and recorded
        statuses = list(pool.map(lambda _: _post(gateway, "/s/h/v1/chat/completions", good)[0], range(200)))
    assert statuses == [200] * 200
    assert len(gateway.close_session("h", 0.0).turns) == 200


def test_models_and_the_close_endpoint(gateway: Gateway) -> None:
    assert [m.id for m in _client(gateway, "x").models.list()] == ["clew"]
    gateway.open_session("k")
    _chat(_client(gateway, "k"), [{"role": "user", "content": "hi"}])
    status, body = _post(gateway, "/s/k/close", json.dumps({"reward": 0.5}).encode())
    assert status == 200 and body == {"session": "k", "turns": 1, "outcome": 0.5}
    assert "k" not in gateway.sessions.open_keys()


def test_a_training_gateway_caps_what_a_call_may_sample(tiny_engine: HFEngine, tiny_policy: HFPolicy) -> None:
    config = GatewayConfig(max_tokens=6, max_tokens_cap=3, seed=3, open_on_demand=True)
    with Gateway(tiny_engine, tiny_policy.tokenizer, config) as capped:
        for seed in range(4):  # the tiny model rarely stops by itself: uncapped, these run to 40 tokens
            _chat(_client(capped, f"c{seed}"), [{"role": "user", "content": "go"}], max_tokens=40, seed=seed)
        lengths = [len(capped.sessions.get(f"c{seed}").turns[0].action_ids) for seed in range(4)]
    assert max(lengths) <= 3


def test_a_training_session_draws_its_own_seeds(tiny_engine: HFEngine, tiny_policy: HFPolicy) -> None:
    """A harness with a fixed client seed (``ChatOpenAI(seed=42)``) must not make a group's members sample the
    same tokens: in a training session (its temperature set) each call's seed is the session's; served, the
    client's seed holds."""

    def sampled(gateway: Gateway, key: str) -> list[int]:
        _chat(_client(gateway, key), [{"role": "user", "content": "go"}], max_tokens=6, seed=42)
        return gateway.sessions.get(key).turns[0].action_ids

    with Gateway(tiny_engine, tiny_policy.tokenizer, GatewayConfig(max_tokens=6)) as gateway:
        for key in ("a", "b", "c", "d"):
            gateway.open_session(key, temperature=1.0 if key in "ab" else None)
        assert sampled(gateway, "a") != sampled(gateway, "b")
        assert sampled(gateway, "c") == sampled(gateway, "d")


def test_closing_an_unknown_session_opens_nothing(tiny_engine: HFEngine, tiny_policy: HFPolicy) -> None:
    config = GatewayConfig(max_tokens=2, open_on_demand=True)
    with Gateway(tiny_engine, tiny_policy.tokenizer, config) as gateway:
        assert _post(gateway, "/s/typo/close", json.dumps({"reward": 1.0}).encode())[0] == 404
        _chat(_client(gateway, "r"), [{"role": "user", "content": "go"}])
        status, _ = _post(gateway, "/s/r/close", json.dumps({"reward": 1.0, "rewards": [1.0, 2.0]}).encode())
        assert status == 400 and gateway.sessions.open_keys() == ["r"]  # refused rewards: the episode is kept
        assert len(gateway.close_session("r", 1.0).turns) == 1
