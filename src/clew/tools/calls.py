"""Tool calls inside agent actions: find ``<code>...</code>`` blocks and answers, format results as observations.

Pure functions over text (no sandbox here): an env parses the action, runs the code through
``clew.tools.python`` and shows ``format_result(result)`` as the next observation. Malformed or
failing code is never an exception for the caller: it is an observation the agent reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clew.tools.python import ToolResult

_CODE = re.compile(r"<code>(.*?)</code>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANSWER_PREFIX = re.compile(r"^\s*answer\s*:(.*)$", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class ToolReply:
    """What a function-tool call gave (``clew.tools.builtin``, ``clew.tools.mcp``): ``text`` for the agent to
    read; ``error`` says why it failed (None when it did not)."""

    text: str
    error: str | None = None


@dataclass(frozen=True)
class ParsedAction:
    """What an action asks for: ``code`` blocks to run, a final ``answer``, or neither (``error`` says why)."""

    code: tuple[str, ...] = ()
    answer: str | None = None
    error: str | None = None


def code_blocks(action: str) -> list[str]:
    """Every ``<code>...</code>`` block (or, failing those, fenced ```python blocks), in order, dedented."""
    found = _CODE.findall(action) or _FENCE.findall(action)
    return [_dedent(block) for block in found]


def _dedent(block: str) -> str:
    lines = block.strip("\n").splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in lines).strip() + "\n"


def find_answer(action: str) -> str | None:
    """The text of ``<answer>X</answer>`` or of a leading ``answer: X``; None when there is neither."""
    tagged = _ANSWER_TAG.search(action)
    if tagged:
        return tagged.group(1).strip()
    prefixed = _ANSWER_PREFIX.match(action)
    return prefixed.group(1).strip() if prefixed else None


def parse_action(action: str) -> ParsedAction:
    """Code wins over an answer in the same action (the agent must read the result first)."""
    blocks = code_blocks(action)
    if blocks:
        if not any(b.strip() for b in blocks):
            return ParsedAction(error="the <code> block is empty")
        return ParsedAction(code=tuple(blocks))
    if "<code>" in action.lower():
        return ParsedAction(error="a <code> block is not closed with </code>")
    answer = find_answer(action)
    if answer is not None:
        return ParsedAction(answer=answer) if answer else ParsedAction(error="the answer is empty")
    return ParsedAction(error="expected <code>...</code> or 'answer: ...'")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, keeping head and tail, with the number of characters left out."""
    if len(text) <= limit:
        return text
    head = max(limit * 2 // 3, 1)
    tail = max(limit - head, 0)
    dropped = len(text) - head - tail
    return f"{text[:head]}\n...[{dropped} characters cut]...\n{text[len(text) - tail :] if tail else ''}"


def format_result(result: ToolResult, limit: int = 800) -> str:
    """The observation for one call: stdout, then stderr (an exception's traceback), then why it stopped."""
    parts = []
    if result.stdout.strip():
        parts.append(f"stdout:\n{clip(result.stdout.rstrip(), limit)}")
    if result.stderr.strip():
        parts.append(f"stderr:\n{clip(_last_lines(result.stderr.rstrip()), limit)}")
    if result.timed_out:
        parts.append(f"[stopped: time limit, after {result.wall_s:.1f} s]")
    elif result.truncated:
        parts.append("[stopped: too much output]")
    elif result.exit_code != 0:
        parts.append(f"[exit code {result.exit_code}]")
    return "\n".join(parts) if parts else "(no output)"


def _last_lines(text: str, keep: int = 6) -> str:
    """A traceback's last lines say what went wrong; the frames above them rarely help a model."""
    lines = text.splitlines()
    return "\n".join(lines[-keep:])
