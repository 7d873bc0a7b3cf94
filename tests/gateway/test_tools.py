"""Tool calls: the ``<tool_call>`` parser by hand, the default rendering for templates without tool syntax, and
the API shapes (chat, streaming, Responses) through the OpenAI SDK, with a scripted engine that answers each
call with a given text (a test double: what it samples is fixed, so the shapes can be checked exactly)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from clew.gateway import Gateway, GatewayConfig, parse_tool_calls
from clew.gateway.tools import as_plain_messages, tool_system_prompt
from clew.policy import Completion, HFPolicy, SamplingParams

openai = pytest.importorskip("openai", reason="the gateway tests drive it with the OpenAI SDK: pip install openai")

ADD = {
    "type": "function",
    "function": {"name": "add", "description": "add two numbers",
                 "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}},
}  # fmt: skip


class Scripted:
    """Answers the i-th call with ``texts[i]`` encoded by the tokenizer, then the end-of-turn id."""

    max_model_len, continuous_batching = 4096, False

    def __init__(self, tokenizer: Any, texts: list[str]) -> None:
        self.tokenizer, self.texts, self.prompts = tokenizer, list(texts), []  # type: ignore[var-annotated]

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]:
        out = []
        for prompt in prompts:
            self.prompts.append(list(prompt))
            text = self.texts.pop(0)
            ids = [*self.tokenizer.encode(text, add_special_tokens=False), self.tokenizer.eos_token_id]
            out.append(Completion(ids, [-0.5] * len(ids), "stop", text))
        return out

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None: ...

    def close(self) -> None: ...


# --- the parser, by hand ---------------------------------------------------------------------------------
def test_parse_tool_calls() -> None:
    parsed = parse_tool_calls('Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>')
    assert parsed.content == "Let me add." and not parsed.malformed
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [("add", {"a": 2, "b": 3})]
    two = parse_tool_calls(
        '<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call><tool_call>{"name": "b"}</tool_call>'
    )
    assert [(c.name, c.arguments) for c in two.calls] == [("a", '{"x": 1}'), ("b", "{}")] and two.content == ""
    for bad in ['<tool_call>{"name": 3}</tool_call>', "<tool_call>{oops}</tool_call>", "<tool_call>{\"name\": \"a\"}",
                '<tool_call>{"name": "a", "arguments": [1]}</tool_call>']:  # fmt: skip
        broken = parse_tool_calls(bad)
        assert broken.malformed and not broken.calls and broken.content == bad  # the text goes back as it was
    plain = parse_tool_calls("no tools here")
    assert plain.content == "no tools here" and not plain.calls and not plain.malformed


def test_plain_rendering_for_templates_without_tool_syntax() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "add 2 and 3"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
        {"role": "tool", "tool_call_id": "c2", "content": "6"},
    ]
    plain = as_plain_messages(messages, [ADD])
    assert plain[0] == {"role": "system", "content": "Be brief.\n\n" + tool_system_prompt([ADD])}
    assert plain[2] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>',
    }
    assert plain[3] == {
        "role": "user",
        "content": "<tool_response>\n5\n</tool_response>\n<tool_response>\n6\n</tool_response>",
    }
    assert len(plain) == 4  # consecutive tool results share one user turn


# --- the API shapes through the SDK ------------------------------------------------------------------------
CALL_TEXT = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'


def _serve(policy: HFPolicy, texts: list[str]) -> tuple[Gateway, Scripted]:
    engine = Scripted(policy.tokenizer, texts)
    return Gateway(engine, policy.tokenizer, GatewayConfig(open_on_demand=True)), engine


def test_chat_tool_calls_round_trip(tiny_policy: HFPolicy) -> None:
    gateway, engine = _serve(tiny_policy, [CALL_TEXT, "The sum is 5."])
    with gateway:
        client = openai.OpenAI(base_url=gateway.base_url("t"), api_key="unused", max_retries=0)
        messages: list[dict[str, Any]] = [{"role": "user", "content": "add 2 and 3"}]
        first = client.chat.completions.create(model="m", messages=messages, tools=[ADD])
        call = first.choices[0].message.tool_calls[0]
        assert first.choices[0].finish_reason == "tool_calls" and first.choices[0].message.content is None
        assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2, "b": 3}
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "5"}]  # fmt: skip
        second = client.chat.completions.create(model="m", messages=messages, tools=[ADD])
        assert second.choices[0].message.content == "The sum is 5." and second.choices[0].finish_reason == "stop"
        turns = gateway.sessions.get("t").turns
    shown = tiny_policy.tokenizer.decode(engine.prompts[1])
    assert "<tool_call>" in shown and "<tool_response>\n5\n</tool_response>" in shown and "<tools>" in shown
    assert turns[1].info["segment_start"] is False  # the call written back as sampled: the prompt extends it
    assert [t.info["tool_calls"] for t in turns] == [1, 0]


def test_a_malformed_call_is_text_and_a_flagged_turn(tiny_policy: HFPolicy) -> None:
    gateway, _ = _serve(tiny_policy, ['<tool_call>{"name": </tool_call>'])
    with gateway:
        client = openai.OpenAI(base_url=gateway.base_url("m"), api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], tools=[ADD])
        turn = gateway.sessions.get("m").turns[0]
    assert (
        reply.choices[0].message.content == '<tool_call>{"name": </tool_call>'
        and not reply.choices[0].message.tool_calls
    )
    assert turn.info["malformed_tool_call"] and turn.info["invalid_action"]  # shaping charges the penalty


def test_streamed_tool_calls_and_usage(tiny_policy: HFPolicy) -> None:
    gateway, _ = _serve(tiny_policy, [CALL_TEXT])
    with gateway:
        client = openai.OpenAI(base_url=gateway.base_url("s"), api_key="unused", max_retries=0)
        chunks = list(client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], tools=[ADD], stream=True,
            stream_options={"include_usage": True},
        ))  # fmt: skip
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant" and deltas[1].tool_calls[0].function.name == "add"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert (
        chunks[-1].usage.completion_tokens == len(tiny_policy.tokenizer.encode(CALL_TEXT, add_special_tokens=False)) + 1
    )


def test_responses_api_function_calls_round_trip(tiny_policy: HFPolicy) -> None:
    gateway, engine = _serve(tiny_policy, [CALL_TEXT, "It is 5."])
    flat = {"type": "function", "name": "add", "description": "add", "parameters": ADD["function"]["parameters"]}
    with gateway:
        client = openai.OpenAI(base_url=gateway.base_url("r"), api_key="unused", max_retries=0)
        first = client.responses.create(model="m", instructions="Use tools.", input="add 2 and 3", tools=[flat])
        call = first.output[0]
        assert call.type == "function_call" and call.name == "add" and json.loads(call.arguments) == {"a": 2, "b": 3}
        items = [{"role": "user", "content": "add 2 and 3"}, call.model_dump(exclude_none=True),
                 {"type": "function_call_output", "call_id": call.call_id, "output": "5"}]  # fmt: skip
        second = client.responses.create(model="m", instructions="Use tools.", input=items, tools=[flat])
        assert second.output_text == "It is 5." and second.usage.output_tokens > 0
        assert len(gateway.sessions.get("r").turns) == 2
    assert "Use tools." in tiny_policy.tokenizer.decode(engine.prompts[0])


def test_responses_api_streams_its_events(tiny_policy: HFPolicy) -> None:
    gateway, _ = _serve(tiny_policy, [CALL_TEXT, "It is 5."])
    flat = {"type": "function", "name": "add", "description": "add", "parameters": ADD["function"]["parameters"]}
    with gateway:
        client = openai.OpenAI(base_url=gateway.base_url("rs"), api_key="unused", max_retries=0)
        calls = list(client.responses.create(model="m", input="add 2 and 3", tools=[flat], stream=True))
        with client.responses.stream(model="m", input="and now?") as stream:  # the SDK's helper assembles the text
            text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
            final = stream.get_final_response()
    kinds = [e.type for e in calls]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in calls] == list(range(len(calls)))
    done = next(e for e in calls if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"a": 2, "b": 3} and calls[-1].response.output[0].name == "add"
    assert text == "It is 5." and final.output_text == "It is 5." and final.usage.output_tokens > 0


def test_llama3_and_mistral_formats() -> None:
    from clew.gateway.tools import tool_format

    llama = parse_tool_calls('<|python_tag|>{"name": "add", "parameters": {"a": 2, "b": 3}}', "llama3_json")
    assert [(c.name, json.loads(c.arguments)) for c in llama.calls] == [("add", {"a": 2, "b": 3})]
    two = parse_tool_calls('{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}', "llama3_json")
    assert [c.name for c in two.calls] == ["a", "b"] and two.content == ""
    assert parse_tool_calls("The answer is 5.", "llama3_json") == parse_tool_calls("The answer is 5.")
    assert parse_tool_calls('{"name": "add", "parameters": ', "llama3_json").malformed
    mistral = parse_tool_calls('Sure. [TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}]', "mistral")
    assert mistral.content == "Sure." and [c.name for c in mistral.calls] == ["add"]
    assert parse_tool_calls("[TOOL_CALLS][{oops", "mistral").malformed
    assert parse_tool_calls("no call", "mistral").calls == []
    shell = parse_tool_calls('{"name": "sh", "parameters": {"cmd": "ls; pwd"}}', "llama3_json")
    assert [json.loads(c.arguments) for c in shell.calls] == [{"cmd": "ls; pwd"}]  # a ";" inside a string is text
    answer = parse_tool_calls('{"name": "Alice", "age": 3}', "llama3_json")  # JSON, but no call: no parameters
    assert not answer.calls and not answer.malformed
    huge = "9" * 5000  # past Python's int-parsing digit limit: json.loads raises ValueError, not JSONDecodeError
    assert parse_tool_calls(f'<tool_call>{{"name": "a", "arguments": {{"x": {huge}}}}}</tool_call>').malformed
    assert parse_tool_calls(f'[TOOL_CALLS][{{"name": "a", "arguments": {{"x": {huge}}}}}]', "mistral").malformed
    assert tool_format("{{ '[TOOL_CALLS]' }}") == "mistral"
    assert tool_format("{{- '<|python_tag|>' }}") == "llama3_json"
    assert tool_format("{% if tools %}<tool_call>{% endif %}") == "hermes"
    with pytest.raises(ValueError, match="unknown tool-call format"):
        parse_tool_calls("x", "xml")


def test_stop_strings_cut_the_recorded_ids_to_a_sampled_prefix(tiny_policy: HFPolicy) -> None:
    text = "Thought: I add.\nObservation: 5"
    gateway, _ = _serve(tiny_policy, [text, text])
    with gateway:
        client = openai.OpenAI(base_url=gateway.base_url("st"), api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stop=["Observation:"]
        )
        turn = gateway.sessions.get("st").turns[0]
        with pytest.raises(openai.BadRequestError, match="stop must be"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stop=["a"] * 5)
    full = [*tiny_policy.tokenizer.encode(text, add_special_tokens=False), tiny_policy.eos_id]
    assert reply.choices[0].message.content == "Thought: I add.\n" and reply.choices[0].finish_reason == "stop"
    assert full[: len(turn.action_ids)] == turn.action_ids and len(turn.action_ids) < len(full)  # a sampled prefix
    assert "Observation:" in tiny_policy.tokenizer.decode(turn.action_ids)  # the cut is after the completing token
    assert "Observation:" not in tiny_policy.tokenizer.decode(turn.action_ids[:-1])
    assert len(turn.behavior_logprobs) == len(turn.action_ids)


def test_stop_strings_cut_the_content_of_a_tool_reply_too(tiny_policy: HFPolicy) -> None:
    gateway, _ = _serve(tiny_policy, ["Let me think.\nObservation: 5"])
    with gateway:
        client = openai.OpenAI(base_url=gateway.base_url("ts"), api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], tools=[ADD], stop=["Observation:"]
        )
    assert reply.choices[0].message.content == "Let me think.\n"  # as without tools: up to the stop string


class Failing(Scripted):
    def generate(self, prompts: Any, params: SamplingParams, seeds: Any) -> list[Completion]:
        raise ValueError("the engine broke")


def test_engine_and_template_failures_are_told_apart(tiny_policy: HFPolicy) -> None:
    """An engine that raises is the gateway's failure (503: a harness records it as ``infra``); a template that
    cannot render the messages is the request's (400)."""
    with Gateway(Failing(tiny_policy.tokenizer, []), tiny_policy.tokenizer, GatewayConfig(open_on_demand=True)) as gw:
        client = openai.OpenAI(base_url=gw.base_url("f"), api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="the engine broke"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    strict = copy.deepcopy(tiny_policy.tokenizer)
    strict.chat_template = "{{ raise_exception('roles must alternate') }}"
    with Gateway(Scripted(strict, ["hi"]), strict, GatewayConfig(open_on_demand=True)) as gw:
        client = openai.OpenAI(base_url=gw.base_url("t"), api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="roles must alternate"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
