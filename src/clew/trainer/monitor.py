"""A reward-hacking and degeneracy monitor: detectors over what the run already records (its ``iteration`` and
``eval`` records), never touching rewards. On by default (``monitor``); each detector has its threshold in config.

Every iteration each detector gives ``monitor/<name>`` 1 (tripped) or 0. A detector that trips is logged as a
``monitor`` record and a warning the first time (and again after it cleared); ``clew view`` plots ``monitor/*`` with
the other curves; ``monitor.stop_on`` names detectors that stop the run (the summary says which). Detectors compare
the last ``window`` iterations with the first ``window`` (so they need 2 x window iterations) unless noted:

- ``length_drift``: generated tokens per env action grew by more than ``length_drift`` (a share);
- ``repetition``: in the last window, more than ``repetition`` of the word 3-grams of an env action repeat an earlier
  one of the same action (a rewarded phrase said over and over);
- ``zero_variance``: more than ``zero_variance`` of the last window's groups had one outcome for all members;
- ``invalid_rise``: the invalid-action rate rose by more than ``invalid_rise`` (absolute);
- ``entropy_collapse``: the policy's entropy fell below ``entropy_collapse`` of its first window's;
- ``reward_without_heldout``: training success rose by more than ``reward_without_heldout`` while the held-out
  success of the last evaluation is no higher than the first's (needs two evaluations).

- ``source_disagreement``: the share of episodes where a judge's verdict (score >= 0.5) and the verifier's success
  disagree (``rewards/disagreement``) rose by more than ``source_disagreement`` (a policy pleasing its judge);
- ``turn_drift``: turns per episode grew by more than ``turn_drift`` (a share) while training success did not rise
  (a policy paid per step by a process judge that likes its steps takes more of them: measured in the judge study);
- ``judge_failures``: more than ``judge_failures`` of the last window's judgements failed (timeouts, crashes,
  unparsable twice: a policy that learns to break its judge shows up here, per policy version);
- ``guard_stall``: the step guard (``train.guard_max_kl``) rejected more than ``guard_stall`` of the last window's
  optimizer steps: the policy has stopped moving while the run goes on. Seen on the credit map (horizon-100,
  GiGPO seed 0): after a step that put a few probe tokens from p ~ 1 to p ~ 0.3, every later step, even at an
  eighth of the rate, put them back near 1 and read as a large KL, and 19 iterations went by without an update.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clew.trainer.data_sections import MONITOR_DETECTORS as DETECTORS
from clew.trainer.data_sections import MonitorConfig

Record = dict[str, Any]


def _mean(records: Sequence[Record], key: str) -> float | None:
    values = [float(r[key]) for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _halves(records: Sequence[Record], window: int) -> tuple[Sequence[Record], Sequence[Record]] | None:
    return (records[:window], records[-window:]) if len(records) >= 2 * window else None


def _rose(records: Sequence[Record], window: int, key: str) -> float | None:
    """The last window's mean of ``key`` minus the first window's (None: too few records or values)."""
    halves = _halves(records, window)
    if halves is None:
        return None
    first, last = _mean(halves[0], key), _mean(halves[1], key)
    return None if first is None or last is None else last - first


def length_drift(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    halves = _halves(records, cfg.window)
    first = _mean(halves[0], "rollout/action_tokens") if halves else None
    last = _mean(halves[1], "rollout/action_tokens") if halves else None
    return bool(first and last is not None and last / first - 1 > cfg.length_drift)


def repetition(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    share = _mean(records[-cfg.window :], "rollout/ngram_repetition") if len(records) >= cfg.window else None
    return share is not None and share > cfg.repetition


def zero_variance(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    share = _mean(records[-cfg.window :], "rollout/zero_variance_share") if len(records) >= cfg.window else None
    return share is not None and share > cfg.zero_variance


def invalid_rise(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    rise = _rose(records, cfg.window, "rollout/invalid_action_rate")
    return rise is not None and rise > cfg.invalid_rise


def entropy_collapse(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    halves = _halves(records, cfg.window)
    first = _mean(halves[0], "policy/entropy") if halves else None
    last = _mean(halves[1], "policy/entropy") if halves else None
    return bool(first and last is not None and last < cfg.entropy_collapse * first)


def reward_without_heldout(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    rise = _rose(records, cfg.window, "rollout/success_rate")
    held = [float(e["eval/success_rate"]) for e in evals if e.get("eval/success_rate") is not None]
    return rise is not None and len(held) >= 2 and rise > cfg.reward_without_heldout and held[-1] <= held[0]


def source_disagreement(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    rise = _rose(records, cfg.window, "rewards/disagreement")
    return rise is not None and rise > cfg.source_disagreement


def judge_failures(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    share = _mean(records[-cfg.window :], "rewards/judge_failed_share") if len(records) >= cfg.window else None
    return share is not None and share > cfg.judge_failures


def turn_drift(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    halves = _halves(records, cfg.window)
    first = _mean(halves[0], "rollout/mean_turns") if halves else None
    last = _mean(halves[1], "rollout/mean_turns") if halves else None
    success = _rose(records, cfg.window, "rollout/success_rate")
    grew = bool(first and last is not None and last / first - 1 > cfg.turn_drift)
    return grew and (success is None or success <= 0)


def guard_stall(records: Sequence[Record], evals: Sequence[Record], cfg: MonitorConfig) -> bool:
    last = records[-cfg.window :] if len(records) >= cfg.window else []
    rejected = sum(float(r.get("train/rejected_steps") or 0) for r in last)
    accepted = sum(float(r.get("train/optimizer_steps") or 0) for r in last)
    return rejected > 0 and rejected / (rejected + accepted) > cfg.guard_stall


CHECKS: dict[str, Callable[[Sequence[Record], Sequence[Record], MonitorConfig], bool]] = {
    name: globals()[name] for name in DETECTORS
}


@dataclass
class Monitor:
    """The run's records so far and which detectors are tripped."""

    cfg: MonitorConfig
    records: list[Record] = field(default_factory=list)
    evals: list[Record] = field(default_factory=list)
    tripped: set[str] = field(default_factory=set)

    @classmethod
    def from_records(cls, cfg: MonitorConfig, records: Sequence[Record]) -> Monitor:
        """A monitor that has seen a run's ``metrics.jsonl`` records (a resumed run)."""
        monitor = cls(cfg)
        for record in records:
            if record.get("kind") == "eval":
                monitor.evals.append(record)
            elif record.get("kind") == "iteration":
                monitor.records.append(record)
        monitor.tripped = {name for name in DETECTORS if CHECKS[name](monitor.records, monitor.evals, cfg)}
        return monitor

    def observe(self, record: Record, evals: Sequence[Record] = ()) -> tuple[dict[str, float], list[str]]:
        """Add an iteration's record (and evaluations since the last one); the ``monitor/*`` flags and the detectors
        that tripped now (warned once until they clear)."""
        self.records.append(record)
        self.evals.extend(evals)
        now = {name for name in DETECTORS if CHECKS[name](self.records, self.evals, self.cfg)}
        fresh = sorted(now - self.tripped)
        for name in fresh:
            warnings.warn(f"monitor: {name} tripped at iteration {record.get('iteration')}", stacklevel=2)
        self.tripped = now
        return {f"monitor/{name}": float(name in now) for name in DETECTORS}, fresh

    def stops(self) -> list[str]:
        """The tripped detectors that ``monitor.stop_on`` names."""
        return sorted(self.tripped & set(self.cfg.stop_on))
