"""Which rollouts and tokens the update sees: LOOP's advantage filter and D³S's dual-level down-sampling.

Pure functions on training rows (``clew.tensors.TokenRow``); the trainer calls them between credit and update
(``clew.trainer.stages.select``), after the estimator has seen every episode, so group baselines are those of the
whole group.

D³S: Wang et al., "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for Efficient Policy
Optimization" (arXiv 2509.22115, ICLR 2026). Its code was not found; the formulas follow the paper's equations as
reported by a third-party note and the OpenReview reviews (``shared/reference/objectives.md`` section 15):

- sample level: per group, the N rollouts whose advantages have the largest variance (Var(A_S), population);
- token level: among the kept rollouts, the top K share of action tokens by |A_{i,t}| * H_{i,t}, H the policy's
  entropy at the token (only they enter the gradient);
- schedule: [N, K](p) = (1 - p) [N_init, K_init] + p [N_final, K_final], p the training progress in [0, 1].

N_init, N_final, K_init and K_final are unconfirmed in the paper (reviewers note no sensitivity analysis); clew has no
defaults for them: a run names them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from clew.tensors import TokenRow


def max_variance_subset(values: Sequence[float], n: int) -> list[int]:
    """Indices (ascending) of the ``n`` values whose population variance is largest.

    Exact in O(G n): a largest-variance subset is the k largest and n - k smallest values for some k. Proof: let S
    be optimal with mean m, x in S, y not in S, on the same side of m and farther from it (say y > x >= m). Swapping
    them changes n Var by (y - x)((y - m) + (x - m) - (y - x) / n) > 0, since y - m >= y - x > (y - x) / n: so no
    such pair exists, and S holds every value beyond each of its members. Ties keep the smallest k.
    """
    if n < 1:
        raise ValueError(f"a subset needs n >= 1 values, got n={n}")
    if n >= len(values):
        return list(range(len(values)))
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    best: list[int] = []
    best_var = -1.0
    for k in range(n + 1):
        pick = order[: n - k] + order[len(order) - k :]
        var = float(np.var([values[i] for i in pick]))
        if var > best_var + 1e-12:
            best, best_var = pick, var
    return sorted(best)


def episode_advantages(rows: Sequence[TokenRow]) -> dict[int, float]:
    """Each episode's advantage: the mean over its action tokens (all its rows). For an outcome estimator (GRPO, RLOO,
    LOOP) every token of an episode holds the same value; for step-level credit this mean stands for the episode."""
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for row in rows:
        sums[row.episode] += sum(row.advantages)
        counts[row.episode] += len(row.advantages)
    return {e: sums[e] / counts[e] if counts[e] else 0.0 for e in sums}


def select_samples(rows: Sequence[TokenRow], group_of: Sequence[int], n: int, scope: str = "group") -> list[int]:
    """D³S sample level: indices of the rows of the episodes kept by ``max_variance_subset`` of their advantages, ``n``
    per group (``scope="group"``), or ``n`` times the number of groups over the whole batch (``"batch"``: the
    paper's variant across groups, advantages as the estimator normalised them, within groups). ``group_of[e]``:
    episode e's group."""
    if scope not in ("group", "batch"):
        raise ValueError(f"scope must be 'group' or 'batch', got {scope!r}")
    adv = episode_advantages(rows)
    pools: dict[int, list[int]] = defaultdict(list)
    for episode in sorted(adv):
        pools[group_of[episode] if scope == "group" else 0].append(episode)
    per_pool = n if scope == "group" else n * len({group_of[e] for e in adv})
    kept: set[int] = set()
    for episodes in pools.values():
        kept.update(episodes[i] for i in max_variance_subset([adv[e] for e in episodes], per_pool))
    return [i for i, row in enumerate(rows) if row.episode in kept]


def keep_tokens(rows: Sequence[TokenRow], entropies: Sequence[Sequence[float]], share: float) -> list[TokenRow]:
    """D³S token level: ``loss_weights`` 1 on the top ``floor(share * tokens)`` (at least one) action tokens of all
    ``rows`` by |A| * H (``entropies[r]``: row r's entropy per action token), 0 elsewhere; ties keep the earlier
    token. The forward still runs over every token; the left-out ones get no gradient and leave the loss's counts."""
    if not 0 < share <= 1:
        raise ValueError(f"the share of tokens kept must be in (0, 1], got {share}")
    if len(entropies) != len(rows) or any(len(h) != len(r.advantages) for h, r in zip(entropies, rows)):
        raise ValueError("entropies: one value per action token of every row")
    keys = np.concatenate([np.abs(r.advantages) * np.asarray(h, dtype=np.float64) for r, h in zip(rows, entropies)])
    if keys.size == 0:
        return list(rows)
    count = max(1, math.floor(share * keys.size + 1e-9))
    keep = np.zeros(keys.size, dtype=bool)
    keep[np.argsort(-keys, kind="stable")[:count]] = True
    out, start = [], 0
    for row in rows:
        end = start + len(row.advantages)
        out.append(dataclasses.replace(row, loss_weights=keep[start:end].astype(float).tolist()))
        start = end
    return out


def drop_small_advantages(rows: Sequence[TokenRow], threshold: float) -> list[int]:
    """LOOP's rollout filter (Chen et al., arXiv 2502.01600, ``_filter_rollouts``; ``abs_adv_threshold`` 0.01):
    indices of the rows with an action token of |A| >= ``threshold`` (with outcome credit, the rows left out are the
    episodes of groups whose returns all tie). LOOP divides each minibatch's loss by its constant size; clew's
    aggregation divides by the episodes present, which differs only in a last, partial minibatch."""
    return [i for i, row in enumerate(rows) if any(abs(a) >= threshold for a in row.advantages)]


def row_entropies(
    rows: Sequence[TokenRow], entropy: np.ndarray | None, trained: np.ndarray | None = None
) -> list[list[float]] | None:
    """Each row's slice of the table's per-token entropies (``rows`` in table order covering every trained action
    token once, as ``clew.rollout.batch.to_rows`` builds them; ``trained``: the table's mask of those tokens); None
    when the engine reported none."""
    if entropy is None:
        return None
    entropy = entropy if trained is None else entropy[trained]
    bounds = np.cumsum([0] + [len(r.advantages) for r in rows])
    if bounds[-1] != len(entropy):
        raise ValueError(f"{len(entropy)} entropies for rows of {bounds[-1]} action tokens")
    return [entropy[a:b].tolist() for a, b in itertools.pairwise(bounds)]


def schedule(start: float, end: float, progress: float) -> float:
    """D³S's linear schedule: (1 - p) start + p end, p clamped to [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    return (1 - p) * start + p * end
