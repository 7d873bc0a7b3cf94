"""Tools served by MCP servers (the ``mcp`` SDK, 2.x) as tools of an env or a harness.

``McpTools(McpServer(command=..., args=...))`` starts a stdio server as a subprocess; ``McpServer(url=...)``
connects to a streamable-HTTP one. The connection lives in a background event loop of its own, so both
sync code (an env's ``step``) and async code (a harness) use it:

- ``schemas()``: the server's tools as OpenAI function tools (``{"type": "function", "function": {name,
  description, parameters}}``), ready for a chat call's ``tools=`` (and so for the gateway's template);
- ``call(name, arguments)`` / ``await acall(...)``: a ``ToolReply`` whose ``text`` is what the agent reads
  next. Nothing here raises at the agent: an unknown tool, arguments the server rejects, a tool that fails
  (``is_error`` from the server), a call past ``timeout_s`` and a server that died are all results with
  ``error`` set and a one-line explanation as the text, for the env or harness to show as the observation
  (and to penalise, if it wants, through ``info["invalid_action"]``).

A server that cannot be started or reached at all fails in the constructor (``McpUnavailable``), naming it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clew.tools.calls import ToolReply

T = TypeVar("T")


class McpUnavailable(RuntimeError):
    """The MCP server could not be started or reached."""


@dataclass(frozen=True)
class McpServer:
    """A stdio server (``command`` + ``args``, ``env`` added to a minimal environment) or a streamable-HTTP one
    (``url``, e.g. ``http://127.0.0.1:8000/mcp``); ``timeout_s`` bounds each call."""

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server is a command (stdio) or a url (streamable HTTP): give exactly one")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")

    @property
    def name(self) -> str:
        return self.url or " ".join([self.command or "", *self.args])


class McpTools:
    """One MCP server's tools, connected until ``close`` (or the end of a ``with`` block)."""

    def __init__(self, server: McpServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="clew-mcp", daemon=True)
        self._thread.start()
        self._client: Any = None
        try:
            self._tools = self._run(self._open(), timeout=max(60.0, server.timeout_s))
        except Exception as exc:
            self.close()
            raise McpUnavailable(f"MCP server {server.name} could not be used: {type(exc).__name__}: {exc}") from exc

    async def _open(self) -> list[Any]:
        import mcp
        from mcp.client.stdio import get_default_environment

        target: Any = self.server.url
        if self.server.command is not None:
            env = {**get_default_environment(), **self.server.env}  # the SDK's minimal environment, plus ours
            target = mcp.StdioServerParameters(command=self.server.command, args=list(self.server.args), env=env)
        self._client = mcp.Client(target, read_timeout_seconds=self.server.timeout_s)
        await self._client.__aenter__()
        listed = await self._client.list_tools()
        return list(listed.tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [
            {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema or {"type": "object"}}}
            for t in self._tools
        ]  # fmt: skip

    def names(self) -> list[str]:
        return [t.name for t in self._tools]

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> ToolReply:
        """Call a tool from sync code (an env); never raises for the tool's or the server's failures."""
        return self._run(self._call(name, arguments or {}), timeout=self.server.timeout_s + 5.0)

    async def acall(self, name: str, arguments: dict[str, Any] | None = None) -> ToolReply:
        """The same from async code (a harness): the call runs on the connection's own loop."""
        future = asyncio.run_coroutine_threadsafe(self._call(name, arguments or {}), self._loop)
        return await asyncio.wrap_future(future)

    async def _call(self, name: str, arguments: dict[str, Any]) -> ToolReply:
        if name not in self.names():
            return ToolReply(f"error: no tool named {name!r}; tools: {', '.join(self.names())}", "unknown tool")
        try:
            result = await asyncio.wait_for(self._client.call_tool(name, arguments), self.server.timeout_s)
        except TimeoutError:
            return ToolReply(f"error: tool {name} timed out after {self.server.timeout_s:g} s", "timeout")
        except Exception as exc:  # the server rejected the call or died: the agent reads why
            return ToolReply(f"error: tool {name} failed: {type(exc).__name__}: {exc}"[:1000], "server")
        text = "\n".join(getattr(part, "text", "") or str(part) for part in result.content)
        return ToolReply(text, "tool" if result.is_error else None)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):  # the server may already be gone: closing is best effort
                self._run(client.__aexit__(None, None, None), timeout=10.0)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> McpTools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
