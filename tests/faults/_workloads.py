"""Workloads for the crash simulator and the fault injector, and the checks both apply afterwards.

A workload is a function ``workload(path, acks)`` over a store path. Before
each call that changes the store it declares what the call will change, and
the harness learns when the call returned::

    with acks.op({("ns", "k"): 1}):
        store.put("ns", "k", 1)

A change is a value or :data:`DELETED`. ``atomic=False`` for a call whose
changes may become visible one by one (a collector's flush). Everything a
workload needs is in its own code: the harnesses know nothing about
filemem's write path, which is what lets a new write path (the coming WAL)
be proven by the same checks (tests/faults/README.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import filemem
from filemem._wal import _fold

Key = tuple[str, str]
#: A change that removes the key.
DELETED: Any = ("<deleted>",)
_ABSENT: Any = ("<absent>",)


@dataclass
class Group:
    """One API call's declared changes and when it started and returned (positions in the event log)."""

    changes: dict[Key, Any]
    atomic: bool
    started: int
    returned: int | None = None


@dataclass
class Acks:
    """What a workload declared and which calls returned; ``position()`` says "now" in the event log."""

    position: Callable[[], int]
    groups: list[Group] = field(default_factory=list)

    @contextmanager
    def op(self, changes: dict[Key, Any], *, atomic: bool = True) -> Iterator[None]:
        g = Group(dict(changes), atomic, self.position())
        self.groups.append(g)
        yield
        g.returned = self.position()


# ---------------------------------------------------------------------- checks


def _read(store: filemem.Store, key: Key) -> Any:
    return store.get(key[0], key[1], _ABSENT, consistency="strict")


def expected_values(
    groups: list[Group], instant: int | None
) -> tuple[dict[Key, set[Any]], list[Group], dict[Key, Any]]:
    """For a crash at ``instant`` (None: after every call ran or failed): the values each key may show.

    A call that returned before the instant is acknowledged: its values must
    be there (unless a later call in flight changed them). A call that started
    but had not returned may show its new values or not, all at once if atomic.
    """
    current: dict[Key, Any] = {}
    allowed: dict[Key, set[Any]] = {}
    in_flight: list[Group] = []
    for g in groups:
        done = g.returned is not None and (instant is None or g.returned <= instant)
        started = instant is None or g.started <= instant
        if done:
            current.update(g.changes)
        elif started:
            in_flight.append(g)
    for g in groups:
        for k in g.changes:
            allowed.setdefault(k, set()).add(_freeze(current.get(k, _ABSENT)))
    for g in in_flight:
        for k, v in g.changes.items():
            allowed[k].add(_freeze(_ABSENT if v is DELETED else v))
    return allowed, in_flight, {k: _freeze(current.get(k, _ABSENT)) for k in allowed}


def _freeze(v: Any) -> Any:
    if v is DELETED:
        return _ABSENT
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, _freeze(x)) for k, x in v.items())))
    if isinstance(v, list):
        return ("list", tuple(_freeze(x) for x in v))
    return v


def verify_store(path: str, groups: list[Group], instant: int | None, *, label: str) -> None:
    """Open the store, check every acknowledged write and batch atomicity, then check(fix) and check()."""
    allowed, in_flight, acked = expected_values(groups, instant)
    with filemem.Store(path, watch="off") as store:
        _check_values(store, allowed, in_flight, acked, label)
        for ns in store.list_namespaces():
            store.items(ns)  # every shard decodes: nothing torn is served
        store.check(fix=True)
        left = store.check()
        assert left == [], f"{label}: check() after check(fix=True) still finds {left}"
        _check_values(store, allowed, in_flight, acked, label + " after check(fix=True)")


def _check_values(
    store: filemem.Store, allowed: dict[Key, set[Any]], in_flight: list[Group], acked: dict[Key, Any], label: str
) -> None:
    got = {k: _freeze(_read(store, k)) for k in allowed}
    for k, ok in allowed.items():
        assert got[k] in ok, f"{label}: {k} = {got[k]!r}, expected one of {ok!r}"
    for g in in_flight:
        if not g.atomic:
            continue
        # Keys whose new value differs from the acknowledged one: all new or all old.
        telling = {k: _freeze(v) for k, v in g.changes.items() if _freeze(v) != acked[k]}
        shows_new = {got[k] == v for k, v in telling.items()}
        assert len(shows_new) <= 1, f"{label}: batch half applied: {[(k, got[k]) for k in telling]}"


# ---------------------------------------------------------------------- workloads

WATCH_OFF = {"watch": "off"}


