"""The backend protocol: what ``Store`` needs of the storage under it (issue 16).

Invariant: ``Store`` (and through it ``AsyncStore``, the memory kinds, the
CLI) reaches storage only through a :class:`StoreBackend`: records in,
records out, one ``apply`` per atomic group of writes. It never asks which
backend it has; where a feature exists on one backend only, the backend's
``features`` set says so and the other backend's ``engine``/``fresh``/
``searcher`` are :class:`Unsupported` stand-ins that raise
``UnsupportedFeatureError`` naming the feature on first use.

The protocol sits at the Store's level, not at the file engine's: the
engine's interface speaks of views, shards, the log and its fold, which a
server does not have. The file backend adapts the engine to this protocol;
the PostgreSQL backend implements it on SQL (docs/architecture.md).

Records are the engine's record dicts: ``{"value", "version",
"created_at", "updated_at"[, "expires_at"]}``. Ops are ``filemem._engine.Op``
(namespace, key, kind put/delete/update, value, ttl, if_version, fn).
``apply`` returns, per op: put -> the new version, delete -> whether the
key was there, update -> the new value.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Protocol

from .._engine import Op
from .._errors import UnsupportedFeatureError
from .._feed import Change, Subscription
from .._search import SearchHit
from .._sessions import SessionHub
from .._shard import Record
from .._types import Consistency, Durability, Finding, Item, NamespaceLike
from ..codecs import Codec

__all__ = ["ReadView", "StoreBackend", "Unsupported"]


class ReadView(Protocol):
    """A consistent read view (``Store.snapshot()``), whatever the backend."""

    def get(self, namespace: NamespaceLike, key: str, default: Any = None) -> Any: ...
    def get_item(self, namespace: NamespaceLike, key: str) -> Item | None: ...
    def items(self, namespace: NamespaceLike) -> list[Item]: ...
    def keys(self, namespace: NamespaceLike) -> list[str]: ...
    def close(self) -> None: ...
    def __enter__(self) -> ReadView: ...
    def __exit__(self, *exc: object) -> None: ...


class StoreBackend(Protocol):
    """The storage under one ``Store`` object."""

    @property
    def name(self) -> str:
        """``"file"`` or ``"postgres"``: for messages and stats, never for branching."""
        ...

    @property
    def location(self) -> str:
        """What the store is at: a directory, or the server URL (password left out) and schema."""
        ...

    @property
    def codec(self) -> Codec: ...
    @property
    def durability(self) -> Durability: ...
    @property
    def readonly(self) -> bool: ...
    @property
    def features(self) -> frozenset[str]:
        """Features beyond the data API: "search", "scan", "sessions", "collector", "health"."""
        ...

    #: The file engine, its freshness machinery and search index, for the
    #: file-only features; ``Unsupported`` stand-ins on other backends.
    @property
    def engine(self) -> Any: ...
    @property
    def fresh(self) -> Any: ...
    @property
    def searcher(self) -> Any: ...
    @property
    def collector_engine(self) -> Any:
        """What collectors journal beside and apply to: the engine, or a local journal directory over the server."""
        ...

    def check_open(self) -> None: ...
    def warm(self) -> None:
        """Start now what would start on first use (the file watcher), e.g. off an event loop."""
        ...

    def check_value(self, value: Any, key: str | None = None) -> tuple[str, bytes] | None:
        """Raise InvalidValueError now if ``value`` cannot be stored.

        May return (codec name, the value's encoding), for ``Op.encoded``: the commit then does not encode it again.
        """
        ...

    def get(self, namespace: NamespaceLike, key: str, default: Any, consistency: Consistency | None) -> Any: ...
    def get_hot(self, namespace: NamespaceLike, key: str, missing: Any) -> Any: ...
    def read_record(self, ns: tuple[str, ...], key: str, consistency: Consistency | None) -> Record | None: ...
    def live(self, ns: tuple[str, ...]) -> dict[str, Record]: ...
    def keys(self, ns: tuple[str, ...]) -> list[str]: ...
    def list_namespaces(self, prefix: tuple[str, ...]) -> list[tuple[str, ...]]: ...
    def apply(self, ops: list[Op]) -> list[Any]: ...
    def prepare_update(self, op: Op) -> None: ...
    def snapshot(self) -> ReadView: ...
    def scan(self, ns: tuple[str, ...], batch_size: int) -> Generator[list[Item], None, None]: ...
    def search(
        self,
        prefix: tuple[str, ...],
        query: str | None,
        filter: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        vector: Sequence[float] | str | None,
    ) -> list[SearchHit]: ...
    def subscribe(
        self, callback: Callable[[Change], object], prefix: tuple[str, ...], max_queue: int
    ) -> Subscription: ...
    def subscribe_async(self, prefix: tuple[str, ...], max_queue: int) -> Subscription: ...
    def session_hub(self) -> SessionHub:
        """A new hub of this store's sessions (the Store keeps one, made on first use)."""
        ...

    def check(self, fix: bool) -> list[Finding]: ...
    def compact(self) -> dict[str, int]: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


#: Store methods that are plumbing, not features: skipped when naming the feature.
_PLUMBING = frozenset({"__getattr__", "_sessions", "_ns", "check_open", "_require"})


class Unsupported:
    """Stands in for a file-only part (engine, watcher, search index) on another backend.

    Any attribute use raises ``UnsupportedFeatureError`` naming the nearest
    public function on the call stack that needed it (``search``,
    ``session``, ``collector``, ``namespace_info``, ...): the feature as the
    caller knows it, with no list to keep in step with the facets.
    Closing and flushing are no-ops, so closing the store stays clean.
    """

    def __init__(self, backend: str) -> None:
        self._backend = backend

    def close(self) -> None:
        """Nothing to close."""

    def flush(self) -> None:
        """Nothing to flush."""

    def __getattr__(self, name: str) -> Any:
        feature = name
        frame = sys._getframe(1)
        while frame is not None:
            fn = frame.f_code.co_name
            if not fn.startswith("_") and fn not in _PLUMBING and not fn.startswith("<"):
                feature = fn
                break
            frame = frame.f_back  # type: ignore[assignment]
        raise UnsupportedFeatureError(
            f"{feature}() is not supported on the {self._backend} backend yet (see docs/scale-out.md)",
            feature=feature,
            backend=self._backend,
        )
