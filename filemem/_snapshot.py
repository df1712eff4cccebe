"""Read views of a store: consistent snapshots and the dict-like namespace view (layer L5)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Protocol

from . import _fs, _locks
from ._engine import Engine, copy_value
from ._errors import FileMemError, StoreClosedError
from ._names import hash_bits, validate_key
from ._shard import Record, Shard
from ._types import Item, NamespaceLike
from ._view import View

__all__ = ["MappingView", "Snapshot", "item_of"]

_MISSING: Any = object()


def item_of(namespace: tuple[str, ...], key: str, rec: Record) -> Item:
    """The public Item for a stored record (the value copied off the cache)."""
    return Item(
        namespace,
        key,
        copy_value(rec["value"]),
        rec["version"],
        rec["created_at"],
        rec["updated_at"],
        rec.get("expires_at"),
    )


class _MappingStore(Protocol):
    """What a MappingView needs of its Store."""

    def get(self, namespace: NamespaceLike, key: str, default: Any = None) -> Any: ...
    def put(self, namespace: NamespaceLike, key: str, value: Any) -> int: ...
    def delete(self, namespace: NamespaceLike, key: str) -> bool: ...
    def keys(self, namespace: NamespaceLike) -> list[str]: ...
    def get_item(self, namespace: NamespaceLike, key: str) -> Item | None: ...


class Snapshot:
    """A consistent, read-only view of the store (see :meth:`Store.snapshot`).

    Reads take shared locks and keep them until the block ends: writers of the
    shards it has read wait, everything else runs.
    """

    def __init__(self, engine: Engine, normalize: Callable[[Any], tuple[str, ...]]) -> None:
        self._engine = engine
        self._ns = normalize
        self._held: dict[str, _locks.Held] = {}
        self._pinned: dict[str, Shard | None] = {}
        self._now = time.time()
        self._closed = False
        # Folds wait while the snapshot lives, and the log's unfolded records
        # are frozen as of now: shards + those records are one version.
        self._pin = engine.pin()

    def _lock(self, view: View, prefix: str) -> Shard | None:
        lp = view.lock_path(prefix)
        if lp in self._pinned:
            return self._pinned[lp]
        if not _fs.dir_exists(view.dir):
            if self._engine.readonly:
                return None  # cannot lock what does not exist without creating it
            # Lock the root range of the new namespace: any first writer must
            # take it, so no record can appear under our feet (no phantoms).
            _fs.ensure_dir(view.dir)
            view.dir_known = True
        self._held[lp] = self._engine.snapshot_lock(view, prefix, first=not self._held)
        self._engine.recover_batches((view.dir,))
        shard = self._engine.load(view.shard_path(prefix), prefix)
        self._pinned[lp] = shard
        return shard

    def _record(self, ns: tuple[str, ...], key: str) -> Record | None:
        if self._closed:
            raise StoreClosedError("snapshot is closed")
        if self._pin is not None:
            entry = self._pin.get(ns, key)
            if entry is not None:
                rec = entry.record
                if rec is None or ((x := rec.get("expires_at")) is not None and x <= self._now):
                    return None
                return rec
        view = self._engine.view(ns)
        bits = hash_bits(key)
        for _ in range(16):
            prefix = view.resolve(bits)
            shard = self._lock(view, prefix)
            if shard is None or shard.splitting:
                if view.recheck(prefix, bits, missing=shard is None):
                    continue
                if shard is None:
                    return None
            rec = shard.records.get(key)
            if rec is None or ((x := rec.get("expires_at")) is not None and x <= self._now):
                return None
            return rec
        raise FileMemError(f"namespace {'/'.join(ns)} kept changing under a snapshot")

    def get(self, namespace: NamespaceLike, key: str, default: Any = None) -> Any:
        """The value at ``key`` as of this snapshot, or ``default``."""
        rec = self._record(self._ns(namespace), validate_key(key))
        return default if rec is None else copy_value(rec["value"])

    def get_item(self, namespace: NamespaceLike, key: str) -> Item | None:
        """The record at ``key`` as of this snapshot, or None."""
        ns = self._ns(namespace)
        rec = self._record(ns, validate_key(key))
        return None if rec is None else item_of(ns, key, rec)

    def items(self, namespace: NamespaceLike) -> list[Item]:
        """Every live record of a namespace as of this snapshot, sorted by key."""
        if self._closed:
            raise StoreClosedError("snapshot is closed")
        ns = self._ns(namespace)
        view = self._engine.view(ns)
        if self._engine.readonly and not _fs.dir_exists(view.dir):
            return []
        while True:
            view.refresh()
            # Lock every shard and every empty range, so no record can appear
            # in this namespace while the snapshot lives (no phantoms).
            wanted = [p for p in sorted(view.existing | _empty_regions(view)) if view.lock_path(p) not in self._pinned]
            if not wanted:
                break
            for p in wanted:
                self._lock(view, p)
        out = []
        for p in sorted(view.existing):
            shard = self._pinned.get(view.lock_path(p))
            if shard is None:
                continue
            for key, rec in shard.records.items():
                x = rec.get("expires_at")
                if (x is None or x > self._now) and view.resolve(hash_bits(key)) == p:
                    out.append(item_of(ns, key, rec))
        if self._pin is not None and ns in self._pin.frozen:
            logged = self._pin.frozen[ns]
            out = [it for it in out if it.key not in logged]
            for key, entry in logged.items():
                got = entry.record
                if got is not None and ((x := got.get("expires_at")) is None or x > self._now):
                    out.append(item_of(ns, key, got))
        out.sort(key=lambda it: it.key)
        return out

    def keys(self, namespace: NamespaceLike) -> list[str]:
        """Every live key of a namespace as of this snapshot, sorted."""
        return [it.key for it in self.items(namespace)]

    def close(self) -> None:
        """Release every lock the snapshot holds."""
        self._closed = True
        held, self._held = self._held, {}
        self._pinned.clear()
        errors: list[BaseException] = []
        if self._pin is not None:
            try:
                self._pin.release()
            except Exception as exc:
                errors.append(exc)
        for h in held.values():
            try:
                h.release()
            except Exception as exc:  # release the others whatever happens
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _empty_regions(view: View) -> set[str]:
    """Ranges covered by no shard file (created on first write), as prefixes."""
    if not view.existing:
        return {""}
    out = set()
    for node in view.internal:
        for child in (node + "0", node + "1"):
            if child not in view.existing and child not in view.internal:
                out.add(child)
    return out


class MappingView(MutableMapping[str, Any]):
    """A dict-like view of one namespace (see :meth:`Store.mapping`).

    >>> m = store.mapping("agent-1/facts")  # doctest: +SKIP
    >>> m["sky"] = "blue"; m["sky"]  # doctest: +SKIP
    'blue'
    """

    def __init__(self, store: _MappingStore, namespace: tuple[str, ...]) -> None:
        self._store = store
        self.namespace = namespace

    def __getitem__(self, key: str) -> Any:
        value = self._store.get(self.namespace, key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._store.put(self.namespace, key, value)

    def __delitem__(self, key: str) -> None:
        if not self._store.delete(self.namespace, key):
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.keys(self.namespace))

    def __len__(self) -> int:
        return len(self._store.keys(self.namespace))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store.get_item(self.namespace, key) is not None
