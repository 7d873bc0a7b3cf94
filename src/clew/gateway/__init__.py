"""Bring your own agent: an OpenAI-compatible gateway that records exact tokens (``Gateway``, ``clew serve``)."""

from clew.gateway.server import Gateway, GatewayConfig
from clew.gateway.sessions import Session, Sessions, UnknownSession, state_key
from clew.gateway.tools import ToolCall, parse_tool_calls

__all__ = [
    "Gateway",
    "GatewayConfig",
    "Session",
    "Sessions",
    "ToolCall",
    "UnknownSession",
    "parse_tool_calls",
    "state_key",
]
