"""A run's tokenizer (``tokenizers``, torch-free) and the text of each sampled token.

The tokenizer is looked up in the run directory (newest checkpoint, SFT policy, base model), then for a
registered model named in ``config.yaml`` in clew's model cache. Without one the viewer shows ids only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from tokenizers import Tokenizer

from clew.paths import model_dir

TOKENIZER_FILE = "tokenizer.json"
_EXACT_LIMIT = 1024  # longer actions are decoded token by token (prefix differences cost O(n^2))


def tokenizer_candidates(run_dir: Path) -> list[Path]:
    """Places a run's ``tokenizer.json`` may be, best first."""
    checkpoints = sorted((run_dir / "checkpoints").glob("iter_*/policy"), reverse=True)
    found = [*checkpoints, run_dir / "sft" / "policy", run_dir / "base"]
    model = _configured_model(run_dir)
    if model:
        found += [Path(model).expanduser(), model_dir(model)]
    return [p / TOKENIZER_FILE for p in found]


def _configured_model(run_dir: Path) -> str | None:
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    model = (config.get("policy") or {}).get("model")
    return str(model) if model else None


def find_tokenizer(run_dir: Path) -> Path | None:
    """The first readable candidate, or None."""
    return next((p for p in tokenizer_candidates(run_dir) if p.is_file()), None)


def load_tokenizer(path: Path | None) -> Tokenizer | None:
    """The tokenizer in ``path``; None when there is none or it does not load."""
    if path is None:
        return None
    try:
        return Tokenizer.from_file(str(path))
    except Exception:  # a corrupt or unsupported file: fall back to ids, never fail the view
        return None


def token_texts(tokenizer: Tokenizer | None, ids: Sequence[int]) -> list[str]:
    """The text each token adds to the decoded action (prefix differences); ``#id`` without a tokenizer."""
    if tokenizer is None:
        return [f"#{i}" for i in ids]
    if len(ids) > _EXACT_LIMIT:
        return [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    texts, previous = [], ""
    for n in range(1, len(ids) + 1):
        current = tokenizer.decode(list(ids[:n]), skip_special_tokens=False)
        texts.append(current[len(previous) :] if current.startswith(previous) else tokenizer.id_to_token(ids[n - 1]))
        previous = current
    return [t if t is not None else f"#{i}" for t, i in zip(texts, ids)]


def decode(tokenizer: Tokenizer | None, ids: Sequence[int]) -> str | None:
    """The full text of ``ids`` (special tokens kept: they are part of the framing), or None."""
    return None if tokenizer is None else tokenizer.decode(list(ids), skip_special_tokens=False)
