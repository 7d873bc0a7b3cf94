"""rg/<dataset> rewards: number extraction, exact scoring by default, the outcome counted once by credit."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from clew.credit import CreditInput, compute
from clew.envs import HasExpert, make
from clew.envs.answers import exact_match, last_number, math_head, parse_number
from clew.rollout import RolloutConfig, ScriptedActor, Task, collect


@pytest.fixture(scope="module")
def rg() -> Any:
    return pytest.importorskip("reasoning_gym")


# --- extraction and matching (pure) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "number"),
    [
        ("6 + 0 = 6.", "6"),
        ("The total is 1,234.", "1234"),  # was "234"
        ("It is 3/4", "3/4"),  # was "4"
        ("so 3/4.", "3/4"),  # a sentence-final fraction
        ("x = \u22125", "-5"),  # U+2212 minus; was "5"
        ("about 1e3 of them", "1e3"),  # was "3"
        ("so +7", "7"),
        ("2.5e\u22123", "2.5e-3"),
        ("-0.75", "-0.75"),
        ("(-4)", "-4"),
        ("5-3=2", "2"),
        ("10-3", "3"),  # a minus after a digit is an operator, not a sign
        ("1,2345", "2345"),  # not a thousands group
        ("no digits here", ""),
    ],
)
def test_last_number_reads_signs_separators_fractions_and_exponents(reply: str, number: str) -> None:
    assert last_number(reply) == number


@pytest.mark.parametrize(
    ("answer", "gold", "match"),
    [
        ("3.0", "3", True),
        ("1,234", "1234", True),
        ("\u22123", "-3", True),
        ("-3", "3", False),  # reasoning-gym's substring credit gave 0.5
        ("14", "1", False),  # ... and 0.5 here
        ("0.75", "3/4", True),
        ("6/8", "3/4", True),  # fractions exactly
        ("1/3", "0.3333333", True),  # within the float tolerance (relative 1e-6)
        ("1/3", "0.333", False),  # outside it
        ("1e3", "1000", True),
        ("+5", "5", True),
        ("1e999999999", "1", False),  # an absurd exponent is not read as a number (it would hang)
        ("apple, banana", "apple,  banana ", True),  # text: whitespace collapsed
        ("Apple, banana", "apple, banana", False),  # case kept
        ("apple", "apple, banana", False),
    ],
)
def test_exact_match_compares_numbers_as_numbers_and_text_as_text(answer: str, gold: str, match: bool) -> None:
    assert exact_match(answer, gold) is match


@pytest.mark.parametrize("text", ["1,2345", "3/0", "1.2.3", "- 3", "", "1" * 5000])
def test_non_numbers_are_not_parsed(text: str) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("answer", "head"),
    [
        ("42 (I computed 6*7, not 43)", "42"),
        ("x = -3, so x is negative", "x = -3"),
        ("\\frac{1}{2} exactly", "\\frac{1}{2}"),
        ("sqrt(2) approximately", "sqrt(2)"),
        ("42.", "42"),
        ("The answer is 42", ""),  # prose first: the caller parses the whole answer
    ],
)
def test_math_head_stops_at_prose(answer: str, head: str) -> None:
    assert math_head(answer) == head


# --- the env ---------------------------------------------------------------------------------
# rg/chain_sum, size 10: item 1 is "4 - 1 - 7" = -4, item 2 is "1 + 5" = 6, item 8 is "484 + 229 + 297" = 1010.
@pytest.mark.parametrize(
    ("seed", "reply", "scoring", "extraction", "score"),
    [
        (2, "6", "exact", "whole_reply", 1.0),
        (2, "6.0", "exact", "whole_reply", 1.0),
        (2, "\u22126", "exact", "whole_reply", 0.0),
        (2, "\u22126", "dataset", "whole_reply", 0.5),  # "6" is in "−6": len 1 / len 2
        (2, "66", "exact", "whole_reply", 0.0),
        (2, "66", "dataset", "whole_reply", 0.5),
        (2, "The sum is 6.", "exact", "whole_reply", 0.0),
        (2, "The sum is 6.", "dataset", "whole_reply", 1 / 13),
        (2, "So 1 + 5 = 6.", "exact", "last_number", 1.0),
        (1, "\u22124", "exact", "whole_reply", 1.0),
        (1, "\u22124", "dataset", "whole_reply", 0.0),  # reasoning-gym does not read U+2212
        (1, "-4.0", "exact", "whole_reply", 1.0),
        (1, "So 4 - 1 - 7 = \u22124.", "exact", "last_number", 1.0),  # last_number read "4"
        (1, "So 4 - 1 - 7 = 4.", "exact", "last_number", 0.0),
        (8, "1,010", "exact", "whole_reply", 1.0),
        (8, "The sum is 1,010.", "exact", "last_number", 1.0),  # last_number read "010"
        (8, "1.01e3", "exact", "whole_reply", 1.0),
    ],
)
def test_rg_scores_exactly_by_default_and_partially_on_request(
    rg: Any, seed: int, reply: str, scoring: str, extraction: str, score: float
) -> None:
    env = make("rg/chain_sum", size=10, scoring=scoring, answer_extraction=extraction)
    env.reset(seed)
    result = env.step(reply)
    assert result.outcome == pytest.approx(score) and result.info["score"] == pytest.approx(score)
    assert result.reward == 0.0 and result.info["success"] is (score == 1.0)


def test_rg_text_answers_match_with_whitespace_collapsed(rg: Any) -> None:
    env = make("rg/word_sorting", size=5)
    assert isinstance(env, HasExpert)
    env.reset(0)
    gold = env.expert_action()
    assert env.step("  " + gold.replace(", ", ",   ") + "\n").outcome == 1.0
    env.reset(0)
    assert env.step(gold.rsplit(",", 1)[0]).outcome == 0.0  # a prefix: reasoning-gym gives partial credit


def test_rg_bad_scoring_and_timeout_are_refused(rg: Any) -> None:
    with pytest.raises(ValueError, match=r"scoring must be one of \('exact', 'dataset'\), got 'partial'"):
        make("rg/chain_sum", scoring="partial")
    for bad in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="verify_timeout_s must be a positive finite number"):
            make("rg/chain_sum", verify_timeout_s=bad)


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_rg_won_episode_returns_its_outcome_once(rg: Any, max_attempts: int) -> None:
    """The score was both the last step's reward and the outcome, so REINFORCE's return was 2 for a win."""
    task = Task("rg/chain_sum", 1, {"size": 10, "max_attempts": max_attempts})
    groups = collect(ScriptedActor("expert"), [task], RolloutConfig(group_size=1, max_turns=3), seed=0)
    (episode,) = groups[0].episodes
    assert (episode.outcome, episode.outcome_explicit, len(episode.turns)) == (1.0, True, 1)
    credit = compute("reinforce", CreditInput.from_groups(groups), gamma=1.0)
    assert credit.turn_return[0] == episode.outcome == 1.0


_HANGING_STEP = """
import json, threading
from clew.envs import make
env = make("rg/countdown", size=5, verify_timeout_s=1.0)
for answer in ("9**9**9**9", env.reset(0) and env.expert_action()):
    env.reset(0)
    out = []
    thread = threading.Thread(target=lambda: out.append(env.step(answer)))
    thread.start()
    thread.join()
    print(json.dumps([out[0].outcome, out[0].info]), flush=True)
"""


def test_rg_verifier_that_hangs_scores_zero_on_a_worker_thread(rg: Any) -> None:
    """countdown's score_answer hands the reply to sympy's parse_expr, which evaluates 9**9**9**9 holding the GIL.

    That would also stall this test's own join, so the step runs in a child process; a hang shows as its timeout.
    """
    try:
        run = subprocess.run([sys.executable, "-c", _HANGING_STEP], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("an env step hung in reasoning-gym's verifier")
    assert run.returncode == 0, run.stderr[-2000:]
    hung, solved = (json.loads(line) for line in run.stdout.splitlines())
    assert hung == [
        0.0,
        {"score": 0.0, "attempt": 1, "verifier_timeout": True, "success": False, "answer": "9**9**9**9"},
    ]
    assert solved[0] == 1.0 and solved[1] | {"answer": None} == {
        "score": 1.0,
        "attempt": 1,
        "success": True,
        "answer": None,
    }
