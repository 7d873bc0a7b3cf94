"""Answers in policy replies: numbers read as numbers, exact matching against a gold answer, math before prose.

Pure functions over text, used by the verifier envs (``rg/*``, ``tir/*``):

- ``last_number(reply)`` finds the reply's last number with its sign (``-``, U+2212 ``−``, ``+``),
  thousands separators (``1,234``), decimals, scientific notation (``1e3``) and fractions (``3/4``),
  written back in plain form (``−1,234`` -> ``-1234``).
- ``parse_number(text)`` reads a whole string as an exact ``Fraction``, remembering whether it was
  written as a float (a decimal point or an exponent).
- ``exact_match(answer, gold)`` compares two numbers as numbers (``3.0 == 3``, ``1,234 == 1234``,
  fractions exactly, a relative tolerance of ``FLOAT_RTOL`` only where one side is a float) and
  anything else as text with whitespace collapsed.
- ``math_head(text)`` is the math expression an answer starts with, before trailing prose
  (``42 (I computed 6*7, not 43)`` -> ``42``).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

FLOAT_RTOL = Fraction(1, 10**6)
FLOAT_ATOL = Fraction(1, 10**9)
MAX_EXPONENT = 1000  # 1e1000 is still cheap as a Fraction; 1e999999999 would hang the process

_SIGNS = "+\\-\u2212"
_INT = r"(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)"  # 1,234,567 only with full groups of three
_UNSIGNED = rf"(?:{_INT}/{_INT}(?!\.?\d)|(?:{_INT}(?:\.\d+)?|\.\d+)(?:[eE][{_SIGNS}]?\d+)?)"
# A sign counts only where it cannot be a binary minus: not after a word character, ')' or ']'.
_NUMBER = re.compile(rf"(?:(?<![\w)\]])[{_SIGNS}])?{_UNSIGNED}")
_WHOLE_NUMBER = re.compile(rf"[{_SIGNS}]?{_UNSIGNED}")

# A leading math expression: numbers, one-letter variables, a few function names, LaTeX commands, operators.
_MATH_TOKEN = re.compile(
    r"\s*(?:\\[A-Za-z]+|(?:sqrt|pi|sin|cos|tan|log|ln|exp|infty|inf|oo)(?![A-Za-z])|[A-Za-z](?![A-Za-z])"
    r"|\d+(?:[.,]\d+)*|\*\*|[-\u2212+*/^=().,{}\[\]_$%!|<>\\])"
)
_TRAILING = " \t\n.,;:"


class Number(NamedTuple):
    """A number read from text: its exact ``value`` and whether it was written as a float."""

    value: Fraction
    is_float: bool


def plain_number(text: str) -> str:
    """``text`` (one number as ``last_number`` finds it) without separators, with an ASCII sign and no '+'."""
    return text.replace(",", "").replace("\u2212", "-").removeprefix("+")


def last_number(reply: str) -> str:
    """The last number in ``reply`` in plain form (``"x = −1,234."`` -> ``"-1234"``); ``""`` when there is none."""
    found = _NUMBER.findall(reply)
    return plain_number(found[-1]) if found else ""


def parse_number(text: str) -> Number | None:
    """``text`` (all of it, stripped) as a number; None when it is not one or its exponent is absurd."""
    text = text.strip()
    if not _WHOLE_NUMBER.fullmatch(text):
        return None
    plain = plain_number(text)
    exponent = re.search(r"[eE]([-+]?\d+)", plain)
    if exponent and abs(int(exponent.group(1))) > MAX_EXPONENT:
        return None
    try:
        value = Fraction(plain)
    except (ValueError, ZeroDivisionError):  # 3/0, or more digits than int() reads
        return None
    return Number(value, is_float=bool(re.search(r"[.eE]", plain)))


def numbers_equal(a: Number, b: Number) -> bool:
    """Exact equality, or ``|a - b| <= max(FLOAT_RTOL * max(|a|, |b|), FLOAT_ATOL)`` when either is a float."""
    if not (a.is_float or b.is_float):
        return a.value == b.value
    scale = max(abs(a.value), abs(b.value))
    return abs(a.value - b.value) <= max(FLOAT_RTOL * scale, FLOAT_ATOL)


def normalize_text(text: str) -> str:
    """Whitespace trimmed and collapsed to single spaces; case and punctuation kept."""
    return " ".join(text.split())


def exact_match(answer: str, gold: str) -> bool:
    """Numbers compared as numbers when both sides are one, otherwise whitespace-normalised text equality."""
    a, g = parse_number(answer), parse_number(gold)
    if a is not None and g is not None:
        return numbers_equal(a, g)
    return normalize_text(answer) == normalize_text(gold)


def math_head(text: str) -> str:
    """The math expression ``text`` starts with, cut before the first word of prose; ``""`` when it starts with prose.

    ``"42 (I computed 6*7, not 43)"`` -> ``"42"``; ``"x = -3, so ..."`` -> ``"x = -3"``; ``"\\frac{1}{2}"`` stays.
    A parenthesis left open where the prose began is cut with what follows it.
    """
    end = 0
    while match := _MATH_TOKEN.match(text, end):
        if match.end() == end:
            break
        end = match.end()
    head = text[:end].rstrip(_TRAILING)
    while (cut := _unclosed(head)) is not None:
        head = head[:cut].rstrip(_TRAILING)
    return head


def _unclosed(text: str) -> int | None:
    """Index of the first '(' or '[' that is never closed in ``text``, None when all are."""
    opened: list[int] = []
    for i, char in enumerate(text):
        if char in "([":
            opened.append(i)
        elif char in ")]" and opened:
            opened.pop()
    return opened[0] if opened else None
