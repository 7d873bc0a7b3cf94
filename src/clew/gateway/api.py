"""The OpenAI API shapes: request fields -> sampling, completions -> response bodies and stream chunks.

Pure functions over dicts, no HTTP. Supported request fields: ``messages``/``prompt``/``input``, ``tools``,
``tool_choice`` (``auto``/``none``; ``none`` withholds the tools), ``temperature``, ``top_p``,
``max_tokens``/``max_completion_tokens``/``max_output_tokens``, ``seed``, ``logprobs``, ``stream``,
``stream_options.include_usage``, ``instructions`` (Responses), and ``stop`` (up to 4 strings): the completion
is cut after the first token whose text completes a stop string (``cut_at_stop``), so the recorded ids are a
prefix of what was sampled, each with its own log-prob, and the text ends before the stop string (OpenAI's
rule). Refused with a 400 that names the field: ``n`` other than 1 and built-in Responses tools (web search,
file search). Streaming (both APIs) sends the finished completion as its chunks or events: the engine samples
a turn whole, so a stream's first byte comes when its last token is sampled.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from clew.gateway.tools import Parsed, message_text
from clew.policy.base import Completion, SamplingParams


class BadRequest(ValueError):
    """A request the gateway refuses (HTTP 400), with the reason for the client."""


def sampling(body: dict[str, Any], eos_id: int, default_max_tokens: int) -> SamplingParams:
    if body.get("n", 1) != 1:
        raise BadRequest("n must be 1: each call is one turn of one episode (run G sessions for a group)")
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    try:
        return SamplingParams(
            temperature=float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0),
            top_p=float(body.get("top_p", 1.0) if body.get("top_p") is not None else 1.0),
            max_new_tokens=int(limit or default_max_tokens),
            stop_token_ids=(eos_id,),
        )
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"bad sampling field: {exc}") from None


def stop_strings(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None or stop == []:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not 1 <= len(stops) <= 4 or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest("stop must be a non-empty string or a list of 1 to 4 non-empty strings")
    return tuple(stops)


def cut_at_stop(completion: Completion, stops: tuple[str, ...], decode: Callable[[list[int]], str]) -> Completion:
    """The completion up to the first token whose text completes a stop string; its text ends before it."""
    if not stops or not any(s in completion.text for s in stops):
        return completion
    ids = completion.token_ids
    for k in range(1, len(ids) + 1):
        text = decode(ids[:k])
        found = [text.index(s) for s in stops if s in text]
        if found:
            entropies = completion.entropies[:k] if completion.entropies else []
            return Completion(ids[:k], completion.logprobs[:k], "stop", text[: min(found)], entropies)
    return completion


def chat_tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The request's function tools in chat shape (``tool_choice: none`` withholds them)."""
    tools = body.get("tools")
    if not tools or body.get("tool_choice") == "none":
        return None
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list")
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise BadRequest(f"only function tools are supported, got {kind!r}")
        out.append(tool if "function" in tool else {"type": "function", "function": _function_of(tool)})
    return out


def _function_of(tool: dict[str, Any]) -> dict[str, Any]:
    """A Responses-style flat tool (``name``, ``parameters`` at the top) as a chat ``function``."""
    return {k: tool[k] for k in ("name", "description", "parameters") if k in tool}


def finish_reason(completion: Completion, parsed: Parsed) -> str:
    if parsed.calls:
        return "tool_calls"
    return "length" if completion.finish_reason == "length" else "stop"


def assistant_message(parsed: Parsed) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": parsed.content if parsed.content or not parsed.calls else None,
    }
    if parsed.calls:
        message["tool_calls"] = [c.to_openai() for c in parsed.calls]
    return message


def token_logprobs(completion: Completion, pieces: list[str]) -> dict[str, Any]:
    """OpenAI's ``logprobs.content``: each sampled token, its text and log-prob (no alternatives)."""
    return {
        "content": [
            {"token": text, "logprob": float(lp), "bytes": list(text.encode()), "top_logprobs": []}
            for text, lp in zip(pieces, completion.logprobs, strict=True)
        ]
    }


