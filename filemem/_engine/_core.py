"""The engine: one store's files, locks and caches in one process (layer L2).

``Engine`` is the coordinator, assembled from one room per role, each a
class that builds on the one below it::

    _handle.Handle     per-process state, closed/fork checks, value limits
    _marker.Marker     the store marker, format versions, the root's layout
    _reads.Reads       views, the shard cache, lock-free gets, listings
    _batch.Batches     multi-shard intents and their recovery
    _split.Splits      splitting shards, maintain_shard
    _commit.Commits    commits to the shard files
    _log.LogGlue       the write-ahead log in front of the shards, the fold
    _core.Engine       open, apply, close

Invariant: ``apply`` is all or nothing, across shards and namespaces, and
once it returns the write is durable (at ``durability="fsync"``) and seen by
every later read of any process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .. import _fs
from .._errors import FileMemError, InvalidValueError, ReadOnlyError
from .._types import Durability
from .._view import View
from .._wal import Log
from .._wal._format import LogOp
from ..codecs import Codec, get_codec
from . import _marker
from ._api import EngineAPI
from ._decide import Put
from ._handle import ShardCacheLike, _fork_generation
from ._log import LogGlue, _Folder
from ._marker import BATCH_DIR, NS_DIR, STORE_FORMAT_VERSION
from ._ops import UNDECODED, Op, undecoded_put


class Engine(LogGlue):
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
            "fold_waits": 0,
            "close_folds": 0,
            #: Times a fold let a waiting listing or snapshot in mid-fold, and started over after another folded.
            "fold_yields": 0,
            "fold_restarts": 0,
        }
        self.log: Log | None = None
        #: The control page file, touched after each commit so watchers wake (see _wal._tail).
        self._announce_fd: int | None = None
        self._folder: _Folder | None = None
        self._folder_lock = threading.Lock()
        self._pins = 0
        #: The error of this handle's last failed back-pressure fold (see LogGlue._before_commit).
        self._fold_error: FileMemError | None = None
        if self.store_version < _marker.NEW_STORE_FORMAT and not self.readonly:
            self.upgrade()
        if self.store_version >= STORE_FORMAT_VERSION and self.log is None:
            self._open_log()

    # ------------------------------------------------------------------ setup

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
            # the last read-write handle to close folds what is left. Only the
            # last: another writer still open folds it at the latest when it
            # closes, so closers do not queue on the fold lock behind a backlog
            # (issue 13). Read-only handles do not count: they cannot fold.
            if not self.readonly and log.leave_writers() and log.failed is None:
                self.counters["close_folds"] += 1
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
            return self._apply_shards([_decoded(op, self._codecs) for op in ops])
        self._before_commit(log)
        blind = None
        if all(op.kind == "put" and op.if_version is None for op in ops):
            # Plain puts need nothing of the log's tail (their created_at is
            # carried over): the log need not read other writers' frames.
            def blind(first: int, now: float) -> tuple[list[LogOp], list[Any]]:
                return self._decide_blind(ops, first, now)

        results = log.commit(lambda latest, first, now: self._decide(ops, latest, first, now), blind)
        self.counters["log_commits"] += 1  # the log announced it once published (LogGlue._announce)
        self._after_commit(log)
        return results

    def apply_puts(self, puts: list[Put], extra: Sequence[Op] = ()) -> list[Any]:
        """``apply`` of plain puts given as ``(namespace, key, bytes of the store's codec)``, then ``extra``.

        Logs what ``apply([Op(ns, key, "put", UNDECODED, encoded=(codec, data)), ..., *extra])``
        logs (the same frame, results and overlay entries), without an ``Op``
        per record: the collector's batches (issue 13). A batch in which a key
        repeats, or with an ``extra`` op other than a plain put (the marker is
        one), or on a store without a log (format 1), goes through ``apply``.
        """
        self.check_open()
        if self.readonly:
            raise ReadOnlyError(f"store {self.root} was opened read-only")
        log = self.log
        idents = {(ns, key) for ns, key, _ in puts}
        if (
            log is None
            or len(idents) != len(puts)
            or any(op.kind != "put" or op.if_version is not None or (op.namespace, op.key) in idents for op in extra)
        ):
            return self.apply([*puts_as_ops(self.codec.name, puts), *extra])
        more = list(extra)
        self._before_commit(log)

        # All plain puts: ``apply`` offers the log its blind path too.
        def blind(first: int, now: float) -> tuple[list[LogOp], list[Any]]:
            return self._decide_puts_blind(puts, more, first, now)

        results = log.commit(lambda latest, first, now: self._decide_puts(puts, more, latest, first, now), blind)
        self.counters["log_commits"] += 1
        self._after_commit(log)
        return results

    def takes_undecoded(self) -> bool:
        """Whether ``apply`` takes puts whose value is :data:`UNDECODED` (only their ``encoded`` bytes given).

        Always, for the file engine: it decodes them itself where a value is needed.
        """
        return True


def puts_as_ops(codec: str, puts: list[Put]) -> list[Op]:
    """The ``Op`` list ``Engine.apply_puts`` stands for (its fallback, and what tests compare it with)."""
    return [undecoded_put(ns, key, codec, data) for ns, key, data in puts]


def _decoded(op: Op, codecs: dict[str, Codec]) -> Op:
    """``op`` with an :data:`UNDECODED` value decoded from its bytes (the shard path writes values)."""
    if op.value is not UNDECODED:
        return op
    assert op.encoded is not None, "an UNDECODED put carries its encoding"
    return dataclasses.replace(op, value=codecs[op.encoded[0]].decode(op.encoded[1]))


#: Type-checked only: the file engine is one EngineAPI (mypy fails here if it drifts).
_IMPLEMENTS: type[EngineAPI] = Engine
