"""The storage engine: reads, writes, batches, splits, recovery (layer L2).

On-disk layout (docs/format.md has the byte-level description)::

    <root>/filemem.json            store marker: format version, codec
    <root>/ns/<seg>/<seg>/         one directory per namespace (segments escaped)
        s<bits>.shard              records whose key hash starts with <bits>
        s<bits>.lock               that shard's lock file, never replaced
        turnstile.lock             writer-preference gate for the namespace
    <root>/batches/<id>.batch      intent of a multi-shard batch being committed
    <root>/quarantine/             corrupt files moved aside by check(fix=True)

**Which shard holds a key.** A key's 64-bit hash is a string of bits; the
shard for it is the *deepest existing* ``s<prefix>.shard`` whose prefix starts
that string (or, when none exists, the first prefix that is no ancestor of an
existing shard: a new region). Shards split in two when they pass
``shard_max_bytes``, so a write rewrites a bounded file however big the store.

**Splits are crash-safe without a manifest.** To split ``p`` the writer (who
holds ``p``'s lock) first rewrites ``p`` with ``splitting: true``, then writes
the new leaves, then unlinks ``p``. Invariant: *descendants of p exist only if
p is gone or flagged*. A crash at any point leaves either ``p`` unflagged and
alone, or ``p`` flagged; the next writer to lock a flagged shard finishes the
split first. Readers that meet a flagged or missing shard re-list the
directory and resolve again. Nobody writes a descendant's range into ``p``
while the flag is up, and leaves are written once, so every existing file is
authoritative for its range.

**Batches are all-or-nothing across shards.** All shard locks are taken in
sorted path order; the new shard contents go to temp files (fsynced); then an
intent file listing (temp, target) pairs is created *already locked* and
renamed into ``batches/`` (the commit point); then the temps are renamed over
their targets and the intent removed. Anyone who takes a shard lock first
rolls forward intents whose owner died (its lock can be taken), so no writer
or snapshot ever uses a shard that an interrupted batch still owes. (A plain
lock-free get can see such a batch half applied until some read-write process
touches the store; a read-only store never repairs.)

**Plain gets take no lock.** Files are only ever replaced by rename, so a
reader holds a whole old or whole new inode; one ``stat`` tells whether the
parsed copy in the process cache is current. The (inode, mtime_ns, size) key
cannot repeat for a path because writers stamp each new file's mtime above
the old one's.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from . import _fs, _locks
from ._errors import (
    ConflictError,
    CorruptShardError,
    FileMemError,
    InvalidValueError,
    LockTimeout,
    ReadOnlyError,
    StorageError,
    StoreClosedError,
    UnsupportedFormatError,
)
from ._names import escape_segment, hash_bits, legacy_segment, unescape_segment
from ._shard import FORMAT_VERSION, SHARD_SUFFIX, Record, Shard, decode_shard, encode_shard
from ._types import Durability
from ._view import MAX_PREFIX_BITS, View
from ._wal import WAL_DIR, Log
from ._wal._fold import Checkpoint, Installed, write_checkpoint
from ._wal._format import DELETE, PUT, LogOp
from ._wal._log import APPEND_LOCK, FIRST_POSITION, LogIssue
from ._wal._overlay import Change, Entry
from ._wal._tail import CONTROL_PAGE, LogTail, announce, control_fd
from ._walk import ShardWalk
from .codecs import Codec, get_codec

__all__ = ["Engine", "Op"]

MARKER: Final = "filemem.json"
#: Version of the store as a whole (the marker's ``filemem``): 2 puts the
#: write-ahead log in ``wal/`` in front of the shards. Shard files keep their
#: own version (``FORMAT_VERSION`` in _shard, still 1).
STORE_FORMAT_VERSION: Final = 2
#: The format new stores are created with, and that a read-write open
#: upgrades older stores to. Still 1 by default while the log's integration
#: is finished (CHANGELOG, issue 13); ``FILEMEM_STORE_FORMAT=2`` selects the
#: log for new stores (the test suite runs that way too), and
#: ``filemem convert --upgrade`` upgrades one store for good.
NEW_STORE_FORMAT = 2 if os.environ.get("FILEMEM_STORE_FORMAT", "") == "2" else 1
#: Fold when this many bytes of log are unfolded (also the overlay's bound).
FOLD_BYTES: Final = 4 << 20
#: Fold this long after the last write of a process.
FOLD_IDLE_S: Final = 0.25
NS_DIR: Final = "ns"
BATCH_DIR: Final = "batches"
QUARANTINE_DIR: Final = "quarantine"
#: Collector journals (one per collecting process) live here.
JOURNAL_DIR: Final = "journals"
#: Session registry files and slot locks live here.
SESSION_DIR: Final = "sessions"
#: Search indexes, one per namespace, live here.
INDEX_DIR: Final = "index"
#: Store-internal records (e.g. what a journal replay has applied) live in
#: namespaces under this directory, apart from users' ``ns/`` so that
#: ``list_namespaces`` never shows them.
INTERNAL_DIR: Final = "internal"
#: First segment of a store-internal namespace. No user namespace can start
#: with it (segments may not contain NUL), and :meth:`Engine.ns_dir` maps such
#: a namespace under :data:`INTERNAL_DIR` instead of ``ns/``.
INTERNAL_NS: Final = "\x00internal"
#: Every name filemem may create at the store root; ``check`` reports anything
#: else as a foreign file.
ROOT_ENTRIES: Final = frozenset(
    {MARKER, NS_DIR, BATCH_DIR, QUARANTINE_DIR, JOURNAL_DIR, SESSION_DIR, INDEX_DIR, INTERNAL_DIR, WAL_DIR}
)
BATCH_SUFFIX: Final = ".batch"
#: While holding some of a batch's locks, wait at most this long for the next
#: one before releasing all and retrying: that back-off is what keeps a batch
#: from deadlocking with a snapshot that took shared locks in another order.
_BATCH_STEP_S: Final = 0.05
#: A shard writers had to queue for splits at 1/N of shard_max_bytes.
_CONTENDED_SPLIT_FRACTION: Final = 8
#: A batch touching at least this many shards syncs them with one syncfs.
_SYNCFS_MIN_SHARDS: Final = 4


#: More than the metadata of any record adds to its value's encoding (the
#: field names, a version, three timestamps), without the key.
_RECORD_OVERHEAD_BYTES: Final = 160
#: A timestamp whose JSON form is as long as any (17 significant digits).
_WIDEST_TIME: Final = 1795458108.1234567

_SCALAR_TYPES: Final = frozenset({str, int, float, bool, bytes, type(None)})

#: Deepest nesting of containers a value may have. Every reader must be able
#: to decode what a writer wrote, whatever its own recursion limit: one
#: over-nested value would otherwise make its whole shard unreadable.
MAX_DEPTH: Final = 100


#: Bumped in every forked child (see Engine.check_open).
_fork_generation = [0]


def _after_fork_in_child() -> None:
    _fork_generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def copy_value(value: Any, _depth: int = 0) -> Any:
    """Copy the containers of a codec value so callers never alias the cache.

    Raises InvalidValueError past :data:`MAX_DEPTH` levels of nesting.
    """
    t = type(value)
    if t is dict or t is list:
        # Fast path: a flat container (the common memory record) is copied
        # whole at C speed; only nested ones take the recursive walk.
        scalars = _SCALAR_TYPES
        for v in value.values() if t is dict else value:
            if type(v) not in scalars:
                break
        else:
            return value.copy()
    elif isinstance(value, (dict, list, tuple)):
        t = dict if isinstance(value, dict) else list  # subclasses and tuples copy as plain containers
    if t is dict:
        if _depth >= MAX_DEPTH:
            raise InvalidValueError(f"value is nested deeper than {MAX_DEPTH} levels")
        return {k: copy_value(v, _depth + 1) for k, v in value.items()}
    if t is list or t is tuple:
        if _depth >= MAX_DEPTH:
            raise InvalidValueError(f"value is nested deeper than {MAX_DEPTH} levels")
        return [copy_value(v, _depth + 1) for v in value]
    if t is bytearray:
        return bytes(value)
    return value


class CacheEntryLike(Protocol):
    """What the engine reads from a cache entry."""

    shard: Shard | None
    fresh_until: float
    used: bool


class ShardCacheLike(Protocol):
    """The per-process shard cache the engine is given (filemem._cache.ShardCache).

    The engine sits below the cache layer, so it names only this shape.
    """

    def fresh(self, path: str) -> CacheEntryLike | None:
        """The entry if it may be used without a stat."""
        ...

    def peek(self, path: str) -> CacheEntryLike | None:
        """The entry, fresh or not."""
        ...

    def store(self, path: str, shard: Shard | None, size: int, *, as_of: float | None = None) -> None:
        """Remember a shard (or its absence) as current at ``as_of`` (default now)."""
        ...

    def revalidated(self, path: str, entry: Any, *, as_of: float | None = None) -> None:
        """An entry was found current by a stat."""
        ...

    def forget(self, path: str) -> None:
        """Drop an entry."""
        ...

    def clear(self) -> None:
        """Drop everything."""
        ...


OpKind = Literal["put", "delete", "update", "install"]


class _WriteContext:
    """State of one ``apply`` call across its retries."""

    __slots__ = ("contended", "spare", "sync_dirs")

    def __init__(self) -> None:
        self.spare: _fs.TempFile | None = None
        self.sync_dirs: set[str] = set()
        #: We had to wait for a shard lock: others write here at the same time.
        self.contended = False


@dataclass(slots=True)
class Op:
    """One write in a transaction. ``value`` is already copied off the caller."""

    namespace: tuple[str, ...]
    key: str
    kind: OpKind
    value: Any = None
    ttl: float | None = None
    if_version: int | None = None
    fn: Callable[[Any], Any] | None = None
    bits: str = ""
    view: View | None = field(default=None, repr=False)
    prefix: str = ""
    #: ``install`` (the fold): the record to put (None: delete) and its version.
    record: Record | None = None
    version: int = 0


class Engine:
    """Files, locks and caches of one store, for one process.

    Thread-safe; fork-safe (a child notices the pid change and starts with an
    empty cache). The Store facade is the public face; see it for examples.
    """

    def __init__(
        self,
        root: str,
        *,
        codec: str | Codec | None = None,
        durability: Durability = "fsync",
        lock_timeout_s: float = 10.0,
        shard_max_bytes: int = 32 * 1024,
        max_value_bytes: int = 16 * 1024 * 1024,
        readonly: bool = False,
        create: bool = True,
        cache: ShardCacheLike,
    ) -> None:
        if durability not in ("fsync", "flush"):
            raise InvalidValueError(f"durability must be 'fsync' or 'flush', not {durability!r}")
        if lock_timeout_s <= 0:
            raise InvalidValueError("lock_timeout_s must be positive")
        if shard_max_bytes < 1024:
            raise InvalidValueError("shard_max_bytes must be at least 1024")
        self.root = os.path.abspath(os.fspath(root))
        _fs.trust_root(self.root)  # the store may live behind a link; nothing inside it may be one
        self.durability = durability
        self.sync = durability == "fsync"
        self.lock_timeout_s = lock_timeout_s
        self.shard_max_bytes = shard_max_bytes
        self.max_value_bytes = max_value_bytes
        self.readonly = readonly
        self.ns_root = os.path.join(self.root, NS_DIR)
        self.batch_dir = os.path.join(self.root, BATCH_DIR)
        self._codecs: dict[str, Codec] = {"json": get_codec("json"), "msgpack": get_codec("msgpack")}
        self.codec = self._open_marker(codec, create=create)
        self._codecs[self.codec.name] = self.codec
        self._views: dict[tuple[str, ...], View] = {}
        self._views_by_dir: dict[str, View] = {}
        self.cache = cache
        # Read-only stores only: shards owed by a dead writer's batch (see recover_batches).
        self._overlay: dict[str, str] = {}
        self._pid = os.getpid()
        self._fork_generation = _fork_generation[0]
        #: Called in a forked child on its first use of the engine (the Store
        #: restarts its cache and watcher there).
        self.after_fork: Callable[[], None] | None = None
        #: Called with the ops of every committed ``apply`` (the Store keeps its
        #: search index up to date through it). Must not raise: the write has
        #: already happened.
        self.after_apply: Callable[[list[Op]], None] | None = None
        self.closed = False
        self.counters: dict[str, int] = {
            "shard_parses": 0,
            "shard_writes": 0,
            "splits": 0,
            "batches_recovered": 0,
            "lock_retries": 0,
            "split_failures": 0,
            "log_commits": 0,
            "folds": 0,
            "records_folded": 0,
            "fold_failures": 0,
        }
        self.log: Log | None = None
        #: The control page file, touched after each commit so watchers wake (see _wal._tail).
        self._announce_fd: int | None = None
        self._folder: _Folder | None = None
        self._folder_lock = threading.Lock()
        self._pins = 0
        if self.store_version < NEW_STORE_FORMAT and not self.readonly:
            self.upgrade()
        if self.store_version >= STORE_FORMAT_VERSION and self.log is None:
            self._open_log()

    # ------------------------------------------------------------------ setup

    def _open_marker(self, codec: str | Codec | None, *, create: bool) -> Codec:
        marker = os.path.join(self.root, MARKER)
        got = _read_marker(marker)
        if got is None:
            if self.readonly or not create:
                raise FileMemError(f"no filemem store at {self.root} (missing {MARKER})")
            names = _fs.listdir(self.root)
            # Another process may be creating the store at this very moment:
            # its temp marker is no foreign file, and once its marker exists
            # (it may already be writing namespaces) the store is simply there.
            if MARKER in names:
                got = _read_marker(marker)
            elif any(not n.startswith(MARKER + _fs.TEMP_MARK) for n in names):
                raise FileMemError(f"{self.root} is not empty and is not a filemem store; refusing to write into it")
        if got is None:
            chosen = get_codec(codec if codec is not None else "json")
            body = json.dumps({"filemem": NEW_STORE_FORMAT, "codec": chosen.name, "created_at": time.time()})
            _fs.ensure_dir(self.root)
            tmp = _fs.temp_path(marker)
            _fs.write_new_file(tmp, body.encode() + b"\n", sync=True)
            try:
                # link() fails if another process created the marker first:
                # create-if-absent, atomically, and the first creator wins.
                os.link(tmp, marker)
            except FileExistsError:
                pass
            except OSError as exc:
                raise _fs.storage_error(exc, "create", marker) from exc
            finally:
                _fs.remove_quietly(tmp)
            _fs.fsync_dir(self.root)
            got = _read_marker(marker)
            assert got is not None
        version = got.get("filemem")
        if not isinstance(version, int) or version > STORE_FORMAT_VERSION:
            raise UnsupportedFormatError(
                f"store {self.root} has format version {version!r}; this filemem reads up to "
                f"{STORE_FORMAT_VERSION}. Upgrade filemem to open it.",
                path=marker,
            )
        self.store_version = version
        name = got.get("codec")
        if not isinstance(name, str):
            raise CorruptShardError(f"store marker {marker} names no codec", path=marker)
        if codec is not None:
            wanted = get_codec(codec)
            if wanted.name != name:
                raise InvalidValueError(
                    f"store {self.root} uses codec {name!r}, not {wanted.name!r}; "
                    "open it without codec= or convert it (filemem convert)"
                )
            return wanted
        return get_codec(name)

    def check_value(self, value: Any, key: str | None = None) -> None:
        """Raise InvalidValueError now, before any lock or file, if ``value`` cannot be stored.

        With ``key``, the limit is applied as the commit applies it, to the
        whole record (value plus its metadata), with the widest metadata a
        record can have: a record that passes here never fails the commit's
        check, so nothing (no directory, no lock file) is created for it.
        """
        size = len(self.codec.encode(value))
        if size > self.max_value_bytes:
            raise InvalidValueError(f"value encodes to {size} bytes; the limit is {self.max_value_bytes}")
        if key is not None and size + _RECORD_OVERHEAD_BYTES + 6 * len(key) > self.max_value_bytes:
            widest = {"value": value, "version": 1 << 53}
            widest.update(dict.fromkeys(("created_at", "updated_at", "expires_at"), _WIDEST_TIME))
            pair = len(self.codec.encode_pair(key, widest))
            if pair > self.max_value_bytes:
                raise InvalidValueError(
                    f"record {key!r} encodes to up to {pair} bytes with its metadata; "
                    f"the limit is {self.max_value_bytes}"
                )

    def check_open(self) -> None:
        """Raise if closed; reset per-process state after a fork."""
        if self.closed:
            raise StoreClosedError(f"store {self.root} is closed")
        # A counter bumped by an at-fork hook, not os.getpid(): getpid is a
        # system call on current glibc, and a fresh cached read makes none.
        if self._fork_generation != _fork_generation[0]:
            self._fork_generation = _fork_generation[0]
            # A forked child shares nothing mutable with its parent but files.
            self._pid = os.getpid()
            self._views = {}
            self._views_by_dir = {}
            if self.log is not None:
                self.log.after_fork()
                self._folder = None  # the parent's thread did not come along
                self._folder_lock = threading.Lock()
            if self.after_fork is not None:
                self.after_fork()
            else:
                self.cache.clear()

    def close(self) -> None:
        """Fold what the log holds unfolded (a read-write store); forget cached state.

        Further use raises StoreClosedError.
        """
        if self.closed:
            return
        log = self.log
        if log is not None and self._pid == os.getpid():
            with self._folder_lock:
                folder, self._folder = self._folder, None
            if folder is not None:
                folder.stop()
            # A store at rest holds every record in its shards (docs/format.md):
            # a writer folds what is left when it closes. Every writer, not
            # only the last handle: a read-only handle (a CLI command, a
            # dashboard) open at that moment cannot fold after it.
            if not self.readonly and log.failed is None:
                with contextlib.suppress(FileMemError):  # the log keeps it; the next opener folds
                    self.settle()
            log.close()
        if self._announce_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._announce_fd)
            self._announce_fd = None
        self.closed = True
        self.cache.clear()
        self._views = {}
        self._views_by_dir = {}

    # ------------------------------------------------------------------ the log (engine interface)

    def _open_log(self) -> None:
        wal = os.path.join(self.root, WAL_DIR)
        if self.readonly and not os.path.isdir(wal):
            return  # nothing was ever logged: the shards hold everything
        if not self.readonly:
            _fs.ensure_dir(wal)
        try:
            self.log = Log(
                self.root,
                readonly=self.readonly,
                sync=self.sync,
                codecs=self._codecs,
                lock_timeout_s=self.lock_timeout_s,
                fold_bytes=FOLD_BYTES,
                on_folded=self._forget_folded,
            )
        except OSError as exc:
            raise _fs.storage_error(exc, "open the log in", wal) from exc
        if not self.readonly:
            self._announce_fd = control_fd(wal)
        if not self.readonly and self.log.unfolded_bytes() > 0 and self.log.last_handle():
            # Recovery: a writer died with records unfolded, and nobody else is
            # here to fold them.
            self.fold(wait=True)

    def upgrade(self) -> bool:
        """Upgrade a version-1 store in place to version 2; False if it already was.

        Done on the first read-write open when new stores are version 2, and
        by ``filemem convert --upgrade``. No process running an older filemem
        may have the store open meanwhile (it would write around the log).

        Versions of v2 records are log sequence numbers; they must start above
        every v1 version, which were shard generations: the checkpoint starts
        the sequence at the highest generation found.
        """
        wal = os.path.join(self.root, WAL_DIR)
        _fs.ensure_dir(wal)
        marker = os.path.join(self.root, MARKER)
        with _locks.exclusive(os.path.join(wal, APPEND_LOCK), self.lock_timeout_s):
            got = _read_marker(marker)
            if got is not None and got.get("filemem") == STORE_FORMAT_VERSION:
                self.store_version = STORE_FORMAT_VERSION
                return False
            self.recover_batches()
            base = self._max_shard_version()
            # A crashed earlier attempt may have left a page: it must not be trusted.
            _fs.remove_quietly(os.path.join(wal, "control"))
            write_checkpoint(wal, Checkpoint(FIRST_POSITION, base), sync=True)
            new = dict(got or {})
            new["filemem"] = STORE_FORMAT_VERSION
            new["upgraded_at"] = time.time()
            _fs.atomic_write(marker, json.dumps(new).encode() + b"\n", sync=True)
            self.store_version = STORE_FORMAT_VERSION
        if self.log is None and not self.closed:
            self._open_log()
        return True

    def _forget_folded(self, keys: list[tuple[tuple[str, ...], str]] | None) -> None:
        """The fold moved these keys' records into the shards: our cached copies of their shards are stale."""
        if keys is None:
            self.cache.clear()
            return
        for ns, key in keys:
            view = self._views.get(ns)
            if view is None:
                continue  # never read here: nothing cached through a view
            bits = hash_bits(key)
            # Every shard that can hold the key, not just the one our listing
            # names: the fold may have split or a compaction merged since we
            # listed, and a stale cached leaf must never answer for it.
            deepest = max((len(p) for p in view.existing), default=0) + 8
            for depth in range(min(deepest, MAX_PREFIX_BITS) + 1):
                self.cache.forget(view.shard_path(bits[:depth]))
            view.stale = True

    def changed(self) -> bool:
        """Whether another write may have committed since this process last looked (no system call)."""
        log = self.log
        return log is not None and log.changed()

    def commit_signal(self) -> str | None:
        """The file every commit to the log touches (watchers wake the change feed on it); None without a log."""
        log = self.log
        return None if log is None else os.path.join(log.dir, CONTROL_PAGE)

    def follow_log(self) -> LogTail | None:
        """A cursor over the batches committed from now on, for the change feed; None for a store without a log.

        The feed calls :meth:`LogTail.read` when the watcher reports
        ``log_changed`` (every commit announces itself, see _wal._tail) and
        closes the tail when nobody listens any more.
        """
        log = self.log
        if log is None:
            return None
        return LogTail(log.dir, log.readable_bounds)

    def unfolded(self, namespace: tuple[str, ...]) -> dict[str, tuple[int, Record | None]]:
        """Records of ``namespace`` the log holds and the shards may not yet: key -> (version, record or None).

        Listing reads merge them over the shards, keeping the higher version.
        """
        log = self.log
        if log is None:
            return {}
        log.refresh()
        return {k: (e.lsn, e.record) for k, e in log.entries(namespace).items()}

    def settle(self) -> None:
        """Fold the log into the shards now, so readers of shard files see everything written so far.

        Check, compact, convert, export and search call this first. Does not
        wait for a fold held off by a live snapshot of this process; a
        read-only store never folds (those readers merge the log instead).
        """
        log = self.log
        if log is None or self.readonly:
            return
        if log.unfolded_bytes() == 0:
            log.refresh()  # another process folded: drop what the shards now hold from our overlay
            return  # nothing to move (and no lock file to create on a store only read)
        self.fold(wait=self._pins == 0)

    def check_log(self, *, fix: bool) -> list[LogIssue]:
        """``check``'s view of the log: with ``fix``, fold first, then verify what is left.

        Returns what :meth:`filemem._wal.Log.verify` found; ``fix`` repairs it.
        """
        log = self.log
        if log is None:
            return []
        if fix and not self.readonly:
            with contextlib.suppress(CorruptShardError):  # verify below says what and where
                self.settle()
        issues = log.verify(fix=fix, base_lsn=self._max_shard_version)
        if fix and issues and not self.readonly:
            self.settle()
        return issues

    def _max_shard_version(self) -> int:
        """The highest version any shard file can hold (its generation), over the whole store."""
        base = 0
        for directory, _ in self.namespace_dirs():
            for name in _fs.listdir(directory):
                if name.endswith(SHARD_SUFFIX) and _fs.TEMP_MARK not in name:
                    base = max(base, _max_version(os.path.join(directory, name)))
        internal = os.path.join(self.root, INTERNAL_DIR)
        for dirpath, _, files in os.walk(internal):
            for name in files:
                if name.endswith(SHARD_SUFFIX) and _fs.TEMP_MARK not in name:
                    base = max(base, _max_version(os.path.join(dirpath, name)))
        return base

    def fold(self, *, wait: bool) -> bool:
        """Fold every synced log record into the shards; False if the fold lock was busy."""
        log = self.log
        if log is None or self.readonly:
            return True
        done = log.fold(self._install, wait=wait)
        if done:
            self.counters["folds"] += 1
            log.refresh()
        return done

    def pin(self) -> LogPin | None:
        """Hold folds off and freeze this process's view of the log (a snapshot's first step).

        The shards cannot change under a pin except by splits and merges
        (which move records, never change them), and the frozen entries are
        the log up to one synced position: together, one consistent version.
        Writers are never blocked by it.
        """
        log = self.log
        if log is None:
            return None
        stack = contextlib.ExitStack()
        stack.enter_context(log.pin())
        self._pins += 1
        try:
            log.refresh()
            frozen = {ns: log.entries(ns) for ns in log.namespaces()}
        except BaseException:
            self._pins -= 1
            stack.close()
            raise

        def release() -> None:
            self._pins -= 1
            stack.close()

        return LogPin(frozen, release)

    def _install(self, records: list[Installed]) -> None:
        """The fold's installer: write folded records into their shards, idempotently."""
        ops: list[Op] = []
        for ns, key, lsn, record in records:
            ops.append(Op(ns, key, "install", record=record, version=lsn))
        # Group by the shard each key resolves to, a few dozen shards per
        # commit: one syncfs makes a group durable, and no group holds more
        # locks than the open-file limit allows.
        groups: dict[tuple[tuple[str, ...], str], list[Op]] = {}
        for op in ops:
            view = self.view(op.namespace)
            groups.setdefault((op.namespace, view.resolve(hash_bits(op.key))), []).append(op)
        batch: list[Op] = []
        shards = 0
        for group in groups.values():
            batch.extend(group)
            shards += 1
            if shards >= _FOLD_SHARDS_PER_COMMIT:
                self._apply_shards(batch)
                batch, shards = [], 0
        if batch:
            self._apply_shards(batch)
        self.counters["records_folded"] += len(records)

    # ------------------------------------------------------------------ views

    def ns_dir(self, namespace: tuple[str, ...]) -> str:
        """Directory of a (validated) namespace; an internal one (see INTERNAL_NS) lives under internal/."""
        if namespace and namespace[0] == INTERNAL_NS:
            return os.path.join(self.root, INTERNAL_DIR, *(escape_segment(s) for s in namespace[1:]))
        path = self.ns_root
        for s in namespace:
            old = legacy_segment(s)
            # A directory an older filemem named the old way stays in use (see _names.legacy_segment).
            path = os.path.join(
                path, old if old is not None and _fs.lexists(os.path.join(path, old)) else escape_segment(s)
            )
        return path

    def view(self, namespace: tuple[str, ...]) -> View:
        """This process's view of ``namespace`` (created on first use)."""
        v = self._views.get(namespace)
        if v is None:
            v = View(namespace, self.ns_dir(namespace))
            # Never follow a link inside the store (ns/secret -> ../outside):
            # every file of a view is opened by a path through these directories.
            _fs.check_tree(self.root, v.dir)
            if len(self._views) > 65536:
                self._views.clear()
                self._views_by_dir.clear()
            self._views[namespace] = v
            self._views_by_dir[v.dir] = v
        return v

    def namespace_exists(self, namespace: tuple[str, ...]) -> bool:
        """Whether the namespace's directory exists (one lstat; raises StorageError when it cannot tell)."""
        return _fs.lexists(self.ns_dir(namespace))

    def view_of_dir(self, directory: str) -> View | None:
        """The view of the namespace stored in ``directory``, if this process has one."""
        return self._views_by_dir.get(directory)

    # ------------------------------------------------------------------ cache

    def load(self, path: str, prefix: str | None, *, fresh_ok: bool = False) -> Shard | None:
        """The current parse of the shard at ``path``, or None if absent.

        ``fresh_ok``: a cache entry that is still fresh (TTL, no change event)
        is used with no system call. Otherwise one ``stat`` when the cached
        parse is current, a read and parse when not. Raises CorruptShardError
        for a damaged file.
        """
        cache = self.cache
        if fresh_ok:
            hit = cache.fresh(path)
            if hit is not None:
                return hit.shard
        if self._overlay:
            pending = self._overlay.get(path)
            if pending is not None:
                got = _fs.read_file(pending)
                if got is not None:  # else recovered meanwhile: read the target
                    return decode_shard(got[0], path, self._codecs, prefix)
        # Whatever we find is current as of *before* we looked: a slow read
        # must not stretch the entry's freshness past the TTL.
        started = time.monotonic()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            cache.store(path, None, 0, as_of=started)
            return None
        except OSError as exc:
            raise _fs.storage_error(exc, "stat", path) from exc
        entry = cache.peek(path)
        if (
            entry is not None
            and entry.shard is not None
            and entry.shard.statkey == (st.st_ino, st.st_mtime_ns, st.st_size)
        ):
            cache.revalidated(path, entry, as_of=started)
            return entry.shard
        got = _fs.read_file(path)
        if got is None:
            cache.store(path, None, 0, as_of=started)
            return None
        data, key = got
        shard = decode_shard(data, path, self._codecs, prefix)
        shard.statkey = key
        self.counters["shard_parses"] += 1
        cache.store(path, shard, len(data), as_of=started)
        return shard

    # ------------------------------------------------------------------ reads

    def read(self, namespace: tuple[str, ...], key: str, *, fresh_ok: bool = False) -> Record | None:
        """The live record for ``key``, lock-free; None if absent or expired.

        ``fresh_ok``: serve from a fresh cache entry without any system call
        (the "cached" consistency level); otherwise revalidate ("strict").
        """
        return self.read_entry(namespace, key, fresh_ok=fresh_ok)[0]

    def read_entry(
        self, namespace: tuple[str, ...], key: str, *, fresh_ok: bool = False
    ) -> tuple[Record | None, CacheEntryLike | None]:
        """Like :meth:`read`, plus the cache entry the record came from when it was a fresh hit."""
        log = self.log
        if log is not None:
            # One 8-byte read of the shared commit counter; new synced records
            # (if any) go into the overlay, which is above the shards.
            log.refresh()
            entry = log.get(namespace, key)
            if entry is not None:
                rec = entry.record
                if rec is None:
                    return None, None
                x = rec.get("expires_at")
                if x is not None and x <= time.time():
                    return None, None
                # Current until the commit counter moves (Store's hot path checks
                # changed() first): a cached get of it needs no system call.
                return rec, (_LOG_HIT if fresh_ok else None)
        return self._read_shards(namespace, key, fresh_ok=fresh_ok)

    def _read_shards(
        self, namespace: tuple[str, ...], key: str, *, fresh_ok: bool = False
    ) -> tuple[Record | None, CacheEntryLike | None]:
        view = self.view(namespace)
        if view.stale and fresh_ok:
            view.refresh()
        bits = hash_bits(key)
        for attempt in range(8):
            prefix = view.resolve(bits)
            path = view.shard_path(prefix)
            if fresh_ok and attempt == 0:
                # Only the first look may trust the cache: a retry means the
                # cached picture was wrong somewhere, so revalidate everything.
                hit = self.cache.fresh(path)
                if hit is not None and hit.shard is None:
                    # Known absent and still fresh, but only trustworthy if the
                    # current listing also puts the key in a range no file
                    # covers: a shard split away is "absent" too, and a reader
                    # that resolved through an older listing must look again.
                    if prefix not in view.existing and view.resolve(bits) == prefix:
                        return None, None
                    hit = None
                    continue
                shard: Shard | None = hit.shard if hit is not None else self.load(path, prefix)
            else:
                hit = None
                shard = self.load(path, prefix)
            if shard is None or shard.splitting:
                if view.recheck(prefix, bits, missing=shard is None):
                    continue
                if shard is None:
                    return None, None
            rec = shard.records.get(key)
            if rec is None:
                return None, None
            x = rec.get("expires_at")
            if x is not None and x <= time.time():
                return None, None
            return rec, hit
        raise StorageError(f"namespace {view.dir} kept changing while reading {key!r}; retry", path=view.dir)

    def iter_shards(self, namespace: tuple[str, ...]) -> Iterator[tuple[str, Shard, Callable[[str], bool]]]:
        """Each live shard of a namespace with a filter saying which of its keys to take.

        Splits and merges may run meanwhile (see :mod:`filemem._walk`): a
        flagged shard shares its range with leaves, a shard back from a merge
        holds records already taken from its leaves; the filter keeps each
        record that exists throughout exactly once.
        """
        walk = ShardWalk(self.view(namespace), "listed")
        for prefix in walk:
            shard = self.load(walk.view.shard_path(prefix), prefix)
            if shard is None:
                walk.gone(prefix)  # split or merged away meanwhile: the next listing has its range
                continue
            kept = walk.take(prefix, shard.statkey, shard.splitting, shard.records)
            yield prefix, shard, (_all if kept is None else kept.__contains__)

    # ------------------------------------------------------------------ writes

    def apply(self, ops: list[Op]) -> list[Any]:
        """Apply ``ops`` atomically (all or nothing, across shards); return one result per op.

        put -> new version; delete -> bool; update -> new value.
        """
        self.check_open()
        if self.readonly:
            raise ReadOnlyError(f"store {self.root} was opened read-only")
        log = self.log
        if log is None:
            return self._apply_shards(ops)
        results = log.commit(lambda latest, first, now: self._decide(ops, latest, first, now))
        self.counters["log_commits"] += 1
        if self._announce_fd is not None:
            announce(self._announce_fd)  # after the commit is published: followers read it at once
        self._after_commit(log)
        return results

    def _decide(
        self,
        ops: list[Op],
        latest: Callable[[tuple[str, ...], str], Entry | None],
        first_lsn: int,
        now: float,
    ) -> tuple[list[LogOp], list[Any], list[Change]]:
        """Under the append lock: check and turn ``ops`` into log ops (all or none: raising logs nothing)."""
        logged: list[LogOp] = []
        changes: list[Change] = []
        results: list[Any] = []
        mine: dict[tuple[tuple[str, ...], str], Record | None] = {}
        codec = self.codec
        for op in ops:
            ident = (op.namespace, op.key)
            if ident in mine:
                rec = mine[ident]
            else:
                entry = latest(op.namespace, op.key)
                rec = entry.record if entry is not None else self._read_shards(op.namespace, op.key, fresh_ok=True)[0]
            rec, _ = _checked_version(op, rec, now)
            lsn = first_lsn + len(logged)
            if op.kind == "delete":
                results.append(rec is not None)
                if rec is not None:
                    logged.append(LogOp(op.namespace, op.key, DELETE))
                    changes.append((op.namespace, op.key, Entry(lsn, None)))
                    mine[ident] = None
                continue
            if op.kind == "update":
                assert op.fn is not None
                value = copy_value(op.fn(copy_value(rec["value"]) if rec is not None else None))
                results.append(copy_value(value))
            else:
                value = op.value
                results.append(lsn)
            data = codec.encode(value)
            if len(data) > self.max_value_bytes:
                raise InvalidValueError(f"value encodes to {len(data)} bytes; the limit is {self.max_value_bytes}")
            expires: float | None = None
            if op.ttl is not None:
                expires = now + op.ttl
            elif op.kind == "update" and rec is not None:
                expires = rec.get("expires_at")
            created = rec["created_at"] if rec is not None else now
            new: Record = {"value": value, "version": lsn, "created_at": created, "updated_at": now}
            if expires is not None:
                new["expires_at"] = expires
            logged.append(LogOp(op.namespace, op.key, PUT, codec.name, data, created, expires))
            changes.append((op.namespace, op.key, Entry(lsn, new)))
            mine[ident] = new
        return logged, results, changes

    def _after_commit(self, log: Log) -> None:
        """Fold triggers: soon after the last write (a timer), at once past the size threshold."""
        unfolded = log.unfolded_bytes()
        if unfolded > 4 * FOLD_BYTES:
            # The folder falls behind: the writer folds itself (back-pressure,
            # so the log cannot grow without bound).
            self.fold(wait=True)
            return
        folder = self._folder
        if folder is None:
            with self._folder_lock:  # threads of one process share one folder
                folder = self._folder
                if folder is None and not self.closed:
                    folder = self._folder = _Folder(self)
        if folder is not None:
            folder.poke(now=unfolded > FOLD_BYTES)

    def _apply_shards(self, ops: list[Op]) -> list[Any]:
        """Apply ``ops`` to the shard files directly (a v1 store opened read-write never gets here; the fold does)."""
        for op in ops:
            op.view = self.view(op.namespace)
            op.bits = hash_bits(op.key)
        deadline = time.monotonic() + self.lock_timeout_s
        backoff = 0.001
        ctx = _WriteContext()
        first = ops[0].view
        assert first is not None
        one_dir = all(op.view is first for op in ops)
        try:
            while True:
                if ctx.spare is None and one_dir:
                    if not first.dir_known:
                        _fs.ensure_dir(first.dir)
                        first.dir_known = True
                    # Created before the lock is taken: see _fs.TempFile.
                    ctx.spare = _fs.TempFile(first.shard_path(first.resolve(ops[0].bits)))
                outcome = self._attempt(ops, deadline, ctx)
                if outcome is not None:
                    # Outside the lock: the next writer need not wait for our
                    # directory fsync, and it builds on our renamed file, so
                    # nothing it makes durable can lack our write. We still
                    # return only once our own rename is durable.
                    for d in sorted(ctx.sync_dirs):
                        _fs.fsync_dir(d)
                    self._finish_splits({id(op.view): op.view for op in ops if op.view is not None}.values())
                    if self.after_apply is not None:
                        self.after_apply(ops)
                    return outcome
                self.counters["lock_retries"] += 1
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"timed out after {self.lock_timeout_s:.3f}s retrying a write in {first.dir}",
                        path=first.dir,
                        waited_s=self.lock_timeout_s,
                    )
                time.sleep(backoff * random.random())  # noqa: S311 - jitter, not crypto
                backoff = min(backoff * 2, 0.05)
        finally:
            if ctx.spare is not None:
                ctx.spare.discard()

    def _finish_splits(self, views: Iterable[View]) -> None:
        """Finish splits a dead writer left (a flagged shard whose leaves took over).

        Writers to the leaves never lock the flagged parent, so without this a
        stale parent could linger until ``check(fix=True)``. Best effort, after
        our own locks are released, so it can never deadlock with anything.
        """
        for view in views:
            if not view.overlapped:
                continue
            view.refresh()
            for prefix in sorted(view.overlapped):
                # Never wait here: the caller's write has committed, and the
                # parent may be busy with a live split or a snapshot.
                try:
                    maintain_shard(self, view, prefix, wait=False)
                except Exception:
                    self.counters["split_failures"] += 1
            view.refresh()

    def _attempt(self, ops: list[Op], deadline: float, ctx: _WriteContext) -> list[Any] | None:
        """One try at ``apply``: None means "state moved under us, retry"."""
        targets: dict[str, tuple[View, str]] = {}
        for op in ops:
            assert op.view is not None
            op.prefix = op.view.resolve(op.bits)
            targets[op.view.lock_path(op.prefix)] = (op.view, op.prefix)
        order = sorted(targets)
        if len(order) > _max_locks():
            # Each shard lock holds a descriptor until the commit: fail
            # clearly, before taking any, rather than with EMFILE halfway.
            raise InvalidValueError(
                f"this batch touches {len(order)} shards but at most {_max_locks()} can be locked at once "
                "(the open-file limit, ulimit -n): split it into smaller batches or raise the limit"
            )
        held: list[_locks.Held] = []
        try:
            for i, lock_path in enumerate(order):
                view, _ = targets[lock_path]
                if not view.dir_known:
                    _fs.ensure_dir(view.dir)
                    view.dir_known = True
                remaining = deadline - time.monotonic()
                if i == 0:
                    got = _locks.exclusive(lock_path, max(remaining, 0.001), turnstile=view.turnstile)
                    held.append(got)
                    ctx.contended = ctx.contended or got.contended
                    continue
                try:
                    held.append(_locks.exclusive(lock_path, max(min(remaining, _BATCH_STEP_S), 0.001), turnstile=None))
                except LockTimeout:
                    if remaining <= _BATCH_STEP_S:
                        raise
                    return None  # back off: release everything and start over
            self.recover_batches({view.dir for view, _ in targets.values()})
            shards: dict[str, Shard] = {}
            for lock_path in order:
                view, prefix = targets[lock_path]
                shard = self.load(view.shard_path(prefix), prefix)
                if shard is None:
                    view.refresh_below(prefix)
                    if any(o.view is view and view.resolve(o.bits) != o.prefix for o in ops):
                        return None
                    if view.has_shards_below(prefix):
                        return None  # the listing raced a split: never shadow its leaves
                    shard = Shard(prefix, self.codec.name, 0, {})
                elif shard.splitting:
                    self._split(view, shard)  # finish what a dead writer started
                    view.refresh()
                    return None
                shards[lock_path] = shard
            return self._commit(ops, targets, order, shards, ctx)
        finally:
            for h in reversed(held):
                h.release()

    def _commit(
        self,
        ops: list[Op],
        targets: dict[str, tuple[View, str]],
        order: list[str],
        shards: dict[str, Shard],
        ctx: _WriteContext,
    ) -> list[Any]:
        now = time.time()
        work = {lp: shards[lp].copy() for lp in order}
        dirty: dict[str, list[str]] = {}
        results: list[Any] = []
        # The fold drops what had expired on disk *before* installing: a record
        # that expired while it waited in the log still reaches the shard, and
        # is dropped by the next write or compact like any other (never lost
        # from the count compact reports, whenever the fold ran).
        installing = ops[0].kind == "install"
        if installing:
            for lp, shard in work.items():
                if shard.drop_expired(now):
                    dirty.setdefault(lp, [])  # rewritten; expiry is no change to announce
        for op in ops:
            assert op.view is not None
            lp = op.view.lock_path(op.prefix)
            shard = work[lp]
            rec = shard.records.get(op.key)
            if op.kind == "install":
                # The fold: never replace a record by an older one, so folding
                # any range twice is harmless.
                results.append(None)
                if rec is not None and rec["version"] >= op.version:
                    continue
                if op.record is None:
                    if shard.remove(op.key):
                        dirty.setdefault(lp, []).append(op.key)
                else:
                    shard.set(op.key, op.record)
                    dirty.setdefault(lp, []).append(op.key)
                continue
            rec, _ = _checked_version(op, rec, now)
            version = shards[lp].generation + 1
            if op.kind == "delete":
                removed = rec is not None
                if shard.remove(op.key):
                    dirty.setdefault(lp, []).append(op.key)
                results.append(removed)
                continue
            if op.kind == "update":
                assert op.fn is not None
                value = copy_value(op.fn(copy_value(rec["value"]) if rec is not None else None))
                results.append(copy_value(value))
            else:
                value = op.value
                results.append(version)
            new: Record = {
                "value": value,
                "version": version,
                "created_at": rec["created_at"] if rec is not None else now,
                "updated_at": now,
            }
            if op.ttl is not None:
                new["expires_at"] = now + op.ttl
            elif op.kind == "update" and rec is not None and rec.get("expires_at") is not None:
                new["expires_at"] = rec["expires_at"]
            shard.set(op.key, new)
            dirty.setdefault(lp, []).append(op.key)
        if not dirty:
            return results
        encoded: dict[str, bytes] = {}
        if any(shards[lp].codec != self.codec.name for lp in dirty):
            self._follow_marker_codec()
        for lp, keys in dirty.items():
            shard = work[lp]
            shard.generation += 1
            if not installing:
                shard.drop_expired(now)
            shard.touched = keys
            shard.splitting = False
            try:
                data = encode_shard(shard, self.codec)
            except InvalidValueError:
                # A record this shard already holds cannot be encoded with the
                # marker's codec (a value another process stored in its own
                # codec while a conversion ran): keep the shard's codec, which
                # encodes it and which every reader decodes.
                own = self._codecs.get(shards[lp].codec)
                if own is None or own is self.codec:
                    raise
                data = encode_shard(shard, own)
            for k in keys:
                pair = shard.pairs.get(k)
                if pair is not None and len(pair) > self.max_value_bytes:
                    raise InvalidValueError(
                        f"record {k!r} encodes to {len(pair)} bytes; the limit is {self.max_value_bytes}"
                    )
            encoded[lp] = data
        if len(encoded) == 1:
            ((lp, data),) = encoded.items()
            view, prefix = targets[lp]
            path = view.shard_path(prefix)
            old = shards[lp].statkey
            spare, ctx.spare = ctx.spare, None
            if spare is None or spare.directory != view.dir:
                if spare is not None:
                    spare.discard()
                spare = _fs.TempFile(path)
            key = spare.commit(path, data, sync=self.sync, min_mtime_ns=old[1] + 1 if old else 0, sync_dir=False)
            if self.sync:
                ctx.sync_dirs.add(view.dir)
            self._installed(path, work[lp], key)
        else:
            self._commit_batch(targets, work, encoded, shards)
        self.counters["shard_writes"] += len(encoded)
        for lp, data in encoded.items():
            view, prefix = targets[lp]
            # Split when the shard is too big, or, earlier, when writers queue
            # for it: a namespace many processes write at once gets more
            # shards (more writers in parallel), a quiet one stays one file.
            limit = self.shard_max_bytes // _CONTENDED_SPLIT_FRACTION if ctx.contended else self.shard_max_bytes
            if len(data) > limit and len(work[lp].records) > 1 and len(prefix) < 60:
                # The write has committed: a failed split must not report it as
                # failed (a retried update would apply twice). The shard stays
                # whole or flagged, and the next writer or check finishes it.
                try:
                    self._split(view, work[lp], target_bytes=min(limit, self.shard_max_bytes) // 2, leaf=True)
                except Exception:
                    self.counters["split_failures"] += 1
        return results

    def _follow_marker_codec(self) -> None:
        """Adopt the store marker's codec if it changed since we opened the store.

        Called only when a shard we are about to rewrite was written with
        another codec than ours, which happens when ``filemem convert`` runs:
        a long-lived process then switches to the new codec at its next write
        instead of writing the old one until it reopens the store. One small
        file read, and only on a mismatch; the marker is replaced atomically.
        """
        try:
            got = _read_marker(os.path.join(self.root, MARKER))
        except FileMemError:
            return  # keep writing what we write: every reader decodes either codec
        name = got.get("codec") if got is not None else None
        if isinstance(name, str) and name != self.codec.name and name in self._codecs:
            self.codec = self._codecs[name]

    def _installed(self, path: str, shard: Shard, key: _fs.StatKey) -> None:
        # Our own write is current by construction: a process reads its own
        # writes at once, whatever the cache's TTL.
        shard.statkey = key
        self.cache.store(path, shard, key[2])

    # ------------------------------------------------------------------ batches

    def _commit_batch(
        self,
        targets: dict[str, tuple[View, str]],
        work: dict[str, Shard],
        encoded: dict[str, bytes],
        shards: dict[str, Shard],
    ) -> None:
        batch_id = secrets.token_hex(8)
        written: list[tuple[str, str, str, _fs.StatKey]] = []  # (lock path, temp, target, key)
        jobs = []
        for lp in encoded:
            view, prefix = targets[lp]
            target = view.shard_path(prefix)
            old = shards[lp].statkey
            jobs.append(
                (lp, _fs.temp_path(target, f"b{batch_id}-"), target, max(time.time_ns(), old[1] + 1 if old else 0))
            )

        # Many temps: write them all, then make them durable with one syncfs
        # (one journal commit) instead of one fsync each.
        one_sync = self.sync and len(jobs) >= _SYNCFS_MIN_SHARDS and _fs.can_sync_filesystem()

        def write(job: tuple[str, str, str, int]) -> tuple[str, str, str, _fs.StatKey]:
            lp, tmp, target, mtime = job
            key = _fs.write_new_file(tmp, encoded[lp], sync=self.sync and not one_sync, mtime_ns=mtime)
            return lp, tmp, target, key

        try:
            for job in jobs:
                written.append(write(job))
            if one_sync:
                _fs.sync_filesystem(self.root)
            intent = {
                "filemem": FORMAT_VERSION,
                "id": batch_id,
                "pid": os.getpid(),
                "created_at": time.time(),
                "renames": [[os.path.relpath(t, self.root), os.path.relpath(g, self.root)] for _, t, g, _ in written],
            }
            if self.sync:
                # The temps' directory entries must be durable before the
                # intent that names them, or a power cut could keep the intent
                # and lose a temp: a committed batch applied in part.
                for d in sorted({os.path.dirname(g) for _, _, g, _ in written}):
                    _fs.fsync_dir(d)
            body = json.dumps(intent, separators=(",", ":")).encode()
            payload = b"%08x\n" % zlib.crc32(body) + body
            _fs.ensure_dir(self.batch_dir)
            final = os.path.join(self.batch_dir, batch_id + BATCH_SUFFIX)
            pending = _fs.temp_path(final)
            held = _locks.create_locked(pending)
        except BaseException:
            for _, tmp, _, _ in written:
                _fs.remove_quietly(tmp)
            raise
        try:
            try:
                _fs.write_fd(held.fd, payload, sync=self.sync, path=pending)
                _fs.replace(pending, final)
                if self.sync:
                    _fs.fsync_dir(self.batch_dir)  # the commit point is durable
            except BaseException:
                _fs.remove_quietly(pending)
                for _, tmp, _, _ in written:
                    _fs.remove_quietly(tmp)
                raise
            # Committed. From here a failure leaves the intent for recovery.
            dirs = set()
            for lp, tmp, target, key in written:
                _fs.replace(tmp, target)
                dirs.add(os.path.dirname(target))
                self._installed(target, work[lp], key)
            if self.sync:
                for d in sorted(dirs):
                    _fs.fsync_dir(d)
            _fs.remove_quietly(final)
        finally:
            held.release()

    def recover_batches(self, dirs: Iterable[str] | None = None) -> int:
        """Roll forward every committed batch whose owner died; return how many.

        A read-only store never does (it never changes the store); until a
        read-write process recovers, plain reads may see such a batch half
        applied.

        Recovery never guesses: when it cannot tell whether a temp exists (an
        I/O error), it keeps the intent and raises StorageError. It raises
        that only to a caller that will use a directory the intent names
        (``dirs``: the namespace directories the caller is about to lock;
        None: every caller), after trying every other intent, so one intent
        that cannot be finished never locks every process out of the store.
        ``check(fix=True)`` retries it and reports it while it fails.
        """
        if self.readonly:
            self._overlay = self._dead_batch_overlay()
            return 0
        names = _fs.listdir(self.batch_dir)
        if not names:
            return 0
        wanted = None if dirs is None else set(dirs)
        done = 0
        stuck: StorageError | None = None
        for name in sorted(names):
            if not name.endswith(BATCH_SUFFIX) or _fs.TEMP_MARK in name:
                continue
            path = os.path.join(self.batch_dir, name)
            try:
                if self._recover_one(path):
                    done += 1
            except StorageError as exc:
                named = self._intent_dirs(path)
                if stuck is None and (wanted is None or named is None or not wanted.isdisjoint(named)):
                    stuck = StorageError(
                        f"batch intent {path} could not be rolled forward ({exc.message}); it is kept, and "
                        "writes to the namespaces it names fail until it is: retry, or run `filemem check --fix`",
                        errno=exc.errno,
                        path=path,
                    )
                    stuck.__cause__ = exc
        if stuck is not None:
            raise stuck
        return done

    def _intent_dirs(self, path: str) -> set[str] | None:
        """The target directories an intent names; None if it cannot be read now."""
        try:
            raw = self._read_intent(path)
        except StorageError:
            return None
        intent = _parse_intent(raw) if raw is not None else None
        if intent is None:
            return set()
        return {os.path.dirname(os.path.join(self.root, target)) for _, target in intent["renames"]}

    def _read_intent(self, path: str) -> bytes | None:
        fd = _fs.open_regular(path, os.O_RDONLY)
        if fd is None:
            return None
        try:
            return _fs.read_fd(fd, path)
        finally:
            os.close(fd)

    def _dead_batch_overlay(self) -> dict[str, str]:
        """For a read-only store: target -> temp of every committed batch whose owner died.

        A read-only store may not roll such a batch forward, but a snapshot
        must still see it whole: it reads the temps in place of their targets.
        """
        overlay: dict[str, str] = {}
        for name in _fs.listdir(self.batch_dir):
            if not name.endswith(BATCH_SUFFIX) or _fs.TEMP_MARK in name:
                continue
            path = os.path.join(self.batch_dir, name)
            st = _fs.lstat(path)
            if st is None or not stat.S_ISREG(st.st_mode):
                continue  # never an intent (check reports it)
            got = _locks.try_exclusive_existing(path)
            if not isinstance(got, _locks.Held):
                continue  # live owner (it holds its shards' locks too) or gone
            try:
                raw = _fs.read_fd(got.fd, path)
            finally:
                got.release()
            intent = _parse_intent(raw)
            for tmp_rel, target_rel in intent["renames"] if intent else []:
                tmp = os.path.join(self.root, tmp_rel)
                if _fs.lexists(tmp):
                    overlay[os.path.join(self.root, target_rel)] = tmp
        return overlay

    def _recover_one(self, path: str) -> bool:
        """Roll one intent forward if its owner is dead; False if there was nothing to do.

        Raises StorageError, keeping the intent, whenever a step fails or the
        state of a temp cannot be known: a temp is taken as "already renamed"
        only when it certainly does not exist (ENOENT), never on an error.
        """
        st = _fs.lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            # A link or a special file was never an intent (writers create
            # them as regular files): not followed, not opened; check reports it.
            return False
        fd = _fs.open_regular(path, os.O_RDWR)
        if fd is None:
            return False
        try:
            # A live owner is finishing its renames (it holds no other lock we
            # could be waiting for): wait for it rather than read a half-applied
            # batch. A free lock means the owner died.
            held = _locks.wait_exclusive_fd(fd, path, self.lock_timeout_s)
        except BaseException:
            os.close(fd)
            raise
        try:
            try:
                if os.fstat(held.fd).st_nlink == 0:
                    return False  # finished (and removed) while we waited
            except OSError as exc:
                raise _fs.storage_error(exc, "stat", path) from exc
            intent = _parse_intent(_fs.read_fd(held.fd, path))
            if intent is not None:
                dirs = set()
                for tmp_rel, target_rel in intent["renames"]:
                    tmp = os.path.join(self.root, tmp_rel)
                    target = os.path.join(self.root, target_rel)
                    directory = os.path.dirname(target)
                    if _fs.lexists(tmp):
                        _fs.replace(tmp, target)
                        self.cache.forget(target)
                        dirs.add(directory)
                    elif _fs.dir_exists(directory):
                        # The temp certainly does not exist: this rename was
                        # done (the temps were durable before the intent was).
                        dirs.add(directory)
                    # else the directory itself is gone (a collector removed
                    # its marker namespace since): the temp lived in it, so
                    # there is nothing left to roll forward there, and
                    # nothing to sync. Proven by ENOENT, never guessed.
                if self.sync:
                    for d in sorted(dirs):
                        _fs.fsync_dir(d, missing_ok=True)
            _fs.remove(path)
            if self.sync:
                _fs.fsync_dir(self.batch_dir)
            self.counters["batches_recovered"] += 1
            return True
        finally:
            held.release()

    # ------------------------------------------------------------------ splits

    def _split(self, view: View, shard: Shard, *, target_bytes: int | None = None, leaf: bool = False) -> None:
        """Split ``shard`` (whose lock we hold) into leaves of at most ``target_bytes``.

        ``target_bytes`` defaults to half of ``shard_max_bytes``; a leaf is
        split further only while it holds more than one record.

        Safe to call on a flagged shard left by a crashed writer: leaves that
        already exist are authoritative and are left alone.
        """
        leaf_max = self.shard_max_bytes // 2 if target_bytes is None else target_bytes
        path = view.shard_path(shard.prefix)
        if not shard.splitting:
            flagged = shard.copy()
            flagged.splitting = True
            flagged.generation += 1
            flagged.touched = []
            data = encode_shard(flagged, self.codec)
            old = shard.statkey
            key = _fs.atomic_write(path, data, sync=self.sync, min_mtime_ns=old[1] + 1 if old else 0)
            self._installed(path, flagged, key)
            shard = flagged
        elif not shard.pairs:
            encode_shard(shard, self.codec)  # fill pair sizes
        if leaf:
            # The writer just wrote this shard, unflagged, under its lock: by
            # the invariant it has no descendants, so there is nothing to
            # list (a listing costs milliseconds in a directory of thousands).
            below: set[str] = set()
        else:
            view.refresh()
            below = {p for p in view.existing if p.startswith(shard.prefix) and p != shard.prefix}
        written: list[str] = []
        bits = {k: hash_bits(k) for k in shard.records}
        generation = shard.generation + 1

        def place(region: str, keys: list[str]) -> None:
            if region in below:
                return
            if any(p.startswith(region) for p in below) or (
                len(keys) > 1
                and len(region) < MAX_PREFIX_BITS
                and sum(len(shard.pairs.get(k, b"")) for k in keys) > leaf_max
            ):
                d = len(region)
                place(region + "0", [k for k in keys if bits[k][d] == "0"])
                place(region + "1", [k for k in keys if bits[k][d] == "1"])
                return
            # An empty range gets a file too: it carries the generation forward,
            # so a key deleted before the split and created again later gets a
            # version above every earlier one (no ABA).
            leaf_shard = Shard(
                region,
                shard.codec,
                generation,
                {k: shard.records[k] for k in keys},
                {k: shard.pairs[k] for k in keys if k in shard.pairs},
            )
            target = view.shard_path(region)
            key = _fs.atomic_write(target, encode_shard(leaf_shard, self.codec), sync=self.sync)
            self._installed(target, leaf_shard, key)
            written.append(region)

        d0 = len(shard.prefix)
        keys = list(shard.records)
        place(shard.prefix + "0", [k for k in keys if bits[k][d0] == "0"])
        place(shard.prefix + "1", [k for k in keys if bits[k][d0] == "1"])
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _fs.storage_error(exc, "remove", path) from exc
        if self.sync:
            _fs.fsync_dir(view.dir)
        self.cache.forget(path)
        if leaf:
            view.replace_split(shard.prefix, written)
        else:
            view.refresh()
        self.counters["splits"] += 1

    # ------------------------------------------------------------------ snapshot

    def snapshot_lock(self, view: View, prefix: str, first: bool) -> _locks.Held:
        """A shared lock on one shard for a snapshot (turnstile only for the first)."""
        return _locks.shared(view.lock_path(prefix), self.lock_timeout_s, turnstile=view.turnstile if first else None)

    # ------------------------------------------------------------------ namespaces

    def list_namespaces(self, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Namespaces at or under ``prefix`` that hold at least one shard file."""
        start = self.ns_dir(prefix) if prefix else self.ns_root
        found: list[tuple[str, ...]] = []

        def walk(directory: str, segments: tuple[str, ...]) -> None:
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:
                raise _fs.storage_error(exc, "list", directory) from exc
            if segments and any(e.name.endswith(SHARD_SUFFIX) for e in entries):
                found.append(segments)
            for e in sorted(entries, key=lambda e: e.name):
                if "." in e.name or not e.is_dir(follow_symlinks=False):
                    continue
                seg = unescape_segment(e.name)
                if seg is not None:
                    walk(e.path, (*segments, seg))

        walk(start, prefix)
        log = self.log
        if log is not None:
            log.refresh()
            have = set(found)
            n = len(prefix)
            for ns in log.namespaces():
                if (
                    ns[:n] == prefix
                    and ns not in have
                    and ns
                    and ns[0] != INTERNAL_NS
                    and any(e.record is not None for e in log.entries(ns).values())
                ):
                    found.append(ns)
                    have.add(ns)
        return sorted(set(found))  # a legacy and a current directory may name the same namespace

    def namespace_dirs(self) -> Iterator[tuple[str, tuple[str, ...] | None]]:
        """Every directory under ns/ with its namespace (None: not a valid escaped name)."""

        def walk(directory: str, segments: tuple[str, ...] | None) -> Iterator[tuple[str, tuple[str, ...] | None]]:
            yield directory, segments
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:
                raise _fs.storage_error(exc, "list", directory) from exc
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    seg = unescape_segment(e.name)
                    child = (*segments, seg) if segments is not None and seg is not None else None
                    yield from walk(e.path, child)

        st = _fs.lstat(self.ns_root)
        if st is not None and stat.S_ISDIR(st.st_mode):  # a link there is check's finding, never followed
            yield from walk(self.ns_root, ())


# ---------------------------------------------------------------------- helpers


#: Shards one fold commit writes at most (one syncfs each; locks held together).
_FOLD_SHARDS_PER_COMMIT: Final = 64


class _LogHit:
    """The "cache entry" of a record answered from the log's overlay: fresh until the commit counter moves."""

    __slots__ = ("fresh_until", "shard", "used")

    def __init__(self) -> None:
        self.shard: Shard | None = None
        self.fresh_until = float("inf")
        self.used = False


_LOG_HIT: Final = _LogHit()


class LogPin:
    """A snapshot's hold on the log: folds wait, and the log's records are frozen as of one position."""

    def __init__(self, frozen: dict[tuple[str, ...], dict[str, Entry]], release: Callable[[], None]) -> None:
        self.frozen = frozen
        self._release: Callable[[], None] | None = release

    def get(self, namespace: tuple[str, ...], key: str) -> Entry | None:
        """The frozen entry of a key, if the log held one unfolded."""
        ns = self.frozen.get(namespace)
        return None if ns is None else ns.get(key)

    def release(self) -> None:
        """Let folds run again (idempotent)."""
        release, self._release = self._release, None
        if release is not None:
            release()


class _Folder:
    """The background fold of one engine in one process: a thread, started on the first write, joined at close.

    It folds :data:`FOLD_IDLE_S` after the last write, or at once when poked
    past the size threshold. Folds are best effort here (the fold lock may be
    busy: another process folds, or a snapshot holds folds off); the next
    write, close or opener tries again.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._due: float | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="filemem-fold", daemon=True)
        self._thread.start()

    def poke(self, *, now: bool) -> None:
        with self._cond:
            self._due = time.monotonic() + (0.0 if now else FOLD_IDLE_S)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (self._due is None or self._due > time.monotonic()):
                    self._cond.wait(None if self._due is None else max(self._due - time.monotonic(), 0.001))
                if self._stop:
                    return
                self._due = None
            engine = self.engine
            try:
                if engine.closed:
                    return
                if not engine.fold(wait=False):
                    self.poke(now=False)  # busy: try again a little later
            except Exception:
                # Keep the thread alive: the log keeps every record, and the next
                # trigger (a write, the close, the next opener) folds again.
                engine.counters["fold_failures"] += 1
                self.poke(now=False)


def _max_version(path: str) -> int:
    """The highest record version a v1 shard file can hold: its generation (0 if unreadable)."""
    try:
        with open(path, "rb") as fh:
            head = fh.readline(1 << 16)
        got = json.loads(head.rsplit(b',"crc32"', 1)[0] + b"}")
        return int(got.get("generation", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _checked_version(op: Op, rec: Record | None, now: float) -> tuple[Record | None, int]:
    """The live record and its version (0 when absent or expired); ``ConflictError`` if ``op.if_version`` differs.

    One rule for both write paths (the log's and the shards'), so a conditional
    write means the same thing whichever format the store has.
    """
    if rec is not None and (x := rec.get("expires_at")) is not None and x <= now:
        rec = None
    current = rec["version"] if rec is not None else 0
    if op.if_version is not None and op.if_version != current:
        raise ConflictError(
            f"{'/'.join(op.namespace)}/{op.key}: expected version {op.if_version}, found {current}",
            namespace=op.namespace,
            key=op.key,
            expected=op.if_version,
            current_version=current,
        )
    return rec, current


def _max_locks() -> int:
    """How many shard locks one batch may hold: the open-file limit, less room for everything else."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 500
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1 << 20
    return max(16, soft - 128)


def _all(_key: str) -> bool:
    return True


def _read_marker(path: str) -> dict[str, Any] | None:
    got = _fs.read_file(path)  # never follows a link, never waits on a FIFO
    if got is None:
        return None
    raw = got[0]
    try:
        got = json.loads(raw)
    except ValueError:
        raise CorruptShardError(f"store marker {path} is not valid JSON", path=path) from None
    if not isinstance(got, dict):
        raise CorruptShardError(f"store marker {path} is not a JSON object", path=path)
    return got


def _parse_intent(raw: bytes) -> dict[str, Any] | None:
    """A batch intent, or None if torn (then it never committed: roll back)."""
    head, _, body = raw.partition(b"\n")
    try:
        if int(head, 16) != zlib.crc32(body):
            return None
        intent = json.loads(body)
    except ValueError:
        return None
    if not isinstance(intent, dict) or not isinstance(intent.get("renames"), list):
        return None
    for entry in intent["renames"]:
        # Never let an intent name a path outside the store's shards.
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(p, str) for p in entry)):
            return None
        tmp, target = entry
        parts = target.replace("\\", "/").split("/")
        if (
            os.path.isabs(target)
            or parts[0] not in (NS_DIR, INTERNAL_DIR)
            or any(p in ("", ".", "..") for p in parts)
            or not target.endswith(SHARD_SUFFIX)
            or not tmp.startswith(target + _fs.TEMP_MARK)
            or "/" in tmp[len(target) :]
        ):
            return None
    return intent