def puts(path: str, acks: Acks) -> None:
    """Puts into two namespaces, overwrites, and a ttl."""
    with filemem.Store(path, **WATCH_OFF) as s:
        for i in range(4):
            with acks.op({("a", f"k{i}"): {"i": i}}):
                s.put("a", f"k{i}", {"i": i})
        with acks.op({("b", "k"): "one"}):
            s.put("b", "k", "one")
        with acks.op({("a", "k1"): {"i": 10}}):
            s.put("a", "k1", {"i": 10})
        with acks.op({("b", "t"): "ttl"}):
            s.put("b", "t", "ttl", ttl=3600)


def updates(path: str, acks: Acks) -> None:
    """Counter updates (read-modify-write under the lock)."""
    with filemem.Store(path, **WATCH_OFF) as s:
        for i in range(1, 6):
            with acks.op({("c", "n"): i}):
                s.update("c", "n", lambda n: (n or 0) + 1)


def deletes(path: str, acks: Acks) -> None:
    """Puts then deletes, one of a key that was never there."""
    with filemem.Store(path, **WATCH_OFF) as s:
        for i in range(3):
            with acks.op({("d", f"k{i}"): i}):
                s.put("d", f"k{i}", i)
        for i in (0, 2, 7):
            with acks.op({("d", f"k{i}"): DELETED}):
                s.delete("d", f"k{i}")


def batches(path: str, acks: Acks) -> None:
    """Batches of 2 and of 5 shards (5 takes the one-syncfs path), one with a delete."""
    with filemem.Store(path, **WATCH_OFF) as s:
        with acks.op({("x", "a"): 1, ("y", "a"): 1}), s.batch() as b:
            b.put("x", "a", 1)
            b.put("y", "a", 1)
        five = {(f"m{i}", "k"): f"v{i}" for i in range(5)}
        with acks.op(five), s.batch() as b:
            for (ns, k), v in five.items():
                b.put(ns, k, v)
        again = {**{(f"m{i}", "k"): f"w{i}" for i in range(4)}, ("x", "a"): DELETED}
        with acks.op(again), s.batch() as b:
            for (ns, k), v in again.items():
                if v is DELETED:
                    b.delete(ns, k)
                else:
                    b.put(ns, k, v)


def compaction(path: str, acks: Acks) -> None:
    """Puts that split small shards, deletes that leave them tiny, then compact() merges them."""
    with filemem.Store(path, shard_max_bytes=1024, **WATCH_OFF) as s:
        for i in range(14):
            with acks.op({("p", f"key-{i:02d}"): "x" * 120}):
                s.put("p", f"key-{i:02d}", "x" * 120)
        for i in range(0, 14, 2):
            with acks.op({("p", f"key-{i:02d}"): DELETED}):
                s.delete("p", f"key-{i:02d}")
        with acks.op({}):
            s.compact()


def collector(path: str, acks: Acks) -> None:
    """A collector with a journal: what flush() acknowledged is in the store."""
    with filemem.Store(path, **WATCH_OFF) as s, s.collector(batch_size=4, batch_timeout=0.01) as c:
        for round_ in range(2):
            changes = {("col", f"r{round_}-{i}"): i for i in range(5)}
            with acks.op(changes, atomic=False):
                for (ns, k), v in changes.items():
                    c.collect(ns, k, v)
                c.flush(timeout=30)


def _on_log(path: str, shard_max_bytes: int = 32 * 1024) -> filemem.Store:
    """A store whose writes go through the write-ahead log (format 2), whatever new stores default to."""
    s = filemem.Store(path, shard_max_bytes=shard_max_bytes, **WATCH_OFF)
    if s._engine.log is None:
        s._engine.upgrade()
    return s


def wal_writes(path: str, acks: Acks) -> None:
    """On a v2 store: puts, an update, a delete and batches, each one log append; nothing folded yet."""
    with _on_log(path) as s:
        for i in range(3):
            with acks.op({("a", f"k{i}"): {"i": i}}):
                s.put("a", f"k{i}", {"i": i})
        # Its own counter: in the "mixed" run `updates` has already taken ("c", "n") to 5, and
        # the model records what an update writes, so a shared key made it expect 1 where 6 was
        # (rightly) found.
        with acks.op({("c", "wal"): 1}):
            s.update("c", "wal", lambda n: (n or 0) + 1)
        with acks.op({("a", "k0"): DELETED}):
            s.delete("a", "k0")
        five = {(f"m{i}", "k"): f"v{i}" for i in range(5)}
        with acks.op(five), s.batch() as b:
            for (ns, k), v in five.items():
                b.put(ns, k, v)


