"""The log glue: the write-ahead log (filemem._wal) in front of the shards (layer L2).

On a format-2 store a write is one record appended to the log (``_decide``,
in ``_decide.py``, turns ops into log ops under the append lock), and a fold
later installs the log's records into the shards through ``_commit``
(``_install``).

Invariant: the log's unfolded records are above the shards: a read asks the
log first, a listing merges its entries over the shards keeping the higher
version, a snapshot pins it (folds wait; entries frozen as of one synced
position). Versions of logged records are log positions, above every shard
generation (``upgrade`` starts the sequence at the highest one). A fold
installs idempotently and tells this process which cached shards it made
stale. Nothing above the engine learns that a log exists, except
check/compact/CLI through the documented engine interface (``settle``,
``fold``, ``check_log``, ``unfolded``, ``pin``; docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from .. import _fs, _locks
from .._errors import CorruptShardError, FileMemError, StorageError
from .._names import hash_bits_once
from .._shard import SHARD_SUFFIX, Record
from .._view import MAX_PREFIX_BITS
from .._wal import WAL_DIR, Log
from .._wal._fold import Checkpoint, Installed, write_checkpoint
from .._wal._log import APPEND_LOCK, FIRST_POSITION, LogIssue
from .._wal._overlay import Entry
from .._wal._tail import CONTROL_PAGE, LogTail, announce, control_fd
from ._decide import Decisions
from ._marker import INTERNAL_DIR, MARKER, STORE_FORMAT_VERSION, _read_marker
from ._ops import Op
from ._reads import FOLD_WAIT_LOCK, pinned

#: Fold when this many bytes of log are unfolded (also the overlay's bound).
FOLD_BYTES: Final = 4 << 20
#: Past this much unfolded log a writer folds itself after its commit; if that
#: fold fails, its next write folds first and is refused if it fails again.
BACKLOG_BYTES: Final = 4 * FOLD_BYTES
#: Fold this long after the last write of a process.
FOLD_IDLE_S: Final = 0.25
#: How much log the background folder moves per fold before it lets go of the fold lock.
FOLD_STEP_BYTES: Final = 1 << 20
#: How much log a fold moves between two checkpoints. Each step writes every
#: shard its records land in once (``fold_range`` indexes the step, then installs
#: it shard group by shard group, holding a few thousand records decoded at a
#: time), so a longer step means fewer shard writes per record: 256 KiB steps
#: cost about one shard rewrite per folded record once a namespace has more
#: shards than a step has records (issue 13; docs/benchmarks.md). A listing or
#: a snapshot that waits for a fold in progress is let in between two installs
#: of a step (``LogFold._let_readers_in``), not at its end: before, 4 MiB steps
#: into 1 KiB shards made a listing after a SIGKILL loop time out (10 s) on a
#: loaded machine (tests/concurrency/test_crash.py). Not longer: the step's
#: index costs about 200 bytes a key in the folding process.
FOLD_CHECKPOINT_BYTES: Final = 4 << 20
#: How often forgetting folded keys' cached shards lets go of the GIL.
_FORGET_YIELD_EVERY_S: Final = 0.0005
#: Shards one fold commit writes at most (one syncfs each; locks held together).
_FOLD_SHARDS_PER_COMMIT: Final = 64


def _waited_on(wait_lock: str) -> bool:
    """True while a listing or a snapshot waits to hold the folds off (``pinned`` holds the wait lock shared)."""
    probe = _locks.try_exclusive(wait_lock)
    if probe is None:
        return True
    probe.release()
    return False


class LogGlue(Decisions):
    """The engine's side of the log: open, upgrade, decide, fold, pin."""

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
                fold_step_bytes=FOLD_CHECKPOINT_BYTES,
                on_folded=self._forget_folded,
            )
        except FileMemError:
            raise  # ours already (a LockTimeout is an OSError too, and must stay one)
        except OSError as exc:
            raise _fs.storage_error(exc, "open the log in", wal) from exc
        self.log.resolve_created = self.resolve_created
        if not self.readonly:
            self._announce_fd = control_fd(wal)
            # Once per publish, not per commit: a sync that covers other
            # writers' frames publishes (and announces) for them too.
            self.log.on_published = self._announce
        if not self.readonly and self.log.unfolded_bytes() > 0 and self.log.last_handle():
            # Recovery: a writer died with records unfolded, and nobody else is
            # here to fold them. The open has already recovered the log and its
            # control page (Log's constructor), so every record is readable
            # through the overlay: the fold runs in the background, in bounded
            # steps, instead of holding the open for the whole backlog (with
            # small shards that meant seconds: issue 13). A close still folds
            # whatever is left, so a store at rest has every record in its shards.
            self._poke_folder(now=True)
        elif not self.readonly:
            # Started here, not on the first write: starting a thread waits
            # until it runs, which with four fresh writers on two cores took
            # milliseconds of each one's first put (issue 13).
            self._start_folder()

    def _announce(self) -> None:
        """Wake the store's watchers: a commit was published (see :func:`filemem._wal._tail.announce`)."""
        fd = self._announce_fd
        if fd is not None:
            announce(fd)

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
        by_ns: dict[tuple[str, ...], list[str]] = {}
        for ns, key in keys:
            by_ns.setdefault(ns, []).append(key)
        yielded = time.perf_counter()
        for ns, ns_keys in by_ns.items():
            if time.perf_counter() - yielded >= _FORGET_YIELD_EVERY_S:
                # Many namespaces after a big fold: let go of the GIL now and
                # then (an event loop waits for it), not per namespace (a
                # sleep(0) costs 77 us on this machine).
                time.sleep(0)
                yielded = time.perf_counter()
            view = self._views.get(ns)
            if view is None:
                continue  # never read here: nothing cached through a view
            # Once per namespace and call, not per key (it walks the listing).
            deepest = min(max((len(p) for p in view.existing), default=0) + 8, MAX_PREFIX_BITS)
            view.stale = True
            # Every shard that can hold a key, not just the one our listing
            # names: the fold may have split or a compaction merged since we
            # listed, and a stale cached leaf must never answer for it. The
            # cache is asked, not the view: its memo would keep one path per
            # key and depth for ever (issue 13: tens of MB per process after a
            # few folds of random keys).
            self.cache.forget_covering(view.dir, sorted(hash_bits_once(k) for k in ns_keys), deepest)

    def changed(self) -> bool:
        """Whether another write may have committed since this process last looked (no system call)."""
        log = self.log
        return log is not None and log.changed()

    def log_generation(self) -> int:
        """A number that moves whenever the log's records as this process sees them change (0 without a log).

        A value cached above the engine (the file backend's hot-key table) is
        current only while this and :meth:`changed` say nothing moved:
        ``changed`` goes back to False once this process has read the new
        frames in, so it alone cannot tell a cache that one of them was its key.
        """
        log = self.log
        return 0 if log is None else log.overlay.generation

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
        self._fold_through(log.positions()[0], wait=self._pins == 0)

    def _fold_through(self, target: int, *, wait: bool) -> bool:
        """Fold until the shards hold the log up to ``target``; False if that could not be had in time.

        In steps of :data:`FOLD_STEP_BYTES`, letting go of the fold lock
        between two, so that closers and other folders take turns instead of
        one holding it for a whole backlog; another process's fold counts
        (its steps move ``folded`` too), so a waiter stops as soon as the
        shards hold ``target``. Gives up after waiting ``lock_timeout_s`` in
        all for a busy fold lock (at once without ``wait``); time spent
        folding itself does not count. Before, one unbounded fold per settle
        held the lock for the whole backlog, and every closer waited for it
        (issue 13: collectors closing together, 2 x 10 s each).
        """
        log = self.log
        assert log is not None
        waited = 0.0
        sleep = 0.0005
        folded = log.positions()[1]
        while folded < target:
            moved = self.fold(wait=False, max_bytes=FOLD_STEP_BYTES)
            if not moved:
                if not wait or waited >= self.lock_timeout_s:
                    return False
                self.counters["fold_waits"] += 1
                started = time.monotonic()
                time.sleep(sleep)
                waited += time.monotonic() - started
                sleep = min(sleep * 2, 0.02)
            now_folded = log.positions()[1]
            if moved and now_folded <= folded:
                return now_folded >= target  # our own fold moved nothing more: nothing left it can move
            folded = now_folded
        log.refresh()
        return True

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

    @contextlib.contextmanager
    def own_folds_held(self) -> Iterator[None]:
        """Keep this process's folds out while the block runs (an in-flight one finishes its step first).

        ``check`` walks the shards under it: a fold holds shard locks, and the
        walk leaves a busy shard alone. Other processes' folds are not held off.
        """
        log = self.log
        if log is None or self.readonly:
            yield
            return
        with log.local_folds_held():
            yield

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

    def fold(self, *, wait: bool, max_bytes: int | None = None) -> bool:
        """Fold every synced log record into the shards; False if the fold lock was busy.

        ``max_bytes``: fold about that much of the log at most (whole
        checkpoint steps, at least one), leaving the rest for the next fold.
        """
        log = self.log
        if log is None or self.readonly:
            return True
        wait_lock = os.path.join(log.dir, FOLD_WAIT_LOCK)
        # A listing or a snapshot waits to hold the folds off (see
        # _reads.pinned): let it in before this fold, as if the lock were
        # busy (the caller tries again later), and between two installs.
        if not wait and _waited_on(wait_lock):
            return False
        waiting = functools.partial(_waited_on, wait_lock)
        yields, restarts = log.fold_yields, log.fold_restarts
        try:
            done = log.fold(self._install, wait=wait, max_bytes=max_bytes, shard_of=self._shard_of, waiting=waiting)
        finally:
            self.counters["fold_yields"] += log.fold_yields - yields
            self.counters["fold_restarts"] += log.fold_restarts - restarts
        if done:
            self.counters["folds"] += 1
            # Drop what this fold moved from the overlay (and the cached shards
            # it made stale), without reading the unfolded rest of the log in:
            # that is the next read's refresh (see Log.drop_folded).
            log.drop_folded()
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
        stack.enter_context(pinned(log, self.lock_timeout_s))
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

    def _shard_of(self, namespace: tuple[str, ...], key: str) -> str:
        """The shard ``key`` resolves to now (the fold groups a range's keys by it; a split meanwhile only regroups)."""
        return self.view(namespace).resolve(hash_bits_once(key))

    def _install(self, records: list[Installed], expired_before: float) -> None:
        """The fold's installer: write folded records into their shards, idempotently.

        Carried ``created_at`` values are resolved against the shards' records
        there (``_commit``), before any expired record is dropped.
        """
        ops: list[Op] = []
        for ns, key, lsn, record in records:
            ops.append(Op(ns, key, "install", record=record, version=lsn, expired_before=expired_before))
        # Group by the shard each key resolves to, a few dozen shards per
        # commit: one syncfs makes a group durable, and no group holds more
        # locks than the open-file limit allows.
        groups: dict[tuple[tuple[str, ...], str], list[Op]] = {}
        for ns in {op.namespace for op in ops}:
            view = self.view(ns)
            # A namespace's directory can go while its records wait in the log
            # (a collector's applied-marker directory is removed with its
            # journal; recovery removes the marker again): a view that knew the
            # directory must create it anew, or this fold would fail for ever.
            if view.dir_known and not _fs.lexists(view.dir):
                view.dir_known = False
        for op in ops:
            view = self.view(op.namespace)
            op.bits = hash_bits_once(op.key)  # once per op (``_apply_shards`` keeps it), not through the cache
            groups.setdefault((op.namespace, view.resolve(op.bits)), []).append(op)
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

    def _after_commit(self, log: Log) -> None:
        """Fold triggers: soon after the last write (a timer), at once past the size threshold."""
        unfolded = log.unfolded_at_commit  # as of this commit's append: no second read of the page
        if unfolded > BACKLOG_BYTES:
            # The folder falls behind: the writer folds itself (back-pressure,
            # so the log cannot grow without bound), its share only: what lies
            # past the bound, about its own frame. Folding the whole backlog
            # here stalled one put of a fresh Store for 327 s after a 1M-record
            # populate (tools/bench.py latency, issue 13).
            # Never raised from here: this write is in the log, synced, and
            # acknowledging it as failed would make a retried update apply
            # twice. The next write of this handle folds first instead and is
            # refused, unlogged, if the fold still fails (_before_commit).
            self._fold_share(unfolded)
            return
        self._poke_folder(now=unfolded > FOLD_BYTES)

    def _before_commit(self, log: Log) -> None:
        """Back-pressure that bounds the log when the fold fails (a damaged shard, a full disk).

        Only after this handle's own back-pressure fold failed (no page read
        otherwise): while the log is still more than :data:`BACKLOG_BYTES`
        behind, fold first, and refuse the write, before anything is logged,
        if that fails too. So a fold that cannot move (it stops at a shard it
        cannot read until ``check --fix``) costs writers a clear error once
        the backlog passes the bound, instead of a log and an overlay in
        every process that grow without limit.
        """
        failed = self._fold_error
        if failed is None:
            return
        behind = log.unfolded_bytes()
        if behind <= BACKLOG_BYTES:
            self._fold_error = None  # another process's fold got through (after check --fix, say)
            return
        exc = self._fold_share(behind)
        if exc is not None:
            raise StorageError(
                f"write refused, nothing was logged: the write-ahead log of {self.root} is "
                f"{behind / (1 << 20):.1f} MiB behind the shard files and the fold cannot move ({exc}); "
                "`filemem check --fix` repairs what stops it",
                path=getattr(exc, "path", None) or self.root,
            ) from exc

    def _fold_share(self, behind: int) -> FileMemError | None:
        """Fold what lies past :data:`BACKLOG_BYTES` (plus a step); remember and return a failure."""
        try:
            self.fold(wait=True, max_bytes=behind - BACKLOG_BYTES + FOLD_STEP_BYTES)
        except FileMemError as exc:
            self.counters["fold_failures"] += 1
            self._fold_error = exc
            return exc
        self._fold_error = None
        return None

    def _poke_folder(self, *, now: bool) -> None:
        """Ask this process's background folder to fold (at once, or :data:`FOLD_IDLE_S` from now); start it first."""
        folder = self._folder or self._start_folder()
        if folder is not None:
            folder.poke(now=now)

    def _start_folder(self) -> _Folder | None:
        """This process's background folder, started if it is not yet (None once closed)."""
        with self._folder_lock:  # threads of one process share one folder
            folder = self._folder
            if folder is None and not self.closed:
                folder = self._folder = _Folder(self)
            return folder


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
    past the size threshold or after an open that found a dead writer's
    records unfolded, :data:`FOLD_STEP_BYTES` of log per fold until none is
    left. Folds are best effort here (the fold lock may be busy: another
    process folds, or a snapshot holds folds off); the next write, close or
    opener tries again.
    """

    def __init__(self, engine: LogGlue) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._due: float | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="filemem-fold", daemon=True)
        self._thread.start()

    def poke(self, *, now: bool) -> None:
        due = time.monotonic() + (0.0 if now else FOLD_IDLE_S)
        if not now and self._due is not None:
            # The thread already waits for a due time: moving it later needs no
            # wake-up (the thread finds the new time when the old one comes, and
            # sleeps on). Notifying on every write cost each put a thread switch
            # and a wait for the GIL: 40% of a put's time in one process. A poke
            # lost to the thread taking the old time is harmless: the fold it is
            # starting sees this write (committed before the poke).
            self._due = due
            return
        with self._cond:
            self._due = due
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
                log = engine.log
                if not engine.fold(wait=False, max_bytes=FOLD_STEP_BYTES):
                    self.poke(now=False)  # busy: try again a little later
                elif log is not None and log.fold_cut:
                    # Bounded steps: between two, a snapshot can pin and a
                    # close can stop this thread without waiting for a whole
                    # backlog; the next step starts at once.
                    self.poke(now=True)
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
