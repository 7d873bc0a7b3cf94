"""A small MCP server for the tests (the ``mcp`` SDK's MCPServer): ``add``, ``slow`` (sleeps) and ``broken``
(raises). Run as ``python mcp_server.py`` for stdio, ``python mcp_server.py http PORT`` for streamable HTTP."""

from __future__ import annotations

import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("clew-test-tools")


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then say so."""
    time.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def broken() -> str:
    """Always fails."""
    raise ValueError("this tool is broken")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", port=int(sys.argv[2]))
    else:
        server.run("stdio")
