"""Grid worlds in words, shared by the Crafter and NetHack/MiniHack adapters."""

from __future__ import annotations


def offset_words(dx: int, dy: int) -> str:
    """A relative grid offset in words: ``(2, -1)`` is ``"1 north, 2 east"``; ``(0, 0)`` is ``"here"``."""
    parts = [f"{abs(dy)} {'north' if dy < 0 else 'south'}" if dy else "", f"{abs(dx)} {'west' if dx < 0 else 'east'}"
             if dx else ""]  # fmt: skip
    return ", ".join(p for p in parts if p) or "here"
