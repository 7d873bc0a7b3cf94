"""dial-v0: a credit probe whose structure is set by independent dials (horizon, decisive steps, repeats, density)."""

from __future__ import annotations

import hashlib
import random

from clew.envs.base import PickledSnapshot, StepResult, ensure_running, normalize_action

ACTIONS = ("up", "down", "left", "right")
COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple")  # two per action at most
MAX_HORIZON = 200


def unit_draw(*parts: object) -> float:
    """A stable uniform number in [0, 1) from ``parts`` (blake2b: Python's ``hash`` is salted per process)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def extend_history(history: str, action: str) -> str:
    """The running digest of an episode's actions after one more (16 hex digits)."""
    return hashlib.blake2b(f"{history}|{action}".encode(), digest_size=8).hexdigest()


def cue_mapping(choices: int, cue: str, mapping_seed: int = 0) -> dict[str, str]:
    """Cue -> the way it shows. ``"arrow"``: each action is its own cue. ``"colour"``: ``2 * choices``
    colours, each action shown by exactly two of them, shuffled by ``mapping_seed``."""
    if cue == "arrow":
        return {a: a for a in ACTIONS[:choices]}
    actions = [ACTIONS[i % choices] for i in range(2 * choices)]
    random.Random(mapping_seed).shuffle(actions)
    return dict(zip(COLOURS[: 2 * choices], actions))


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"dial {name} must be in [{low:g}, {high:g}], got {value!r}")


