"""Actors choose each episode's next action, one request at a time: a model engine or a scripted agent.

A request is ``submit(key, prompt, env, seed)``; ``poll()`` returns the requests that have finished
since the last poll. Each request's ``seed`` alone decides its sample, so an episode's actions do not
depend on which other requests were in flight with it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from clew.envs import Env, HasExpert, HasSeats, HasValidActions
from clew.policy.base import Completion, Engine, SamplingParams, Streams

UNBOUNDED_MODEL_LEN = 1 << 62  # actors without a context limit


class Actor(Protocol):
    """Takes action requests one by one and hands back the finished ones.

    Attributes the scheduler reads: ``max_model_len``, the longest prompt + completion it serves (``collect``
    stops an episode whose next prompt would not fit); ``continuous_batching``, whether requests join a running
    batch (else the scheduler gathers them into waves); ``writes_context_edits``, whether it can write a context
    edit (a summary) when the context strategy asks for one (else the edit is empty).
    """

    @property
    def max_model_len(self) -> int: ...

    @property
    def continuous_batching(self) -> bool: ...

    @property
    def writes_context_edits(self) -> bool: ...

    def submit(self, key: int, prompt: list[int], env: Env, seed: int) -> None: ...

    def poll(self) -> Sequence[tuple[int, Completion | Exception]]:
        """The requests that finished (possibly none); an exception marks a request that was lost."""
        ...

    def pending(self) -> int: ...


@dataclass
class PolicyActor:
    """Samples actions from a model engine; ids and log-probs are exactly the engine's.

    A streaming engine (``Streams``) gets every request as it comes; any other engine gets the
    requests buffered since the last ``poll`` as one ``generate`` call.
    """

    engine: Engine
    params: SamplingParams
    max_model_len: int = field(init=False)
    continuous_batching: bool = field(init=False)
    writes_context_edits: bool = field(init=False, default=True)
    _stream: Streams | None = field(init=False, repr=False)
    _buffer: list[tuple[int, list[int], int]] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        self.max_model_len = int(self.engine.max_model_len)
        self.continuous_batching = bool(self.engine.continuous_batching)
        self._stream = self.engine if isinstance(self.engine, Streams) else None

    def submit(self, key: int, prompt: list[int], env: Env, seed: int) -> None:
        if self._stream is not None:
            self._stream.submit(key, prompt, self.params, seed)
        else:
            self._buffer.append((key, list(prompt), seed))

    def poll(self) -> Sequence[tuple[int, Completion | Exception]]:
        if self._stream is not None:
            return self._stream.poll()
        batch, self._buffer = self._buffer, []
        if not batch:
            return []
        outs = self.engine.generate([b[1] for b in batch], self.params, [b[2] for b in batch])
        return [(b[0], c) for b, c in zip(batch, outs, strict=True)]

    def pending(self) -> int:
        return self._stream.pending() if self._stream is not None else len(self._buffer)


@dataclass
class SeatActors:
    """A team: one actor per seat of a game (``roles``), each request going to the actor of the seat to act
    (``env.to_act()``; an env without seats asks seat 0's). Budgets are the tightest of the team's."""

    actors: Sequence[Actor]
    max_model_len: int = field(init=False)
    continuous_batching: bool = field(init=False)
    writes_context_edits: bool = field(init=False)

    def __post_init__(self) -> None:
        self.max_model_len = min(int(a.max_model_len) for a in self.actors)
        self.continuous_batching = all(a.continuous_batching for a in self.actors)
        self.writes_context_edits = all(a.writes_context_edits for a in self.actors)

    def submit(self, key: int, prompt: list[int], env: Env, seed: int) -> None:
        seat = env.to_act() if isinstance(env, HasSeats) and env.seats() > 1 else 0
        if seat >= len(self.actors):
            raise ValueError(f"seat {seat} is to act, but the team has {len(self.actors)} policies (roles)")
        self.actors[seat].submit(key, prompt, env, seed)

    def poll(self) -> Sequence[tuple[int, Completion | Exception]]:
        return [done for actor in self.actors for done in actor.poll()]

    def pending(self) -> int:
        return sum(actor.pending() for actor in self.actors)


@dataclass
class ScriptedActor:
    """The env's scripted expert, a uniformly random valid action, or an expert with noise.

    With ``noise > 0`` each action is replaced by a random valid one with that probability (an
    imperfect demonstrator for SFT warm starts). Action ids are the encoded text + eos (these
    are demonstrations, not samples, so their log-probs are recorded as 0). Every request draws
    from ``random.Random(seed)``; its action is decided at ``submit``. An env without what the
    actor plays (``HasExpert`` for expert play, ``HasValidActions`` for random play or noise) is
    refused with a ``ValueError`` naming the fix; ``check(env)`` refuses it before any work.
    """

    kind: str = "expert"
    noise: float = 0.0
    tokenizer: Any = None
    max_model_len: ClassVar[int] = UNBOUNDED_MODEL_LEN
    continuous_batching: ClassVar[bool] = True  # nothing to gain from batching scripted actions
    writes_context_edits: ClassVar[bool] = False  # no scripted summaries: a summary context cuts with an empty one
    _done: list[tuple[int, Completion]] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("expert", "random"):
            raise ValueError(f"scripted policy must be 'expert' or 'random', got {self.kind!r}")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {self.noise}")

    def check(self, env: Env) -> None:
        """Raise ``ValueError`` when ``env`` lacks what this actor plays (call it before any work)."""
        name = type(env).__name__
        if self.kind == "expert" and not isinstance(env, HasExpert):
            raise ValueError(
                f"expert play needs expert_action(), which {name} does not have: add it to {name} (see "
                "clew.envs.HasExpert), or use --policy random or a model (clew eval) / sft.enabled=false (clew train)"
            )
        if self.kind == "random" and not isinstance(env, HasValidActions):
            raise ValueError(
                f"random play needs valid_actions(), which {name} does not have: add it to {name} (see "
                "clew.envs.HasValidActions), or use --policy expert or a model"
            )
        if self.noise > 0 and not isinstance(env, HasValidActions):
            raise ValueError(
                f"noisy expert demos (noise={self.noise}) need valid_actions(), which {name} does not have: "
                f"add it to {name} (see clew.envs.HasValidActions) or set sft.noise=0"
            )

    def submit(self, key: int, prompt: list[int], env: Env, seed: int) -> None:
        self.check(env)
        self._done.append((key, self._one(env, random.Random(seed))))

    def poll(self) -> list[tuple[int, Completion]]:
        done, self._done = self._done, []
        return done

    def pending(self) -> int:
        return len(self._done)

    def _one(self, env: Env, rng: random.Random) -> Completion:
        if self.kind == "expert" and rng.random() >= self.noise and isinstance(env, HasExpert):
            text = str(env.expert_action())
        elif isinstance(env, HasValidActions):
            text = str(rng.choice(env.valid_actions()))
        else:  # unreachable: submit checked the env
            raise AssertionError(f"{type(env).__name__} cannot serve {self.kind} play")
        ids: list[int] = []
        if self.tokenizer is not None:
            ids = list(self.tokenizer.encode(text, add_special_tokens=False)) + [self.tokenizer.eos_token_id]
        return Completion(ids, [0.0] * len(ids), "stop", text)
