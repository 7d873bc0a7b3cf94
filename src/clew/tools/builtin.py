"""clew's own tools as OpenAI function tools: ``python`` (the sandboxed interpreter) and ``calculator``.

``BuiltinTools()`` offers the same interface as ``clew.tools.mcp.McpTools``: ``schemas()`` for a chat call's
``tools=`` (so the gateway renders them into the model's template), ``call(name, arguments)`` from sync code
and ``await acall(...)`` from a harness, each returning a ``ToolReply`` whose ``text`` is the agent's next
observation. ``python`` runs ``code`` in a fresh bubblewrap sandbox (``clew.tools.python``: no network, a
time and memory limit; its reply is ``format_result``'s stdout / stderr / why it stopped); ``calculator``
evaluates an arithmetic ``expression`` exactly as the ``toolcalc-v0`` env does. Bad arguments, an unknown
tool, a program that fails and an expression that does not parse are replies with ``error`` set, never
exceptions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from clew.tools.calculator import CalcError, evaluate, format_number
from clew.tools.calls import ToolReply, format_result
from clew.tools.python import Sandbox, run

PYTHON: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run a Python program (standard library only, no network) and return what it printed.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "the program"}},
                       "required": ["code"]},
    },
}  # fmt: skip
CALCULATOR: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}


class BuiltinTools:
    """The built-in tools (``python``, ``calculator``, or a subset); ``sandbox`` reuses a warm ``Sandbox`` pool,
    ``unsafe_local`` runs Python without the sandbox (tests on machines without bubblewrap only)."""

    def __init__(
        self, names: tuple[str, ...] = ("python", "calculator"), timeout_s: float = 5.0,
        sandbox: Sandbox | None = None, unsafe_local: bool = False,
    ) -> None:  # fmt: skip
        known = {"python": PYTHON, "calculator": CALCULATOR}
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"no built-in tool(s) {unknown}; built-in: {sorted(known)}")
        self._schemas = [known[n] for n in names]
        self.timeout_s, self.sandbox, self.unsafe_local = timeout_s, sandbox, unsafe_local

    def schemas(self) -> list[dict[str, Any]]:
        return list(self._schemas)

    def names(self) -> list[str]:
        return [s["function"]["name"] for s in self._schemas]

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> ToolReply:
        arguments = arguments or {}
        if name not in self.names():
            return ToolReply(f"error: no tool named {name!r}; tools: {', '.join(self.names())}", "unknown tool")
        field = "code" if name == "python" else "expression"
        value = arguments.get(field)
        if not isinstance(value, str) or not value.strip():
            return ToolReply(f"error: {name} needs a non-empty string argument {field!r}", "arguments")
        return self._python(value) if name == "python" else _calculate(value)

    async def acall(self, name: str, arguments: dict[str, Any] | None = None) -> ToolReply:
        return await asyncio.to_thread(self.call, name, arguments)

    def _python(self, code: str) -> ToolReply:
        if self.sandbox is not None:
            result = self.sandbox.run(code, timeout_s=self.timeout_s)
        else:
            result = run(code, timeout_s=self.timeout_s, unsafe_local=self.unsafe_local)
        failed = result.timed_out or result.truncated or result.exit_code != 0
        return ToolReply(format_result(result), "program" if failed else None)


def _calculate(expression: str) -> ToolReply:
    try:
        return ToolReply(format_number(evaluate(expression)))
    except CalcError as exc:
        return ToolReply(f"error: {exc}", "expression")
