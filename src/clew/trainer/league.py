"""An opponent league for self-play (``league:``): the policy meets itself and a pool of its own past snapshots.

Every ``league.snapshot_every`` iterations the policy's weights are saved as a pool member (``<run>/league/
iter_XXXXXX``, a model directory; the pool keeps the latest ``pool_size``). Each training task is a self-play game
(``opponent: self``: both seats learn) with probability ``self_share``, else a game against one member (its
``opponent`` kwarg names the member's directory: the env seats it greedily on the ``hf`` engine,
``clew.policy.opponent``; the policy plays one seat, alternating by seed, and only its seat learns). Members are
picked uniformly (``recency``) or by prioritised fictitious self-play (``rating``: AlphaStar's "hard" weighting,
Vinyals et al., "Grandmaster level in StarCraft II using multi-agent reinforcement learning", Nature 575, 2019,
weights f(P[policy beats member]) = (1 - P)^2, so members that still beat the policy are met most). The choice is
a pure function of the run's seed, the iteration and the task's seed, so a resumed run meets the same opponents.

Ratings are Elo's (A. Elo, "The Rating of Chessplayers, Past and Present", 1978): each league game moves the policy
and the member by K * (S - E), S the policy's score (1 win, 1/2 draw or out of turns, 0 loss), E = 1 / (1 +
10^((R_member - R_policy) / 400)) its expected score, in the order the games were collected; a snapshot enters at
the policy's rating then. Self-play games rate nobody (the policy against itself). Episodes that failed as
``infra`` are no games. Ratings and pool live in the checkpoint (``league.json``); logged as ``league/*``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clew.rollout import derive_seed
from clew.store.run import atomic_dir, atomic_write_text, publish_dir
from clew.trainer.data_sections import LeagueConfig
from clew.types import Episode, Group

LEAGUE_FILE = "league.json"
SELF = "self"


def expected_score(rating: float, other: float) -> float:
    """Elo's expected score of a player rated ``rating`` against one rated ``other``."""
    return float(1.0 / (1.0 + 10.0 ** ((other - rating) / 400.0)))


def elo_update(rating: float, other: float, score: float, k: float) -> tuple[float, float]:
    """Both ratings after one game in which the first player scored ``score`` (1, 0.5 or 0)."""
    change = k * (score - expected_score(rating, other))
    return rating + change, other - change


def pfsp_weights(rating: float, others: Sequence[float]) -> list[float]:
    """AlphaStar's hard PFSP weights (1 - P[win])^2 of meeting each member, normalised (uniform if all are 0)."""
    raw = [(1.0 - expected_score(rating, other)) ** 2 for other in others]
    total = sum(raw)
    return [w / total for w in raw] if total > 0 else [1.0 / len(raw)] * len(raw)


def game_score(episode: Episode) -> float:
    """The policy's score in a league game: 1 win, 0 loss, 1/2 otherwise (a draw, out of turns)."""
    return 1.0 if episode.outcome > 0 else 0.0 if episode.outcome < 0 else 0.5


@dataclass
class Member:
    """A frozen snapshot of the policy in the pool: its model directory (relative to the run), rating and games."""

    name: str
    path: str
    rating: float
    games: int = 0


@dataclass
class League:
    """The pool, the ratings and this iteration's opponents (``task seed -> member name``)."""

    cfg: LeagueConfig
    run_dir: Path
    seed: int
    rating: float = 0.0
    games: int = 0
    members: list[Member] = field(default_factory=list)
    met: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rating = self.rating or self.cfg.initial_rating

    def task_kwargs(self, kwargs: dict[str, Any], iteration: int, seed: int) -> dict[str, Any]:
        """The task's env kwargs with its opponent: ``self`` or a pool member's directory (recorded in ``met``)."""
        rng = random.Random(derive_seed(self.seed, iteration, seed, "league"))
        if not self.members or rng.random() < self.cfg.self_share:
            return {**kwargs, "opponent": SELF}
        if self.cfg.pick == "rating":
            member = rng.choices(self.members, pfsp_weights(self.rating, [m.rating for m in self.members]))[0]
        else:
            member = rng.choice(self.members)
        self.met[seed] = member.name
        return {**kwargs, "opponent": str(self.run_dir / member.path), "seat": "alternate"}

    def record(self, groups: Sequence[Group]) -> None:
        """Rate the league games among ``groups`` (the policy's seat against a member), in order."""
        by_name = {m.name: m for m in self.members}
        for group in groups:
            member = by_name.get(self.met.get(group.seed, ""))
            if member is not None:
                for episode in group.episodes:
                    if episode.agent is None and episode.failure != "infra":
                        self._rate(member, game_score(episode))
        self.met.clear()  # a round's opponents are rated once

    def _rate(self, member: Member, score: float) -> None:
        self.rating, member.rating = elo_update(self.rating, member.rating, score, self.cfg.elo_k)
        member.games, self.games = member.games + 1, self.games + 1

    def snapshot(self, model: Any, tokenizer: Any, iteration: int) -> Member:
        """Save the policy as a pool member (the oldest leaves past ``pool_size``); it enters at the policy's rating."""
        final = self.run_dir / "league" / f"iter_{iteration:06d}"
        tmp = atomic_dir(final)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        publish_dir(tmp, final)
        member = Member(final.name, str(final.relative_to(self.run_dir)), self.rating)
        self.members = [*self.members, member][-self.cfg.pool_size :]
        return member

    def metrics(self) -> dict[str, float]:
        out = {"league/rating": self.rating, "league/games": float(self.games), "league/pool": float(len(self.members))}
        out.update({f"league/rating/{m.name}": m.rating for m in self.members})
        return out

    def save(self, folder: Path) -> None:
        state = {"rating": self.rating, "games": self.games, "members": [asdict(m) for m in self.members]}
        atomic_write_text(folder / LEAGUE_FILE, json.dumps(state))

    def load(self, folder: Path) -> None:
        path = folder / LEAGUE_FILE
        if path.exists():
            state = json.loads(path.read_text())
            self.rating, self.games = float(state["rating"]), int(state["games"])
            self.members = [Member(**m) for m in state["members"]]