def wal_blind(path: str, acks: Acks) -> None:
    """On a v2 store, two handles taking turns: the one behind logs its plain puts without reading the other's frames.

    Those commits (``Log.commit``'s blind path) append, sync and publish
    without adding to their overlay; a delete in between is decided as before.
    """
    with _on_log(path) as a, _on_log(path) as b:
        for i in range(2):
            with acks.op({("bl", "k"): f"a{i}"}):
                a.put("bl", "k", f"a{i}")
            with acks.op({("bl", "k"): f"b{i}"}):
                b.put("bl", "k", f"b{i}")  # behind a: blind
        with acks.op({("bl", "k"): DELETED}):
            a.delete("bl", "k")
        two = {("bl", "k"): "batch", ("bm", "j"): "batch"}
        with acks.op(two), b.batch() as batch:  # behind again: one blind frame
            for (ns, k), v in two.items():
                batch.put(ns, k, v)


def wal_fold(path: str, acks: Acks) -> None:
    """On a v2 store: writes, a fold into the shards (splits included), more writes, and the closing fold."""
    with _on_log(path, shard_max_bytes=1024) as s:
        for i in range(8):
            with acks.op({("p", f"key-{i:02d}"): "x" * 150}):
                s.put("p", f"key-{i:02d}", "x" * 150)
        with acks.op({}):
            s._engine.settle()
        with acks.op({("p", "key-01"): DELETED, ("q", "k"): 1}), s.batch() as b:
            b.delete("p", "key-01")
            b.put("q", "k", 1)
        with acks.op({("p", "key-02"): "new"}):
            s.put("p", "key-02", "new")


def wal_range_fold(path: str, acks: Acks) -> None:
    """On a v2 store: one fold step installed a shard per commit (several), each key's newest op of several.

    A crash between two installs of the step leaves the checkpoint before it:
    the next fold installs the whole step again, over shards some of which
    already hold it (idempotent by version).
    """
    with _on_log(path, shard_max_bytes=1024) as s:
        for i in range(8):
            with acks.op({("p", f"key-{i:02d}"): "x" * 150}):
                s.put("p", f"key-{i:02d}", "x" * 150)
        with acks.op({}):
            s._engine.settle()  # splits: the namespace has several shards now
        saved = _fold.SHARDS_PER_INSTALL
        _fold.SHARDS_PER_INSTALL = 1  # type: ignore[misc]  # one shard per install: a crash can fall between two
        try:
            for round_ in range(2):
                for i in range(0, 8, 2):
                    with acks.op({("p", f"key-{i:02d}"): f"r{round_}"}):
                        s.put("p", f"key-{i:02d}", f"r{round_}")
            with acks.op({("p", "key-03"): DELETED}):
                s.delete("p", "key-03")
            with acks.op({}):
                s._engine.settle()
        finally:
            _fold.SHARDS_PER_INSTALL = saved  # type: ignore[misc]


def _abandon(s: filemem.Store) -> None:
    """Leave a v2 store as a SIGKILLed writer would: records unfolded, no closing fold, its locks released."""
    log = s._engine.log
    assert log is not None
    log.last_handle = lambda: False  # so close() does not fold
    s.close()


def wal_recovery(path: str, acks: Acks) -> None:
    """On a v2 store: a writer dies unfolded, its last put synced but not counted; the next opener recovers.

    The page is left as a writer killed between its ``fdatasync`` and the page
    update leaves it (its frame durable, ``synced`` short of it). The reopen
    re-derives the page from a scan (sync included) and folds the dead
    writer's records (it is the last handle); then more writes, and the
    closing fold.
    """
    s = _on_log(path)
    try:
        log = s._engine.log
        assert log is not None
        for i in range(3):
            with acks.op({("r", f"k{i}"): i}):
                s.put("r", f"k{i}", i)
        with acks.op({("r", "b0"): "b", ("r", "b1"): "b"}), s.batch() as b:
            b.put("r", "b0", "b")
            b.put("r", "b1", "b")
        short = log._control()
        with acks.op({("r", "k1"): "last"}):
            s.put("r", "k1", "last")
        with log._append_locked():
            c = log._control()
            c.synced, c.synced_lsn = short.synced, short.synced_lsn
            log.control.write(c)
    except BaseException:
        s.close()  # a fault before the "death": close normally (no thread left behind)
        raise
    _abandon(s)
    with acks.op({}):
        s = _on_log(path)  # recovery: re-derive the page, fold what the dead writer left
    with s:
        with acks.op({("r", "k2"): "after"}):
            s.put("r", "k2", "after")
        with acks.op({("r", "b0"): DELETED, ("r", "n"): 1}), s.batch() as b:
            b.delete("r", "b0")
            b.put("r", "n", 1)


