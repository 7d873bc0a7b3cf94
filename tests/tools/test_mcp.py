"""MCP tools (``clew.tools.mcp``) against a local MCP server written for the tests (``mcp_server.py``), over
stdio and streamable HTTP: schemas for the chat API, results, and every failure as an observation."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="MCP tools need the mcp SDK: pip install mcp")
from clew.tools.calls import ToolReply
from clew.tools.mcp import McpServer, McpTools, McpUnavailable

SERVER = str(Path(__file__).with_name("mcp_server.py"))


@pytest.fixture(scope="module")
def stdio_tools() -> Iterator[McpTools]:
    with McpTools(McpServer(command=sys.executable, args=(SERVER,), timeout_s=3.0)) as tools:
        yield tools


def test_stdio_tools_are_offered_as_function_tools(stdio_tools: McpTools) -> None:
    assert stdio_tools.names() == ["add", "slow", "broken"]
    add = stdio_tools.schemas()[0]
    assert add["type"] == "function" and add["function"]["name"] == "add"
    assert add["function"]["description"] == "Add two numbers."
    assert set(add["function"]["parameters"]["properties"]) == {"a", "b"}


def test_results_and_failures_are_observations(stdio_tools: McpTools) -> None:
    assert stdio_tools.call("add", {"a": 2, "b": 3}) == ToolReply("5.0")
    assert stdio_tools.call("broken").error == "tool"
    bad = stdio_tools.call("add", {"a": "x"})
    assert bad.error == "tool" and "validation" in bad.text
    assert stdio_tools.call("nope") == ToolReply(
        "error: no tool named 'nope'; tools: add, slow, broken", "unknown tool"
    )
    late = stdio_tools.call("slow", {"seconds": 30})
    assert late == ToolReply("error: tool slow timed out after 3 s", "timeout")
    assert stdio_tools.call("add", {"a": 1, "b": 1}) == ToolReply("2.0")  # the connection outlives a timeout


def test_async_calls_from_a_harness(stdio_tools: McpTools) -> None:
    async def agent() -> list[ToolReply]:
        return list(await asyncio.gather(*(stdio_tools.acall("add", {"a": i, "b": 1}) for i in range(4))))

    assert [r.text for r in asyncio.run(agent())] == ["1.0", "2.0", "3.0", "4.0"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # starts an HTTP server process (about 3 s)
def test_streamable_http_and_a_server_that_dies() -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        with McpTools(McpServer(url=f"http://127.0.0.1:{port}/mcp", timeout_s=5.0)) as tools:
            assert tools.call("add", {"a": 4, "b": 5}) == ToolReply("9.0")
            proc.kill()
            proc.wait()
            gone = tools.call("add", {"a": 1, "b": 2})
            assert gone.error in {"server", "timeout"} and gone.text.startswith("error: tool add")
    finally:
        proc.kill()


def test_an_unreachable_server_fails_at_construction() -> None:
    with pytest.raises(McpUnavailable, match="could not be used"):
        McpTools(McpServer(url=f"http://127.0.0.1:{_free_port()}/mcp", timeout_s=2.0))
    with pytest.raises(ValueError, match="give exactly one"):
        McpServer()