def usage(prompt: list[int], completion: Completion) -> dict[str, int]:
    n_in, n_out = len(prompt), len(completion.token_ids)
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def chat_response(model: str, message: dict[str, Any], finish: str, use: dict[str, int], lp: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": lp}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "choices": [choice], "usage": use,
    }  # fmt: skip


def chat_chunks(model: str, message: dict[str, Any], finish: str, use: dict[str, int] | None) -> list[dict[str, Any]]:
    """The stream of one completion: the role, the content (and tool calls), the finish, the usage if asked."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}  # fmt: skip
    delta: dict[str, Any] = {"content": message["content"]}
    if "tool_calls" in message:
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
    ]
    if use is not None:
        chunks.append({**base, "choices": [], "usage": use})
    return chunks


def text_response(model: str, text: str, finish: str, use: dict[str, int]) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    return {
        "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
        "model": model, "choices": [choice], "usage": use,
    }  # fmt: skip


# --- /v1/responses ----------------------------------------------------------------------------------------
def responses_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Responses request's ``instructions`` and ``input`` as chat messages (function calls and their
    outputs become assistant tool calls and tool messages)."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": str(body["instructions"])})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    if not isinstance(items, list):
        raise BadRequest("input must be a string or a list of items")
    for item in items:
        _add_item(messages, item)
    return messages


def _add_item(messages: list[dict[str, Any]], item: Any) -> None:
    if not isinstance(item, dict):
        raise BadRequest(f"input items must be objects, got {type(item).__name__}")
    kind = item.get("type", "message")
    if kind == "message":
        role = {"developer": "system"}.get(item.get("role", "user"), item.get("role", "user"))
        messages.append({"role": role, "content": _parts_text(item.get("content"))})
    elif kind == "function_call":
        call = {"id": item.get("call_id", ""), "type": "function",
                "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "{}")}}  # fmt: skip
        if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
            messages[-1]["tool_calls"].append(call)
        else:
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append(
            {"role": "tool", "tool_call_id": item.get("call_id", ""), "content": str(item.get("output", ""))}
        )
    elif kind != "reasoning":  # reasoning items carry nothing this gateway's models wrote
        raise BadRequest(f"input item type {kind!r} is not supported")


def _parts_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return message_text(content)


def responses_response(model: str, parsed: Parsed, completion: Completion, use: dict[str, int]) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if parsed.content:
        text = {"type": "output_text", "text": parsed.content, "annotations": []}
        output.append({"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed",
                       "role": "assistant", "content": [text]})  # fmt: skip
    for call in parsed.calls:
        output.append({"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call.call_id,
                       "name": call.name, "arguments": call.arguments, "status": "completed"})  # fmt: skip
    status = "incomplete" if completion.finish_reason == "length" and not parsed.calls else "completed"
    return {
        "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()), "model": model,
        "status": status, "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "usage": {"input_tokens": use["prompt_tokens"], "output_tokens": use["completion_tokens"],
                  "total_tokens": use["total_tokens"], "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }  # fmt: skip


def responses_events(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished Responses object as the stream of events a streaming client reads: created, each output item
    added, its text or arguments as one delta and done, the item done, then ``response.completed`` (which
    carries the whole response, what the Agents SDK keeps)."""
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    events = [{"type": "response.created", "response": pending}, {"type": "response.in_progress", "response": pending}]
    for index, item in enumerate(response["output"]):
        events += _item_events(index, item)
    events.append({"type": "response.completed", "response": response})
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def _item_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    at = {"output_index": index, "item_id": item["id"]}
    if item["type"] == "function_call":
        opened = {**item, "arguments": "", "status": "in_progress"}
        return [
            {"type": "response.output_item.added", "output_index": index, "item": opened},
            {"type": "response.function_call_arguments.delta", **at, "delta": item["arguments"]},
            {"type": "response.function_call_arguments.done", **at, "arguments": item["arguments"]},
            {"type": "response.output_item.done", "output_index": index, "item": item},
        ]
    part, text = item["content"][0], item["content"][0]["text"]
    parts = {**at, "content_index": 0}
    return [
        {"type": "response.output_item.added", "output_index": index,
         "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **parts, "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", **parts, "delta": text, "logprobs": []},
        {"type": "response.output_text.done", **parts, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **parts, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]  # fmt: skip
