"""Anchor states for GiGPO-style step groups: exact keys, normalised observation text, similarity clusters.

GiGPO (Feng et al., "Group-in-Group Policy Optimization for LLM Agent Training", arXiv 2505.10978, Eq. 6)
forms a step-level group from the turns of one episode group that share an anchor state, an exact match of
the environment state: ``state_grouping="exact"`` keys on the env's ``state_key()``. The two other groupings
are clew's extensions, not in the paper (verl-agent's released code has an optional difflib-ratio text
similarity, see shared/reference/credit.md section 8; the rules below are clew's own):

- ``"normalized"``: the key is the observation text the turn answered after ``normalize_observation``;
  turns of one episode group with equal normalised text share an anchor group. Needs no ``state_key()``.
- ``"similarity"``: ``leader_clusters`` over a featurisation of each turn's observation, cosine >= tau
  (``state_similarity``). ``state_features="tfidf"``: ``tfidf_features`` of the normalised text over the
  batch; ``"hidden"``: the policy's hidden state at the turn's last prompt token (``CreditInput.state_vector``,
  computed by the trainer; this package stays torch-free).

Pure functions on arrays and strings. Shapes: ``N`` turn rows, ``V`` vocabulary terms, ``D`` feature dims.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Array = np.ndarray

GROUPINGS = ("exact", "normalized", "similarity")
FEATURES = ("tfidf", "hidden")
DEFAULT_SIMILARITY = 0.9
TOLERANCE = 1e-9  # cosine slack, so that tau = 1 groups identical vectors despite float rounding

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b")
_DIGITS = re.compile(r"[0-9]+")
_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"<id>|#|\w+")


def check_grouping(grouping: str, features: str, similarity: float) -> None:
    """Fail on an unknown grouping or featurisation, or a threshold outside (0, 1], naming the parameter."""
    if grouping not in GROUPINGS:
        raise ValueError(f"state_grouping must be one of {list(GROUPINGS)}, got {grouping!r}")
    if features not in FEATURES:
        raise ValueError(f"state_features must be one of {list(FEATURES)}, got {features!r}")
    if isinstance(similarity, bool) or not isinstance(similarity, (int, float)) or not 0 < similarity <= 1:
        raise ValueError(f"state_similarity must be a number in (0, 1], got {similarity!r}")


def check_grouping_params(params: Mapping[str, Any]) -> None:
    """``check_grouping`` on whichever of ``state_grouping``, ``state_features``, ``state_similarity`` are set."""
    check_grouping(
        params.get("state_grouping", GROUPINGS[0]),
        params.get("state_features", FEATURES[0]),
        params.get("state_similarity", DEFAULT_SIMILARITY),
    )


def normalize_observation(text: str) -> str:
    """The observation with volatile details masked, applied in this order:

    1. lowercase (``str.lower``);
    2. UUIDs (8-4-4-4-12 hex digits) -> ``<id>``;
    3. hex ids -> ``<id>``: ``0x`` followed by hex digits, or a standalone run of 8 or more hex digits that
       holds both a decimal digit and a letter a-f (words such as ``deadbeef`` stay words, ``12345678`` a number);
    4. every run of ASCII digits -> ``#`` (``room 12`` -> ``room #``, ``3.25`` -> ``#.#``);
    5. every run of whitespace -> one space, and none at either end.
    """
    text = _UUID.sub("<id>", text.lower())
    text = _DIGITS.sub("#", _HEX.sub("<id>", text))
    return _SPACE.sub(" ", text).strip()


def dense_text_ids(texts: Sequence[str]) -> Array:
    """(N,) int: equal strings get equal ids, 0, 1, ... in order of first appearance."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(t, len(ids)) for t in texts], dtype=np.int64)


def normalized_keys(texts: Sequence[str]) -> Array:
    """(N,) the ``"normalized"`` anchor key: a dense id of ``normalize_observation(text)`` over the batch."""
    return dense_text_ids([normalize_observation(t) for t in texts])


def tokens(normalized: str) -> list[str]:
    """Word unigrams of a normalised text: ``<id>``, ``#`` and runs of word characters; punctuation drops."""
    return _TOKEN.findall(normalized)


def tfidf_features(texts: Sequence[str]) -> Array:
    """(N, V) TF-IDF of each text's normalised word unigrams, over the ``N`` texts of the batch.

    Each text is one document (repeats count): tf = the term's count in the text, idf = ln((1 + N) / (1 + df))
    + 1 with df the number of texts holding the term (scikit-learn's smoothed idf), feature = tf * idf.
    Rows are not normalised here: ``leader_clusters`` compares directions.
    """
    docs = [tokens(normalize_observation(t)) for t in texts]
    vocab: dict[str, int] = {}
    cols = np.array([vocab.setdefault(w, len(vocab)) for doc in docs for w in doc], dtype=np.int64)
    rows = np.repeat(np.arange(len(docs)), [len(doc) for doc in docs])
    counts = np.zeros((len(docs), len(vocab)))
    np.add.at(counts, (rows, cols), 1.0)
    df = (counts > 0).sum(axis=0)
    return counts * (np.log((1 + len(docs)) / (1 + df)) + 1)


def unit_rows(vectors: Array) -> Array:
    """(N, D + 1) rows scaled to length 1; an all-zero row (a text without tokens) becomes the unit vector of
    the extra last dimension, so zero rows have cosine 1 with each other and 0 with every other row."""
    x = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    norm = np.linalg.norm(x, axis=1)
    zero = norm == 0
    scaled = x / np.where(zero, 1.0, norm)[:, None]
    return np.concatenate([scaled, zero[:, None].astype(np.float64)], axis=1)


def leader_clusters(vectors: Array, group: Array, similarity: float) -> Array:
    """(N,) cluster ids by deterministic leader clustering within each episode group, in row order.

    Cosine similarity is not transitive, so the rule fixes an order: visit the rows in order; a row joins the
    first leader of its ``group`` (earliest first) whose cosine with it is >= ``similarity`` - 1e-9, else it
    becomes a new leader. A row is compared with leaders only, never with other members. Ids are dense,
    numbered by the row index of each cluster's leader.
    """
    unit = unit_rows(vectors)
    leader_of = np.empty(len(unit), dtype=np.int64)
    leaders: dict[int, list[int]] = {}
    for i in range(len(unit)):
        mine = leaders.setdefault(int(group[i]), [])
        hits = np.flatnonzero(unit[mine] @ unit[i] >= similarity - TOLERANCE)
        if hits.size:
            leader_of[i] = mine[int(hits[0])]
        else:
            leader_of[i] = i
            mine.append(i)
    return np.unique(leader_of, return_inverse=True)[1].reshape(-1).astype(np.int64)


def similarity_keys(vectors: Array, group: Array, episode: Array, turn: Array, similarity: float) -> Array:
    """(N,) the ``"similarity"`` anchor key: ``leader_clusters`` visiting the rows in (episode, turn) order."""
    order = np.lexsort((turn, episode))
    keys = np.empty(len(order), dtype=np.int64)
    keys[order] = leader_clusters(np.asarray(vectors)[order], np.asarray(group)[order], similarity)
    return keys
