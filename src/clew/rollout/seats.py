"""An episode in flight (``Live``) and games whose every seat the policy plays (self-play; ``clew.envs.HasSeats``).

A game gives one ``Live`` per seat, sharing the env: each has its own episode (``Episode.agent``, the game's id in
``Episode.match``), history, context strategy and group (``group_id``: seat 0 the task's usual group, each further
seat a block of ``len(tasks)`` ids after). ``clew.rollout.loop`` samples only the seat to act.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from clew.envs import Env, HasSeats, StepResult
from clew.policy.base import Completion
from clew.rollout.config import RolloutConfig
from clew.rollout.context import ContextStrategy, History
from clew.rollout.endings import close, fail, record_outcome
from clew.rollout.tasks import Task
from clew.types import Episode, FailureType


@dataclass
class Live:
    """An episode in flight: ``member`` is its index in the group; ``action`` the completion being stepped."""

    episode: Episode
    env: Env
    history: History
    context: ContextStrategy  # this episode's own strategy instance: it holds the episode's edit state
    member: int
    prompt: list[int] = field(default_factory=list)
    action: Completion | None = None
    state: str | None = None  # the env's state key when ``action`` was sampled (its turn is built after the step)
    edit_prompt: list[int] | None = None  # the context strategy asked for an edit (a summary) before the next action
    editing: bool = False  # the request at the actor is that edit
    acted: int = 0  # env actions so far (context edits do not count against max_turns)
    seats: list[Live] | None = field(default=None, repr=False, compare=False)  # a game's seats, this one among them
    waiting: bool = False  # a seat whose move is not next
    unseen: bool = False  # a seat whose last move's turn waits for what it sees next
    key: int = -1  # its index in the scheduler's list


def group_id(base: int, tasks: int, seat: int) -> int:
    """The group of a task's seat: ``base`` (the task's group) for seat 0, one block of ``tasks`` ids per seat after."""
    return base + seat * tasks


def finished_game(done: Mapping[tuple[int, int], Episode], ids: Callable[[int], int], member: int) -> list[Episode]:
    """The member's episodes that ended before (a resumed rollout): its episode, or every seat's of its game; none
    when a game was recorded for only some of its seats (it is played again)."""
    first = done.get((ids(0), member))
    if first is None or first.match is None:
        return [first] if first is not None else []
    seats = [first]
    while (more := done.get((ids(len(seats)), member))) is not None and more.match == first.match:
        seats.append(more)
    return seats if len(seats) > 1 else []


def seated(
    task: Task, env: Env, first: str, ids: Callable[[int], int], member: int, cfg: RolloutConfig
) -> list[tuple[Episode, Live | None]]:
    """One episode and item per seat of a game; the seat to act has seen ``first``, the others wait for theirs."""
    assert isinstance(env, HasSeats)
    if task.prefix:
        raise ValueError("a game whose seats the policy plays cannot replay a prefix (no branching in self-play)")
    acting, game = env.to_act(), f"{task.task_id}/{ids(0)}/{member}"
    seats = []
    for seat in range(env.seats()):
        episode = Episode(task.task_id, ids(seat), task.seed, agent=seat, match=game)
        episode.first_observation = first if seat == acting else ""
        history = History([first] if seat == acting else [])
        seats.append(Live(episode, env, history, cfg.context.make(), member, waiting=seat != acting))
    for item in seats:
        item.seats = seats
    return [(item.episode, item) for item in seats]


def end_game(seats: Sequence[Live], result: StepResult, verdicts: Sequence[float]) -> None:
    """Every seat's episode ends as the game did; its last move sees the last message, its verdict is its outcome."""
    for seat, item in enumerate(seats):
        episode = item.episode
        if item.unseen:
            episode.turns[-1].observation, item.unseen = result.observation, False
        episode.terminated, episode.truncated = result.terminated, result.truncated
        episode.truncation_reason = "env" if result.truncated else None
        record_outcome(episode, 0.0, float(verdicts[seat]))
        if episode.turns:
            episode.turns[-1].info["success"] = verdicts[seat] > 0


def close_game(item: Live, reason: str) -> None:
    """A budget ends the item's episode, or every seat's of its game."""
    for other in item.seats or [item]:
        close(other.episode, reason)


def fail_game(item: Live, exc: Exception, failure: FailureType) -> None:
    """The item's episode fails with ``failure``; the other seats of its game (cut short by it) as ``infra``."""
    for other in item.seats or [item]:
        fail(other.episode, exc, failure if other is item else "infra")
