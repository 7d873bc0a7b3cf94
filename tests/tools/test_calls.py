"""Tool calls in actions: the <code> parser, answers, and the observation formatter."""

from __future__ import annotations

from clew.tools import ToolResult, code_blocks, find_answer, format_result, parse_action
from clew.tools.calls import clip


def test_code_blocks_in_order_and_dedented() -> None:
    action = "First <code>\n    x = 2\n    print(x)\n</code> then <CODE>print(3)</CODE>"
    assert code_blocks(action) == ["x = 2\nprint(x)\n", "print(3)\n"]
    assert code_blocks("```python\nprint(1)\n```") == ["print(1)\n"]
    assert code_blocks("no code here") == []


def test_answers_tagged_or_prefixed() -> None:
    assert find_answer("<answer> 42 </answer>") == "42"
    assert find_answer("Answer: -3.5") == "-3.5"
    assert find_answer("the answer: 7") is None  # only a leading 'answer:' counts
    assert find_answer("42") is None


def test_parse_action_code_wins_and_malformed_is_an_error() -> None:
    assert parse_action("<code>print(1)</code> answer: 1").code == ("print(1)\n",)
    assert parse_action("answer: 12").answer == "12"
    assert parse_action("<code>print(1)").error == "a <code> block is not closed with </code>"
    assert parse_action("<code>  </code>").error == "the <code> block is empty"
    assert parse_action("answer:").error == "the answer is empty"
    assert parse_action("I think it is 5").error == "expected <code>...</code> or 'answer: ...'"


def test_clip_keeps_head_and_tail() -> None:
    assert clip("abc", 5) == "abc"
    # limit 9: head 6 ("012345"), tail 3 ("xyz"), 26 - 9 = 17 characters cut
    assert clip("012345" + "-" * 17 + "xyz", 9) == "012345\n...[17 characters cut]...\nxyz"


def test_format_result_covers_output_errors_and_stops() -> None:
    assert format_result(ToolResult("5\n", "", 0)) == "stdout:\n5"
    assert format_result(ToolResult("", "", 0)) == "(no output)"
    tb = "Traceback (most recent call last):\n" + "  frame\n" * 20 + "ZeroDivisionError: division by zero\n"
    shown = format_result(ToolResult("", tb, 1))
    assert shown.endswith("ZeroDivisionError: division by zero\n[exit code 1]") and shown.count("frame") == 5
    assert (
        format_result(ToolResult("x", "", -9, timed_out=True, wall_s=2.0))
        == "stdout:\nx\n[stopped: time limit, after 2.0 s]"
    )
    assert format_result(ToolResult("y" * 50, "", -9, truncated=True), limit=10).endswith("[stopped: too much output]")
