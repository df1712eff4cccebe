"""Plain data types shared by every layer (layer L0)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = ["Consistency", "Durability", "Finding", "Item", "NamespaceLike", "Severity"]

#: A namespace as users write it: a tuple of segments or the segments joined by "/".
NamespaceLike: TypeAlias = "tuple[str, ...] | list[str] | str"

#: ``"fsync"``: a returned write is on the disk (survives power loss).
#: ``"flush"``: written to the OS, not synced (survives a process crash only).
Durability: TypeAlias = Literal["fsync", "flush"]

Severity: TypeAlias = Literal["error", "warning", "info"]

#: ``"cached"``: reads may use this process's cache (bounded by its TTL, kept
#: fresh by file-system events). ``"strict"``: every read checks the file.
Consistency: TypeAlias = Literal["cached", "strict"]


@dataclass(frozen=True, slots=True)
class Item:
    """One record as the store returns it.

    ``version`` grows with every write of the record and is never reused, even
    after a delete (it is the shard revision of the write, like etcd's
    ``mod_revision``), so ``if_version`` checks cannot be fooled by a
    delete-and-recreate. Times are seconds since the epoch.

    Example::

        item = store.get_item("agent-1/facts", "sky")
        if item is not None:
            print(item.value, item.version, item.updated_at)
    """

    namespace: tuple[str, ...]
    key: str
    value: Any
    version: int
    created_at: float
    updated_at: float
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found by :meth:`filemem.Store.check`.

    ``code`` is stable and machine-readable (``"checksum"``, ``"truncated"``,
    ``"temp-file"``, ``"unfinished-batch"``, ...); ``fixed`` says whether
    ``check(fix=True)`` repaired it, and ``action`` what it did.
    """

    code: str
    path: str
    message: str
    severity: Severity = "error"
    fixed: bool = False
    action: str = ""
    details: dict[str, Any] = field(default_factory=dict)