def maintain_shard(engine: Engine, view: View, prefix: str, *, wait: bool = True) -> tuple[int, int]:
    """Under the shard's lock: finish a split, drop expired records, split if oversize.

    Returns (records dropped, splits done). With ``wait=False`` a busy shard
    is skipped (0, 0).
    """
    splits_before = engine.counters["splits"]
    if wait:
        held = _locks.exclusive(view.lock_path(prefix), engine.lock_timeout_s, turnstile=view.turnstile)
    else:
        got = _locks.try_exclusive(view.lock_path(prefix))
        if got is None:
            return 0, 0
        held = got
    with held:
        engine.recover_batches((view.dir,))
        path = view.shard_path(prefix)
        shard = engine.load(path, prefix)
        if shard is None:
            return 0, 0
        if not shard.splitting and prefix in view.internal:
            view.refresh()  # the listing may predate a merge that removed its leaves since
        if shard.splitting or prefix in view.internal:
            engine._split(view, shard)
            return 0, engine.counters["splits"] - splits_before
        work = shard.copy()
        gone = work.drop_expired(time.time())
        data = b""
        if gone:
            work.generation += 1
            work.touched = gone
            data = encode_shard(work, engine.codec)
            old = shard.statkey
            key = _fs.atomic_write(path, data, sync=engine.sync, min_mtime_ns=old[1] + 1 if old else 0)
            engine._installed(path, work, key)
            shard = work
        st = None if data else _fs.lstat(path)
        size = len(data) if data else (st.st_size if st is not None else 0)
        if size > engine.shard_max_bytes and len(shard.records) > 1:
            engine._split(view, shard)
        return len(gone), engine.counters["splits"] - splits_before
