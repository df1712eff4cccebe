"""A put's ``created_at`` carried over from the key's previous record, resolved later (layer L2).

A plain put (no ``if_version``, not an update) needs nothing of the record it
replaces except its ``created_at``, and reading that record meant reading its
shard, or indexing every other writer's frames, under the append lock (issue
13). So such a put may log ``created_at`` as NaN, meaning *carried over*: the
previous record's ``created_at`` if that record was live at the put's time,
else the put's time. In memory an unresolved value is a :class:`Carried`
(never a float, so encoding one into a shard fails loudly instead of writing
a wrong time); whoever needs the number resolves it against the previous
record: the fold (it reads the shard anyway to rewrite it), a read answering
from the overlay (once, outside the append lock) and the change feed.

**The chain rule.** "The previous record" is the key's previous record *in
log order*: the previous unfolded op of the key if the log holds one (a
delete: none, so the put's own time), else the shard's record. Only that
record's header is needed (``created_at``, ``expires_at``, whether it is a
delete), never its value; when its own ``created_at`` is carried too the
chain goes one step further back (:func:`carried_from` then returns a
:class:`Carried` of the earlier put's time, which the shard resolves).

Invariant: a carried ``created_at`` resolves to the same time whoever
resolves it, before or after any fold: every resolver takes the previous
record in log order, from the log while it is unfolded and from the shard
once folded (the fold installs the resolved time, and never installs a
record over a newer one).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Carried", "Header", "carried_from", "carried_over", "frame_created", "is_carried_float"]


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


#: The header of a key's record the chain rule needs: (created_at, expires_at); None for a delete.
Header = tuple[Any, float | None] | None


def carried_over(prev: Header, as_of: float) -> Any:
    """Like :func:`carried_from`, from the previous record's :data:`Header` (its value is never needed)."""
    if prev is None:
        return as_of
    created, x = prev
    if x is not None and x <= as_of:
        return as_of
    return created


def frame_created(created: Any) -> float:
    """The ``created_at`` field of a logged put: the time, or NaN for a carried one."""
    return math.nan if isinstance(created, Carried) else float(created)


def is_carried_float(created: float) -> bool:
    """Whether a logged ``created_at`` means *carried over* (NaN)."""
    return math.isnan(created)
