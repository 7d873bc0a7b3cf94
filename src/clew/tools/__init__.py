"""Tools an agent calls during an episode; ``clew.tools.python.run`` is a sandboxed Python interpreter (torch-free)."""

from clew.tools.calls import ParsedAction, ToolReply, code_blocks, find_answer, format_result, parse_action
from clew.tools.python import Sandbox, SandboxUnavailable, ToolResult, UnsafeLocalWarning, run
from clew.tools.sandbox import SandboxConfig

__all__ = [
    "ParsedAction",
    "Sandbox",
    "SandboxConfig",
    "SandboxUnavailable",
    "ToolReply",
    "ToolResult",
    "UnsafeLocalWarning",
    "code_blocks",
    "find_answer",
    "format_result",
    "parse_action",
    "run",
]