class Dial(PickledSnapshot):
    """A trail of ``horizon`` signs, of which ``decisive`` decide the outcome; every other dial is apart.

    Each step shows ``Step t of H``, a nuisance ``Tag`` number and a sign showing a way (one of the
    ``choices`` actions ``up``, ``down``, ``left``, ``right``). At a *decisive* step the sign says that
    only its way counts: any other action makes success impossible, silently (the observation never says
    so and the episode runs on to step ``horizon``, so credit has to find the decisive steps among the
    others). At every other step the sign says that any way will do, and every valid action is
    equivalent. ``cue="arrow"`` (the default) shows the way as a word, so following the sign is one rule,
    learned from every step of a demonstration (at every horizon), and what stays hard is credit: an
    imperfect policy (an SFT start from noisy demos) must learn *where* following the sign matters.
    ``cue="colour"`` shows a colour instead and a fixed, never stated mapping gives the way (per
    ``mapping_seed``, each way shown by two colours), so the mapping must be learned too (bifurcation's
    probe). The expert follows the sign at every step. The episode always terminates at step
    ``horizon``; success means every decisive choice was right (``info["success"]`` on the last step).
    Text that is not a valid action is an invalid action (``info["invalid_action"]``): it takes its step,
    counts as a wrong choice at a decisive step and changes nothing at any other.

    The dials, each changing one thing only:

    - ``horizon`` H (2..200): the number of steps, nothing else; the decisive steps keep their number.
    - ``decisive`` k (1..H): how many steps decide the outcome. Their positions and every step's sign are
      drawn from the task seed, so every episode of a group (which shares the seed) meets the same ones,
      at places that differ between tasks. ``k = H`` makes every step decisive.
    - ``repeat`` (0..1): how often states repeat across a group. A step's tag is, with probability
      ``1 - repeat``, *episode-specific* (drawn from the digest of the episode's actions so far), else the
      *shared* tag of that task and step; the draw itself is made from the same digest. ``state_key()`` is
      ``step|sign|decisive or free|on or lost|tag``, where a shared tag is the literal ``shared`` and an
      episode-specific one the full digest, so with ``repeat=1`` two episodes at the same step that are
      both on track (or both lost) have the same key: GiGPO's anchor groups form wherever the situation
      repeats. With ``repeat=0`` every key carries the digest, and keys repeat only between episodes whose
      actions were identical so far (which are the same state in any deterministic env: a group shares its
      seed, so the env cannot tell them apart). The tag is always shown, so the policy's input looks alike
      at every ``repeat``; only its sharing changes. Whether the episode is still on track is part of the
      state key (the env's true state) but hidden from the observation.
    - ``dense`` (0..1): reward sparsity. Each right decisive choice pays ``dense / k`` at once (whether or
      not the episode is still on track: each decision's reward is its own); the last step pays the rest,
      ``1 - dense``, when the episode succeeds. A success always totals 1 and a failure
      ``dense * (right choices) / k``; ``dense=0`` pays the outcome alone, on the last step. The score is
      paid in the rewards only (``StepResult.outcome`` stays None), so it is counted once: the episode's
      outcome is the sum of its rewards.

    ``choices`` (2..4) sets how many actions are valid at each step (random play is right at a decisive
    step with probability 1 / choices; more choices also fan a group out faster at the free steps).

    Args:
        horizon: steps per episode (2..200).
        decisive: steps whose choice decides the outcome (1..horizon).
        repeat: probability that a step's tag is shared by the group (0..1).
        dense: share of the outcome paid at right decisive steps (0..1).
        choices: valid actions per step (2..4).
        cue: ``"arrow"`` (the sign names its way) or ``"colour"`` (a hidden colour -> way mapping).
        mapping_seed: seeds the colour -> way mapping (the same for every episode).
    """

    def __init__(
        self,
        horizon: int = 25,
        decisive: int = 2,
        repeat: float = 1.0,
        dense: float = 0.0,
        choices: int = 3,
        cue: str = "arrow",
        mapping_seed: int = 0,
    ) -> None:
        _in_range("horizon", horizon, 2, MAX_HORIZON)
        _in_range("decisive", decisive, 1, horizon)
        _in_range("repeat", repeat, 0.0, 1.0)
        _in_range("dense", dense, 0.0, 1.0)
        _in_range("choices", choices, 2, len(ACTIONS))
        if cue not in ("arrow", "colour"):
            raise ValueError(f"dial cue must be 'arrow' or 'colour', got {cue!r}")
        self.horizon, self.decisive, self.repeat, self.dense = int(horizon), int(decisive), float(repeat), float(dense)
        self.actions = ACTIONS[:choices]
        self.mapping, self.cue = cue_mapping(choices, cue, mapping_seed), cue
        self._finished = True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        rng = random.Random(seed)
        self.seed = seed
        self.decisive_steps = sorted(rng.sample(range(self.horizon), self.decisive))
        self.signs = [rng.choice(sorted(self.mapping)) for _ in range(self.horizon)]
        self.steps, self.on_track, self.right_choices = 0, True, 0
        self.history = extend_history("", f"seed {seed}")
        self._finished = False
        return self._render("")

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "Dial")
        act = normalize_action(action)
        info: dict[str, object] = {"decisive": self._decisive()}
        if act not in self.actions:
            info["invalid_action"] = True
        reward = self._decide(act) if self._decisive() else 0.0
        self.history = extend_history(self.history, act)
        self.steps += 1
        self._finished = self.steps >= self.horizon
        note = f"Invalid action {act[:40]!r}." if info.get("invalid_action") else ""
        if self._finished:
            info["success"] = self.on_track
            reward += (1.0 - self.dense) * self.on_track
            note = " ".join(filter(None, [note, self._verdict()]))
        return StepResult(self._render(note), reward, self._finished, False, info)

    def state_key(self) -> str:
        track = "on" if self.on_track else "lost"
        if self.steps >= self.horizon:
            return f"{self.steps}|end|{track}"
        where = f"{self.steps}|{self.signs[self.steps]}|{'decisive' if self._decisive() else 'free'}"
        return f"{where}|{track}|{'shared' if self._shared() else self.history}"

    def valid_actions(self) -> list[str]:
        return list(self.actions)

    def expert_action(self) -> str:
        """The sign's way, at every step (it is the only right one at a decisive step)."""
        return self.mapping[self.signs[self.steps]]

    # --- mechanics ------------------------------------------------------------------------
    def _decisive(self) -> bool:
        return self.steps in self.decisive_steps

    def _decide(self, act: str) -> float:
        """Score a decisive choice (keeping track of success) and return its immediate reward."""
        right = act == self.mapping[self.signs[self.steps]]
        self.on_track = self.on_track and right
        self.right_choices += right
        return self.dense / self.decisive if right else 0.0

    def _shared(self) -> bool:
        """Whether this step's tag is the group's shared one (probability ``repeat``, drawn from the history)."""
        return unit_draw(self.seed, self.steps, self.history, "repeat") >= 1.0 - self.repeat

    def _tag(self) -> int:
        source = (self.seed, self.steps) if self._shared() else (self.seed, self.steps, self.history)
        return int(unit_draw(*source, "tag") * 1000)

    def _verdict(self) -> str:
        if self.on_track:
            return "The trail is done: every sign that counted was followed."
        return f"The trail is done: {self.decisive - self.right_choices} sign(s) that counted were not followed."

    def _render(self, note: str) -> str:
        head = [note] if note else []
        if self.steps >= self.horizon:
            return "\n".join([*head, f"Step {self.horizon} of {self.horizon} is over."])
        sign = self.signs[self.steps]
        shows = f"The sign points {sign}" if self.cue == "arrow" else f"The sign is {sign}"
        rule = "only its way counts." if self._decisive() else "any way will do."
        where = f"Step {self.steps + 1} of {self.horizon}. Tag {self._tag()}. {shows}: {rule}"
        return "\n".join([*head, where, "Actions: " + ", ".join(self.actions) + "."])
