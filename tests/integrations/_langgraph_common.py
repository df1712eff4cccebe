"""Shared pieces of the LangGraph adapter tests: a deterministic fake embedding."""

from __future__ import annotations

from collections.abc import Sequence

DIMS = 6


def toy_embed(texts: Sequence[str]) -> list[list[float]]:
    """A deterministic embedding of letter counts: similar texts score alike, no model, no network."""
    out = []
    for text in texts:
        t = text.lower()
        out.append([t.count(c) + 0.1 * i for i, c in enumerate("aeiost")])
    return out
