"""The write-ahead log of one store in one process (layer L2): the engine's one door to ``wal/``.

What the engine calls, and nothing else:

* :meth:`Log.refresh` before a read: one 8-byte read of the commit counter;
  if it moved, the new synced frames go into the overlay. Returns the keys the
  fold moved into the shards since the last call (their cached shards are
  stale).
* :meth:`Log.get` for the newest synced unfolded record of a key.
* :meth:`Log.commit` for a write: under the append lock it brings the overlay
  to the log's end, lets the caller decide (conditional writes see every
  earlier write, synced or not), appends one frame, releases the lock, syncs,
  publishes. The caller's writes are acknowledged only after that. A batch of
  plain puts from a handle whose overlay is behind skips the first step and
  leaves its frame out of the overlay (``blind``; the chain rule, _carry).
* :meth:`Log.fold` to move synced frames into the shards, and
  :meth:`Log.pin` to keep folds out while a snapshot reads.

Files in ``wal/`` (docs/format.md has their bytes): ``<segment>.log``,
``control`` (the shared page), ``checkpoint``, ``append.lock``, ``fold.lock``
and ``open.lock`` (every open handle holds it shared; the first opener, who
gets it exclusively, re-derives the control page from the log).

**A failed sync is fatal for the handle**: the error is raised now and on
every later write, because after a failed ``fdatasync`` the kernel may have
dropped the dirty pages and a retry could report success for data that is
gone (PostgreSQL's "fsyncgate").

The parts live by role: :mod:`._log_core` (files, append lock, a consistent
control page), :mod:`._log_fold` (fold and pin), :mod:`._repair` (check and
repair); this module opens and closes the log, reads it and writes it.

Invariant: nothing is served to a reader past the synced position, and a
write is acknowledged only once the synced position covers it.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from .. import _fs
from .._errors import StorageError
from ..codecs import Codec
from . import _control, _format, _platform, _repair
from ._carry import Carried
from ._control import Control, ControlPage, boot_id
from ._log_core import (
    APPEND_LOCK,
    CONTROL,
    FIRST_POSITION,
    FOLD_LOCK,
    OPEN_LOCK,
    PAGE_LOCK,
    WAL_DIR,
    Decision,
    _storage_errors,
    record_of,
    resolved_record_of,
)
from ._log_reads import LogReads
from ._overlay import Change, Entry, Overlay
from ._reader import LogReader
from ._repair import LogIssue
from ._writer import LogWriter

__all__ = [
    "APPEND_LOCK",
    "CONTROL",
    "FIRST_POSITION",
    "FOLD_LOCK",
    "OPEN_LOCK",
    "PAGE_LOCK",
    "WAL_DIR",
    "Decision",
    "Log",
    "LogIssue",
    "record_of",
]


class Log(LogReads):
    """The log of one store, seen from one process. Thread-safe."""

    def __init__(
        self,
        root: str,
        *,
        readonly: bool,
        sync: bool,
        codecs: dict[str, Codec],
        lock_timeout_s: float,
        segment_bytes: int = 16 << 20,
        fold_bytes: int = 4 << 20,
        fold_step_bytes: int = 256 << 10,
        on_folded: Callable[[list[tuple[tuple[str, ...], str]] | None], None] = lambda _keys: None,
    ) -> None:
        self.root = root
        self.dir = os.path.join(root, WAL_DIR)
        self.readonly = readonly
        self.sync_on = sync
        self.codecs = codecs
        self.lock_timeout_s = lock_timeout_s
        self.segment_bytes = segment_bytes
        self.fold_bytes = fold_bytes
        #: How much log a fold moves between two checkpoints.
        self.fold_step_bytes = fold_step_bytes
        #: Told, under the overlay lock, which keys left the overlay because the
        #: shards now hold them (their cached shards are stale), or None when
        #: the log behind the overlay was retired (every cached shard is).
        self.on_folded = on_folded
        #: Told, outside every lock, each time this handle publishes commits
        #: (its own or, through a sync that covered them, other writers'):
        #: the engine wakes the store's watchers then (see _wal._tail).
        self.on_published: Callable[[], None] = lambda: None
        #: The error that made this handle unusable for writes (a failed sync).
        self.failed: StorageError | None = None
        self._mu = threading.RLock()  # overlay and control reads/writes in this process
        self._append_mu = threading.Lock()  # threads of this process queue here, not on flock
        self._page_mu = threading.Lock()
        self._fold_mu = threading.Lock()
        self.folds = 0
        self.fold_yields = 0
        self.fold_restarts = 0
        #: Commits of plain puts logged without reading the log's tail (``commit``'s ``blind``).
        self.blind_commits = 0
        #: Whether this handle's last fold stopped at ``max_bytes`` with synced log left behind.
        self.fold_cut = False
        self.last_write = 0.0
        #: How much log was unfolded when this handle's last commit appended
        #: (the fold trigger after a write reads it instead of the page again).
        self.unfolded_at_commit = 0
        self._open()

    # ------------------------------------------------------------------ open / close

    def _open(self) -> None:
        self._pid = os.getpid()
        opened: list[Callable[[], None]] = []
        try:
            self.control = ControlPage(os.path.join(self.dir, CONTROL))
            opened.append(self.control.close)
            self.reader = LogReader(self.dir)
            opened.append(self.reader.close)
            self.writer = (
                None if self.readonly else LogWriter(self.dir, segment_bytes=self.segment_bytes, sync=self.sync_on)
            )
            if self.writer is not None:
                opened.append(self.writer.close)
            self._append_path = os.path.join(self.dir, APPEND_LOCK)
            self._page_path = os.path.join(self.dir, PAGE_LOCK)
            self._append_fd = os.open(self._append_path, os.O_RDWR | os.O_CREAT, 0o600)
            opened.append(functools.partial(os.close, self._append_fd))
            self._page_fd = os.open(self._page_path, os.O_RDWR | os.O_CREAT, 0o600)
            opened.append(functools.partial(os.close, self._page_fd))
            self._open_fd = os.open(os.path.join(self.dir, OPEN_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
            opened.append(functools.partial(os.close, self._open_fd))
            if not self.readonly:
                self._writers_fd = self._join_writers()  # see LogFold.leave_writers
                opened.append(functools.partial(os.close, self._writers_fd))
            self._private = None  # a read-only handle's own view when the page cannot be trusted
            first = _platform.lock(self._open_fd, exclusive=True, blocking=False)
            try:
                layout = self.control.layout()
                if not first and not self.readonly and layout is not None and layout != _control.LAYOUT:
                    # Live handles of another build guard the page another way:
                    # rebuilding it under them would break their seqlocks.
                    raise self._foreign_layout()
                if first or not self.control.valid() or self.control.boot() != boot_id():
                    self._rederive()
            finally:
                # Shared from now on (a downgrade for the first opener).
                _platform.lock(self._open_fd, exclusive=False, blocking=True)
            if self.writer is not None:
                self._prepare_writer()
        except BaseException:
            # A handle that failed to open must not stay counted as open: its
            # open lock would make every later opener skip the recovery this
            # one did not finish, and no close would ever release it.
            for close in reversed(opened):
                with suppress(OSError):
                    close()
            raise
        c = self._control()
        self.overlay = Overlay(c.folded)
        self.overlay.pruned_lsn = c.folded_lsn
        self._seen_commits = -1
        #: One decode for every unfolded entry this handle reads in (see _overlay.Entry);
        #: it resolves a carried ``created_at`` with the engine's resolver, set after the open.
        self._decode_record = self._resolved_record
        self._seen_folds = c.folds

    def _foreign_layout(self) -> StorageError:
        """The error for a control page of another layout under live handles (see _control, "Layouts")."""
        path = self.control.path
        return StorageError(
            f"control page {path} has layout {self.control.layout()}, not {_control.LAYOUT}: a process running "
            "another build of filemem has this store open; close it, then open the store again",
            path=path,
        )

    def _prepare_writer(self) -> None:
        """Open the segment the next frame goes to, creating it if nobody has yet (a read-write open's last step).

        So a new store's first put does not create the log's first segment
        under the append lock (about a millisecond of file creation and
        syncs, every other writer waiting; issue 13). Opening a segment that
        exists needs no lock; creating one takes the append lock, and the
        page is read again under it (another writer may have moved on).
        """
        assert self.writer is not None
        if self.writer.prepare(_format.segment_of(self._control().appended), create=False):
            return
        with self._append_locked():
            self.writer.prepare(_format.segment_of(self._control(held=True).appended), create=True)

    def _resolved_record(self, ref: tuple[Any, ...], lsn: int, now: float) -> dict[str, Any] | None:
        """The record an indexed op stands for, as readers are served it (see ``resolved_record_of``).

        ``ref`` is the frame's payload and the op as :func:`_format.index_batch`
        found it, and for a carried put whose key had an earlier entry, what
        its ``created_at`` carries over from that entry (``_changes``): a time,
        or a :class:`Carried` the shard resolves.
        """
        op = _format.op_at(ref[0], ref[1])
        if len(ref) == 2:
            return resolved_record_of(self.codecs, self.resolve_created, op, lsn, now)
        rec = record_of(self.codecs, op, lsn, now)
        if rec is not None and isinstance(rec["created_at"], Carried):
            base = ref[2]
            if isinstance(base, Carried) and self.resolve_created is not None:
                base = self.resolve_created(op.namespace, op.key, lsn, base)
            rec["created_at"] = base
        return rec

    def _rederive(self) -> None:
        """Find the log's end from the checkpoint and a scan.

        The page may be stale: after a reboot, or when nobody had the store open.
        A writable handle derives and writes it under the append lock: the open
        lock is not proof that nobody else is writing (an flock conversion drops
        the old lock before it grants the new one, so a live handle can be
        without it for an instant), and a scan made outside the append lock
        could end before records a live writer appended and acknowledged
        meanwhile; writing that end into the page would hand their place in
        the log to the next append.
        """
        if self.readonly:
            self._private = self._derive()
            return
        with self._append_locked(), self._page_locked():
            c = self._derive()
            old = self.control.read() if self.control.valid() else None
            if old is not None and old == c and self.control.boot() == boot_id():
                return  # the page was right (nobody had the store open, nothing changed): leave it alone
            c.commits += 1
            assert self.writer is not None
            # What a scan finds was written, but maybe never synced (a writer
            # killed between write and fdatasync, or "flush"): sync it now,
            # since the page is about to call it synced.
            if self.sync_on and os.path.exists(self.writer.path(_format.segment_of(c.synced))):
                self.writer.sync(c.synced)
            self.control.initialise(c, boot_id())

    def after_fork(self) -> None:
        """In a forked child: drop inherited descriptors (without unlocking the parent's locks) and reopen."""
        for fd in (self._append_fd, self._page_fd, self._open_fd, self._writers_fd):
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)
        self._writers_fd = None
        self.control.close()
        self.reader.close()
        if self.writer is not None:
            self.writer.close()
        self._mu = threading.RLock()
        self._append_mu = threading.Lock()
        self._page_mu = threading.Lock()
        self._fold_mu = threading.Lock()
        self._open()

    def close(self) -> bool:
        """Close; True if this was the last open handle of the store (then nobody else holds the log open)."""
        if self._pid != os.getpid():
            return False
        last = _platform.lock(self._open_fd, exclusive=True, blocking=False)
        os.close(self._open_fd)
        os.close(self._append_fd)
        os.close(self._page_fd)
        if self._writers_fd is not None:  # not left (a failed handle): closing lets go of it
            os.close(self._writers_fd)
            self._writers_fd = None
        self.control.close()
        self.reader.close()
        if self.writer is not None:
            self.writer.close()
        return last

    def last_handle(self) -> bool:
        """Whether no other handle (in any process) has the store open right now.

        The handle holds its shared open lock again when this returns, either way.
        """
        if _platform.lock(self._open_fd, exclusive=True, blocking=False):
            _platform.lock(self._open_fd, exclusive=False, blocking=True)
            return True
        # A refused flock conversion has already dropped the shared lock (Linux
        # and BSD remove the old lock before trying the new one). Without this a
        # live handle would stop counting as open, and the next opener would
        # take itself for the first and re-derive the page under live writers
        # (issue 13's lost acknowledged puts).
        _platform.lock(self._open_fd, exclusive=False, blocking=True)
        return False

    # ------------------------------------------------------------------ writes

    @_storage_errors("append to the log in")
    def commit(
        self,
        decide: Callable[[Callable[[tuple[str, ...], str], Entry | None], int, float], Decision],
        blind: Callable[[int, float], tuple[list[_format.LogOp], list[Any]]] | None = None,
    ) -> list[Any]:
        """Decide and log one write; return the caller's results once it is durable.

        ``decide(latest, first_lsn, now)`` runs under the append lock;
        ``latest(ns, key)`` is the newest logged entry of a key (pending ones
        included), None if the log has none unfolded (then the shards say).

        ``blind(first_lsn, now)``, given for a batch of plain puts only, is
        used instead when this process's overlay is behind the log's end: the
        other writers' frames are not read at all (with four writers, reading
        them was most of every put, issue 13), and the ops it returns carry
        their ``created_at`` over (the chain rule, _carry). Its frame is not
        added to the overlay, which stays in log order: the next read or
        conditional write reads it back from the log with the frames before it.
        """
        if self.failed is not None:
            raise self.failed
        assert self.writer is not None
        #: Set when the decision saw frames nobody has published as synced yet.
        seen_pending: tuple[int, int] | None = None
        changes: list[Change] | None = None
        if blind is None:
            self._catch_up()
        try:
            with self._append_locked(), self._mu:
                if self.control.layout_word() != _control.LAYOUT and self._private is None:
                    raise self._foreign_layout()
                c = self._control(held=True)
                if blind is not None and self.overlay.tail < c.appended:
                    now = time.time()
                    # Nothing of the tail is read: no decision made against
                    # unsynced frames (seen_pending), and nothing to raise
                    # for but the ops' own values.
                    ops, results = blind(c.last_lsn + 1, now)
                    if not ops:
                        return results
                else:
                    self._advance(c, c.appended)
                    now = time.time()
                    try:
                        ops, results, changes = decide(self.overlay.get_latest, c.last_lsn + 1, now)
                    except Exception:
                        if c.appended > c.synced:
                            seen_pending = (c.appended, c.last_lsn)
                        raise
                    if not ops:
                        if c.appended > c.synced:
                            seen_pending = (c.appended, c.last_lsn)
                        return results
                payload = _format.encode_batch(c.last_lsn + 1, now, ops)
                try:
                    _, end = self.writer.append(c.appended, _format.BATCH, payload)
                except OSError as exc:
                    # Nothing was published: the next writer writes over whatever
                    # part of the frame reached the file.
                    raise _fs.storage_error(exc, "append to", self.dir) from exc
                last_lsn = c.last_lsn + len(ops)
                if self.sync_on:
                    # ``appended`` and ``last_lsn`` are the append lock's own
                    # words (their own seqlock): no page lock inside this hold.
                    self.control.write_appended(end, last_lsn)
                else:

                    def flushed(p: Control) -> bool:
                        # "flush" publishes the frame as synced at once: the
                        # page lock's fields too (both groups written once).
                        p.appended, p.last_lsn = end, last_lsn
                        p.synced, p.synced_lsn, p.commits = end, last_lsn, p.commits + 1
                        return True

                    self._update_page(flushed, append_held=True)
                if changes is not None:
                    self.overlay.add(end, changes, synced=not self.sync_on)
                else:
                    self.blind_commits += 1
                self.unfolded_at_commit = self._span(c.folded, end)
        finally:
            if seen_pending is not None:
                # The decision (a failed conditional write, an update's function
                # that raised, a no-op) was made against frames appended but not
                # yet synced. Their writer may be dead (SIGKILLed between append
                # and publish): then nobody would ever publish them, readers would
                # never see what this caller was just told, and every retry would
                # fail against a version no read returns (issue 13). Make them
                # durable and published before the caller hears the outcome.
                self._publish_synced(*seen_pending)
        if not self.sync_on:
            self.on_published()  # the append published it (``appended`` above)
        self._publish_synced(end, last_lsn)
        self.last_write = time.monotonic()
        return results

    def _catch_up(self) -> None:
        """Read the frames other writers appended into the overlay before taking the append lock.

        Every frame below the page's ``appended`` is complete (a writer moves
        ``appended`` past its frame only after writing all of it, and nothing
        below it is ever rewritten), so reading them needs no lock: what is
        still unsynced goes to the overlay's pending part, as under the lock.
        With four writers each put found three other frames to read, and
        reading them under the append lock was the longest part of its hold;
        now the locked section reads only what lands in between.
        """
        if self._private is not None or self.control.appended() <= self.overlay.tail:
            return  # nothing new (the one word is some value a writer wrote: no seqlock needed to ask)
        c = self.control.read()
        if c is None:
            return  # mid-update: the locked section reads the page again
        with self._mu:
            self._advance(c, c.appended)

    def _publish_synced(self, end: int, last_lsn: int) -> None:
        """Sync the log up to ``end`` (outside the append lock) and publish it as synced.

        Three things keep four writers on two cores from queueing here (issue 13):

        * ``synced`` is looked at as one word (it only grows), never through
          the seqlock: a reader that found the page mid-update used to spin
          on a writer the scheduler had taken off the CPU.
        * A frame whose publish another writer's sync already made (its sync
          took this frame too) is not published again.
        * The sync publishes everything appended in the same segment before
          it started, not only this frame: ``fdatasync`` flushes the file,
          whoever wrote it, and every frame below ``appended`` was written
          whole before ``appended`` moved past it. The first of several
          writers whose syncs the kernel merged publishes for all of them,
          and the rest find their frame covered (one word, no page lock).
        """
        if not self.sync_on:
            return
        assert self.writer is not None
        page = self._private is None
        # Never skipped for a ``synced`` that already covers the frame: a
        # handle opened with durability="flush" publishes its frames as synced
        # without syncing, and this handle's caller was promised a sync.
        # Taken before the sync, so every frame below it is in the file when the sync starts.
        ahead = self.control.read_once() if page else None
        try:
            self.writer.sync(end)
        except OSError as exc:
            self.failed = _fs.storage_error(exc, "sync", self.dir)
            raise self.failed from exc
        if page:
            now_synced = self.control.synced()
            if now_synced >= end:
                # Another writer's sync covered this frame and was published
                # already: nothing to publish, no turn on the page lock.
                self._promote(now_synced)
                return
        if (
            ahead is not None
            and ahead.appended > end
            and _format.segment_of(ahead.appended - 1) == _format.segment_of(end - 1)
        ):
            # Later frames of the same segment, written before the sync began:
            # durable now too (a later segment is not: the sync took this one).
            end, last_lsn = ahead.appended, max(last_lsn, ahead.last_lsn)

        raised = False

        def synced(p: Control) -> bool:
            nonlocal raised
            if p.synced >= end:
                return False  # a later frame's sync, published meanwhile, covers this one
            p.synced, p.synced_lsn = end, max(p.synced_lsn, last_lsn)
            p.commits += 1
            raised = True
            return True

        # The page lock alone, not the append lock: the section is a read and a
        # write of the page, and appenders deciding under the append lock no
        # longer stand between a synced writer and its return.
        c = self._update_page(synced, append_held=False)
        self._promote(max(c.synced, end))
        if raised:  # else the publish that covered this frame meanwhile announced it
            self.on_published()

    def _promote(self, synced: int) -> None:
        """Let this process's readers see its pending entries below ``synced`` (the log is durable there)."""
        with self._mu:
            self.overlay.promote(synced)

    def unfolded_bytes(self) -> int:
        """Roughly how many bytes of log the shards do not hold yet."""
        c = self._control()
        return self._span(c.folded, c.synced)

    def _span(self, start: int, end: int) -> int:
        """Roughly how many bytes of log lie between two positions (never negative).

        A frame bigger than a segment gets a segment of its own, grown past
        ``segment_bytes``: a position in it can lie past that size. Counting
        every segment before ``end``'s as ``segment_bytes`` long made the span
        from such a position negative, so the fold triggers and the
        back-pressure bound stopped seeing the backlog behind it; a 1M-record
        populate in 100k-record batches left 48 MB unfolded, and one put of
        the next writer folded 199,700 records (438 s, issue 13). Segments
        between the two are still counted at ``segment_bytes``.
        """
        first, last = _format.segment_of(start), _format.segment_of(end)
        if first == last:
            return max(_format.offset_of(end) - _format.offset_of(start), 0)
        off = _format.offset_of(start)
        rest_of_first = max(self.segment_bytes, off) - off
        return rest_of_first + (last - first - 1) * self.segment_bytes + _format.offset_of(end)

    @_storage_errors("check the log in")
    def verify(self, *, fix: bool, base_lsn: Callable[[], int]) -> list[LogIssue]:
        """Check the log (``check``); ``fix`` repairs. See :func:`filemem._wal._repair.verify`."""
        return _repair.verify(self, fix=fix, base_lsn=base_lsn)
