"""EngineAPI: the backend-neutral part of the engine interface (layer L2).

What a Store needs from whatever keeps its records: read one record, apply a
list of :class:`~filemem._engine.Op` all or nothing, list namespaces, say
whether anything changed, check values and its own state, and close. The
file engine (:class:`filemem._engine.Engine`) implements it together with
its file-store-specific part (views, shards, batch intents, the log; see
docs/architecture.md, "The engine interface"); a PostgreSQL backend (issue
16) will implement this Protocol and nothing file-shaped.

Invariant: nothing here names a file, a shard, a lock or a log. A method
added here must make sense for a database as well as for a directory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .._shard import Record
from .._types import Durability
from ..codecs import Codec
from ._ops import Op


class EngineAPI(Protocol):
    """The storage a Store reads and writes through, whatever keeps it.

    Example (the file engine satisfies it)::

        from filemem._engine import Engine, EngineAPI

        backend: type[EngineAPI] = Engine
    """

    #: Where the store lives (a directory, or a backend's name for its database).
    root: str
    #: The codec values are encoded with (sizes and limits are measured in it).
    codec: Codec
    durability: Durability
    readonly: bool
    max_value_bytes: int
    closed: bool
    #: Named event counts for stats() (e.g. "shard_writes", "log_commits").
    counters: dict[str, int]
    #: Called with the ops of every committed apply; must not raise.
    after_apply: Callable[[list[Op]], None] | None

    def check_open(self) -> None:
        """Raise StoreClosedError if closed; reset per-process state after a fork."""
        ...

    def check_value(self, value: Any, key: str | None = None) -> bytes | None:
        """Raise InvalidValueError, before any I/O, if ``value`` (as ``key``'s record) cannot be stored.

        May return the value's encoding by ``codec`` (handed on in ``Op.encoded``).
        """
        ...

    def read(self, namespace: tuple[str, ...], key: str, *, fresh_ok: bool = False) -> Record | None:
        """The live record for ``key``; None if absent or expired (``fresh_ok``: a cached answer will do)."""
        ...

    def apply(self, ops: list[Op]) -> list[Any]:
        """Apply ``ops`` all or nothing; one result per op (put: version, delete: bool, update: value)."""
        ...

    def list_namespaces(self, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Namespaces at or under ``prefix`` that hold at least one record, sorted."""
        ...

    def namespace_exists(self, namespace: tuple[str, ...]) -> bool:
        """Whether ``namespace`` may hold records (a cheap check; False means surely empty)."""
        ...

    def changed(self) -> bool:
        """Whether another writer may have committed since this process last looked (cheap, no I/O ideally)."""
        ...

    def close(self) -> None:
        """Release everything; further use raises StoreClosedError. Idempotent."""
        ...
