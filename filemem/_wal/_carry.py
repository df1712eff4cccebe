"""A put's ``created_at`` carried over from the key's previous record, resolved later (layer L2).

A plain put (no ``if_version``, not an update) needs nothing of the record it
replaces except its ``created_at``, and reading that record meant reading its
shard under the append lock (a cold shard parse per key: issue 13). So such a
put may log ``created_at`` as NaN, meaning *carried over*: the previous
record's ``created_at`` if that record was live at the put's time, else the
put's time. In memory an unresolved value is a :class:`Carried` (never a
float, so encoding one into a shard fails loudly instead of writing a wrong
time); whoever needs the number resolves it against the previous record: the
fold (it reads the shard anyway to rewrite it) and a read answering from the
overlay (once, outside the append lock).

Invariant: a writer logs a carried ``created_at`` only for a key the log holds
no unfolded record of (or whose previous op is in the same batch), so the
previous record of a carried op is in the shards, or earlier in its own batch.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Carried", "carried_from", "frame_created", "is_carried_float"]


class Carried:
    """An unresolved ``created_at``: the previous record's if it was live at ``as_of``, else ``as_of``."""

    __slots__ = ("as_of",)

    def __init__(self, as_of: float) -> None:
        self.as_of = as_of

    def __repr__(self) -> str:
        return f"Carried({self.as_of!r})"

    def resolve(self, prev: dict[str, Any] | None) -> Any:
        """The value, given the key's previous record (None: absent or deleted)."""
        return carried_from(prev, self.as_of)


def carried_from(prev: dict[str, Any] | None, as_of: float) -> Any:
    """``created_at`` of a put at ``as_of`` over ``prev``: its ``created_at`` if live then, else ``as_of``.

    May return a :class:`Carried` when ``prev``'s own value is still unresolved.
    """
    if prev is None:
        return as_of
    x = prev.get("expires_at")
    if x is not None and x <= as_of:
        return as_of
    return prev["created_at"]


def frame_created(created: Any) -> float:
    """The ``created_at`` field of a logged put: the time, or NaN for a carried one."""
    return math.nan if isinstance(created, Carried) else float(created)


def is_carried_float(created: float) -> bool:
    """Whether a logged ``created_at`` means *carried over* (NaN)."""
    return math.isnan(created)
