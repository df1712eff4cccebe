"""Opening a store for a tool, and the maintenance operations with progress (part of :mod:`filemem.admin`)."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

from .._check import check_store
from .._errors import FileMemError, ReadOnlyError, UnsupportedFeatureError
from .._feed import Change
from .._maintain import compact as _compact
from .._maintain import convert as _convert
from .._store import Store
from .._types import Finding, NamespaceLike

__all__ = ["check", "compact", "convert", "fold", "open_store", "upgrade", "watch"]

ProgressFn = Callable[[int, int], None]


def open_store(
    path: str | os.PathLike[str],
    *,
    readonly: bool = True,
    lock_timeout_s: float = 10.0,
    create: bool = False,
    codec: str | None = None,
    shard_max_bytes: int = 32 * 1024,
    watch: bool = False,
) -> Store:
    """Open a store the way the command line does.

    ``path`` is a store directory or a ``postgresql://`` URL (issue 16).
    Read-only by default (``readonly=True`` never writes a byte). Reads are
    ``"strict"`` (every read checks the file: a tool wants the truth, not a
    cache) and no watcher thread starts unless ``watch`` is set (for
    :func:`watch`). A missing store raises ``FileMemError`` unless ``create``.

    Example::

        with filemem.admin.open_store("./memories") as store:
            print(store.list_namespaces())
    """
    if not create and "://" not in os.fspath(path) and not os.path.isdir(path):
        raise FileMemError(f"no filemem store at {os.path.abspath(path)} (no such directory)")
    return Store(
        path,
        readonly=readonly,
        create=create,
        codec=codec,
        lock_timeout_s=lock_timeout_s,
        shard_max_bytes=shard_max_bytes,
        consistency="strict",
        watch="auto" if watch else "off",
    )


def check(store: Store, *, fix: bool = False, progress: ProgressFn | None = None) -> list[Finding]:
    """:meth:`Store.check` with a progress callback ``progress(done, total)`` over namespace directories.

    Example::

        with filemem.admin.open_store("./memories") as store:
            problems = filemem.admin.check(store)
    """
    if store.backend != "file":
        return store.check(fix=fix)  # a server has no namespace directories to report progress over
    store._engine.check_open()
    return check_store(store._engine, fix=fix, progress=progress)


def compact(store: Store, *, merge: bool = True, progress: ProgressFn | None = None) -> dict[str, int]:
    """:meth:`Store.compact` with progress over shards.

    Drops expired records, finishes interrupted splits, splits oversize shards
    and (unless ``merge=False``) merges pairs of tiny sibling shards (together
    at most 1/16 of ``shard_max_bytes``) back into one, each under the
    writers' own locks; busy shards are skipped, never waited for.
    Returns counts: namespaces, shards, expired_dropped, splits, merges.

    Example::

        with filemem.admin.open_store("./memories", readonly=False) as store:
            print(filemem.admin.compact(store)["expired_dropped"])
    """
    if store.backend != "file":
        # A server has no shards to split or merge: its compact is the TTL
        # sweep and the outbox pruning (PostgresBackend.compact).
        return store.compact()
    store._engine.check_open()
    return _compact(store._engine, merge=merge, progress=progress)


def convert(store: Store, codec: str, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Rewrite every shard of ``store`` with ``codec`` in place, then make it the store's codec.

    Safe while other processes read and write: each shard is rewritten under
    its writers' lock, and every reader decodes a shard by the codec its own
    header names. First a read-only pass checks that every record can be
    encoded with ``codec`` (bytes or non-string map keys cannot be JSON);
    if one cannot, ``InvalidValueError`` names it and nothing is changed.
    A process that opened the store earlier writes the old codec until the
    switch and adopts the new one at its next write; a final sweep converts
    what it wrote meanwhile. ``info`` shows the codec of every shard (a
    shard such a process creates afresh before it writes an existing one may
    stay in the old codec: run ``convert`` again, it is idempotent).

    Example::

        with filemem.admin.open_store("./memories", readonly=False) as store:
            filemem.admin.convert(store, "msgpack")
    """
    if store.backend != "file":
        raise UnsupportedFeatureError(
            f"convert() rewrites shard files; a {store.backend} store keeps the codec it was created with: copy it"
            " to a new store with the other codec instead (filemem copy SRC DST --codec msgpack)",
            feature="convert",
            backend=store.backend,
        )
    store._engine.check_open()
    return _convert(store._engine, codec, progress=progress)


def fold(store: Store) -> None:
    """Fold the write-ahead log into the shard files now: a tool reading shard files then sees every write so far.

    A format-2 store takes writes in its log and moves them into the shards
    in the background (about a second after the last write, and when the last
    writer closes); ``check``, ``compact`` and ``convert`` fold first on
    their own (reads, ``export``, ``scan`` and ``search`` merge the log's
    records over the shards instead). Call this before reading shard files
    directly while writers are at work. Nothing to do on a format-1 store (its
    shards are always current). Waits while a fold another process is running
    makes progress; a snapshot open in this process holds folds off, so then
    this returns without folding.

    Example::

        with filemem.admin.open_store("./memories", readonly=False) as store:
            filemem.admin.fold(store)
    """
    store._engine.check_open()
    if store.readonly:
        raise ReadOnlyError(f"store {store.path} was opened read-only")
    store._engine.settle()


def upgrade(store: Store) -> bool:
    """Upgrade ``store`` in place to the newest store format (2: the write-ahead log); False if it already was.

    The records stay where they are; the store gains ``wal/`` and from then on
    every process takes writes through the log (docs/format.md). Versions
    continue above every version the store held. Stop every process running
    an older filemem first: it cannot open the upgraded store (it refuses
    format 2 with ``UnsupportedFormatError``), and one already running would
    write around the log.

    Example::

        with filemem.admin.open_store("./memories", readonly=False) as store:
            filemem.admin.upgrade(store)
    """
    if store.backend != "file":
        raise UnsupportedFeatureError(
            f"upgrade() moves a directory store to a newer file format; a {store.backend} store has a schema"
            " version of its own (checked when it is opened): there is no file format to upgrade",
            feature="upgrade",
            backend=store.backend,
        )
    store._engine.check_open()
    if store.readonly:
        raise ReadOnlyError(f"store {store.path} was opened read-only")
    return store._engine.upgrade()


def watch(
    store: Store,
    namespace_prefix: NamespaceLike | None = None,
    *,
    timeout_s: float | None = None,
    max_changes: int | None = None,
    poll_s: float = 0.2,
) -> Iterator[Change]:
    """Yield changes any process makes under ``namespace_prefix`` until ``timeout_s`` or ``max_changes``.

    Open the store with ``open_store(path, watch=True)``. Stops early when
    the generator is closed (or the caller stops iterating); the subscription
    is closed either way.

    Example::

        with filemem.admin.open_store("./memories", watch=True) as store:
            for change in filemem.admin.watch(store, ("agent-1",), timeout_s=5):
                print(change.namespace, change.kind, change.keys)
    """
    pending: queue.SimpleQueue[Change] = queue.SimpleQueue()
    sub = store.subscribe(pending.put, namespace_prefix)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen = 0
    try:
        while max_changes is None or seen < max_changes:
            wait = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if wait <= 0:
                return
            try:
                change = pending.get(timeout=wait)
            except queue.Empty:
                continue
            seen += 1
            yield change
    finally:
        sub.close()
