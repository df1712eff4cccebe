"""Namespaces as database text, and whole-segment prefixes as ranges (issue 16).

Invariant: two different namespaces never encode to the same text, and the
namespaces under a prefix are exactly those equal to it or in the half-open
range ``[p + "/", p + "0")`` in the "C" collation. It holds because each
segment is escaped as for a directory name (``[a-z0-9_-]`` and ``%XX``, never
``/``), and ``"0"`` is the byte right after ``"/"``. ``("tenant", "acme")``
therefore never matches ``("tenant", "acme-corp")``: ``"-"`` sorts before ``"/"``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from ..._names import escape_segment, unescape_segment

__all__ = ["INTERNAL_TEXT", "decode_ns", "encode_ns", "prefix_range"]

#: Escaped first segment of filemem's internal namespaces ("\x00internal"): never listed.
INTERNAL_TEXT: Final = escape_segment("\x00internal")


@lru_cache(maxsize=4096)
def encode_ns(namespace: tuple[str, ...]) -> str:
    """The ``ns`` column's text for a (validated) namespace.

    Cached: a pure function of a tuple of strings, called on every read and
    write, and an agent touches few namespaces (the bound keeps it small).
    """
    return "/".join(escape_segment(s) for s in namespace)


def decode_ns(text: str) -> tuple[str, ...] | None:
    """The namespace a ``ns`` value encodes (None: not one filemem wrote)."""
    out = []
    for part in text.split("/"):
        seg = unescape_segment(part)
        if seg is None:
            return None
        out.append(seg)
    return tuple(out)


def prefix_range(prefix: tuple[str, ...]) -> tuple[str, str, str] | None:
    """``(equal, low, high)``: ``ns = equal OR (ns >= low AND ns < high)``; None for the empty prefix (all)."""
    if not prefix:
        return None
    p = encode_ns(prefix)
    return p, p + "/", p + "0"
