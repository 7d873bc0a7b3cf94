"""Counterfactual prompts for credit, built from the rows' own token ids with the run's framing: the next prompt with
an observation masked (InfoPO), the prompt with the verified answer shown (PBSD).

Only env text (an observation, a hint) is framed anew; the sampled action tokens are reused as they were sampled.
A row whose prompt is not the framing's own (a summary or memory context, a prompt built elsewhere) gets None:
the estimators count it as unscored rather than guess.
"""

from __future__ import annotations

from collections.abc import Sequence

from clew.rollout.context import Framing
from clew.types import Episode, Turn

Prompt = list[int]


def masked_observation_prompt(turn: Turn, following: Turn, framing: Framing, placeholder: str) -> Prompt | None:
    """``following``'s prompt with the observation that answered ``turn`` replaced by ``placeholder``, or None.

    Full history (and a window that keeps ``turn``): the prompt ends with the framed segment that follows
    ``turn``'s action, which is swapped. A window of the current observation only: the prompt is that
    observation opening the chat, which is re-opened with the placeholder.
    """
    prompt = following.prompt_ids
    segment = framing.after(turn.action_ids, turn.observation)
    if segment and prompt[-len(segment) :] == segment:
        return prompt[: -len(segment)] + framing.after(turn.action_ids, placeholder)
    if prompt == framing.first(turn.observation):
        return framing.first(placeholder)
    return None


def privileged_prompt(episode: Episode, t: int, framing: Framing, hint: str) -> Prompt | None:
    """Turn ``t``'s prompt with ``hint`` appended to the observation that opens the chat, or None when the prompt
    does not open with one of the episode's observations framed as the first message."""
    prompt = episode.turns[t].prompt_ids
    for text in _opening_candidates(episode, t):
        head = framing.first(text)
        if prompt[: len(head)] == head:
            return framing.first(f"{text}\n\n{hint}") + prompt[len(head) :]
    return None


def _opening_candidates(episode: Episode, t: int) -> Sequence[str]:
    """The observations that can open turn ``t``'s chat: the first, then (windows) the later ones, newest last."""
    return [episode.first_observation, *(turn.observation for turn in episode.turns[:t])]


def privileged_hint(gold_reply: str, template: str) -> str:
    """The privileged information shown to PBSD's teacher: ``template`` with ``{gold}`` the verified reply."""
    return template.replace("{gold}", gold_reply)
