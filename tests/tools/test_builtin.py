"""The built-in tools as function tools: the sandboxed interpreter and the calculator, replies and failures."""

from __future__ import annotations

import asyncio
import shutil
import warnings

import pytest

from clew.tools import UnsafeLocalWarning
from clew.tools.builtin import BuiltinTools
from clew.tools.calls import ToolReply


def test_calculator_and_the_tool_contract() -> None:
    tools = BuiltinTools(("calculator",))
    assert tools.names() == ["calculator"] and tools.schemas()[0]["function"]["parameters"]["required"] == [
        "expression"
    ]
    assert tools.call("calculator", {"expression": "(2 + 3) * 4"}) == ToolReply("20")
    assert tools.call("calculator", {"expression": "1 / 0"}) == ToolReply("error: division by zero", "expression")
    assert tools.call("calculator", {}).error == "arguments"
    assert tools.call("python", {"code": "print(1)"}).error == "unknown tool"
    assert asyncio.run(tools.acall("calculator", {"expression": "2 ** 10"})) == ToolReply("1024")
    with pytest.raises(ValueError, match=r"no built-in tool\(s\) \['shell'\]"):
        BuiltinTools(("shell",))


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="the sandbox needs bubblewrap")
def test_python_runs_in_the_sandbox() -> None:
    tools = BuiltinTools(("python",), timeout_s=2.0)
    assert tools.call("python", {"code": "print(sum(range(10)))"}) == ToolReply("stdout:\n45")
    failed = tools.call("python", {"code": "raise ValueError('no')"})
    assert failed.error == "program" and "ValueError: no" in failed.text
    slow = tools.call("python", {"code": "while True: pass"})
    assert slow.error == "program" and "time limit" in slow.text


def test_python_without_a_sandbox_warns() -> None:
    tools = BuiltinTools(("python",), unsafe_local=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeLocalWarning)
        assert tools.call("python", {"code": "print('hi')"}).text == "stdout:\nhi"