#: Segment size for ``wal_segments``: a few frames each, so the log rolls and the fold retires segments.
SMALL_SEGMENT_BYTES = 2048


def wal_segments(path: str, acks: Acks) -> None:
    """On a v2 store with tiny segments: appends roll segments (END, sync, new segment), folds retire them."""
    with _on_log(path) as s:
        log = s._engine.log
        assert log is not None and log.writer is not None
        log.segment_bytes = log.writer.segment_bytes = SMALL_SEGMENT_BYTES
        for i in range(12):
            with acks.op({("s", f"k{i % 7}"): f"{i}" + "x" * 200}):
                s.put("s", f"k{i % 7}", f"{i}" + "x" * 200)
        with acks.op({}):
            s._engine.settle()  # fold, checkpoint, retire the segments below it
        big = {("s", f"b{i}"): "y" * 300 for i in range(8)}  # one frame bigger than a segment
        with acks.op(big), s.batch() as b:
            for (ns, k), v in big.items():
                b.put(ns, k, v)
        with acks.op({("s", "k1"): "new"}):
            s.put("s", "k1", "new")


def wal_collector(path: str, acks: Acks) -> None:
    """The collector on a v2 store: its apply step is one log append per batch.

    A failed log sync is fatal for the store handle, so after one the collector
    can never apply again: shorter waits (its journal keeps the records for the
    next opener's replay, which ``verify_store`` checks).
    """
    with _on_log(path) as s, s.collector(batch_size=4, batch_timeout=0.01, close_timeout=1.0) as c:
        for round_ in range(2):
            changes = {("col", f"r{round_}-{i}"): i for i in range(5)}
            with acks.op(changes, atomic=False):
                for (ns, k), v in changes.items():
                    c.collect(ns, k, v)
                # FlushTimeoutError (a FileMemError) once the handle has failed; a slow
                # machine's timeout only leaves the round unacknowledged.
                c.flush(timeout=3)


@contextmanager
def _portable_io() -> Iterator[None]:
    """The log's portable fallbacks (as ``FILEMEM_PORTABLE_IO=1``): the control page read and written with
    pread/pwrite instead of a mapping, fsync, zero-filled preallocation, portalocker locks."""
    from filemem._wal import _platform

    saved = (_platform.PORTABLE, _platform._HAVE_PWRITE, _platform._HAVE_FALLOCATE)
    _platform.PORTABLE, _platform._HAVE_PWRITE, _platform._HAVE_FALLOCATE = True, False, False  # type: ignore[misc]
    try:
        yield
    finally:
        _platform.PORTABLE, _platform._HAVE_PWRITE, _platform._HAVE_FALLOCATE = saved  # type: ignore[misc]


def wal_portable(path: str, acks: Acks) -> None:
    """On the portable paths: puts, a batch, a fold and a put, every control page update a file write the shim sees."""
    with _portable_io(), _on_log(path) as s:
        for i in range(2):
            with acks.op({("a", f"k{i}"): i}):
                s.put("a", f"k{i}", i)
        with acks.op({("a", "k0"): "b", ("m", "k"): "b"}), s.batch() as b:
            b.put("a", "k0", "b")
            b.put("m", "k", "b")
        with acks.op({}):
            s._engine.settle()
        with acks.op({("a", "k1"): "folded-then-new"}):
            s.put("a", "k1", "folded-then-new")


def mixed(path: str, acks: Acks) -> None:
    """Every workload above, one after the other, on one store (the slow runs)."""
    for name, fn in WORKLOADS.items():
        if name != "mixed":
            fn(path, acks)


WORKLOADS: dict[str, Callable[[str, Acks], None]] = {
    "puts": puts,
    "updates": updates,
    "deletes": deletes,
    "batches": batches,
    "compaction": compaction,
    "collector": collector,
    "wal_writes": wal_writes,
    "wal_blind": wal_blind,
    "wal_fold": wal_fold,
    "wal_range_fold": wal_range_fold,
    "wal_recovery": wal_recovery,
    "wal_segments": wal_segments,
    "wal_collector": wal_collector,
    "wal_portable": wal_portable,
}

#: Bigger workloads for the slow runs (FILEMEM_FAULTS_FULL=1).
LARGE_WORKLOADS: dict[str, Callable[[str, Acks], None]] = {"mixed": mixed}
