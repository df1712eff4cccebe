"""Folding the log (layer L2): moving synced frames into the shards, and pins that hold folds off.

One fold at a time over all processes (``wal/folding.lock`` exclusive for the
whole fold, ``wal/fold.lock`` exclusive while it reads and writes, and a mutex
for the threads of one process); a snapshot holds ``fold.lock`` shared, and a
fold lets go of it between two installs while one waits (keeping
``folding.lock``, so no other fold starts then).
A fold starts at the checkpoint, installs records idempotently through the
engine's ``install``, and after every step of ``fold_step_bytes`` writes the
checkpoint and publishes ``folded`` on the control page (so a process waiting
for the shards to hold its records sees another's fold progress); at the end
it unlinks the segments wholly below it.

Which handle folds at close: every read-write handle holds ``wal/writers.lock``
shared while it is open (read-only handles never take it). A closing writer
drops its hold and then tries the lock exclusively, without waiting: only a
writer that finds no other read-write handle open must fold what is left
(:meth:`LogFold.leave_writers`). Of closers racing there, the last to drop its
hold cannot be refused by the others (they dropped theirs before trying), so
one of them always folds, after every one of them has stopped writing.

Invariant: the checkpoint never names a position whose records are not all in
the shards, and ``folded`` on the page never runs ahead of the checkpoint; so a
fold killed anywhere loses nothing, and the next one starts where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from .. import _fs
from .._errors import LockTimeout
from . import _format, _platform
from ._control import Control
from ._fold import (
    SCAN_WINDOW_BYTES,
    Checkpoint,
    FoldSupersededError,
    Installed,
    ShardOf,
    fold_range,
    read_checkpoint,
    window_end,
    write_checkpoint,
)
from ._log_core import FIRST_POSITION, FOLD_LOCK, LogCore, _storage_errors, record_of
from ._reader import LogReader

#: Held shared by every open read-write handle (see the module docstring).
WRITERS_LOCK: Final = "writers.lock"
#: Held exclusively by the one folder for the whole of its fold, also while it
#: lets waiting readers in (``fold.lock`` is let go then; pins never take this one).
FOLDING_LOCK: Final = "folding.lock"
#: How long a fold told not to wait (``wait=False``) waits for its lock back after letting readers in.
_RELOCK_NO_WAIT_S: Final = 1.0


class LogFold(LogCore):
    """The fold and the pin of :class:`filemem._wal._log.Log`."""

    #: This handle's hold on ``wal/writers.lock`` (read-write handles only; None once left).
    _writers_fd: int | None = None

    def _join_writers(self) -> int:
        """Open ``wal/writers.lock`` and hold it shared; return the descriptor.

        Waits only while a closing writer holds it exclusively, which it does
        for an instant (it lets go before it folds).
        """
        fd = os.open(os.path.join(self.dir, WRITERS_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _platform.lock(fd, exclusive=False, blocking=True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def leave_writers(self) -> bool:
        """Stop counting as an open writer; True if no other read-write handle is open (then fold what is left).

        Call once, at close, after this handle's last write. A handle that
        gets False may leave its records unfolded: another read-write handle
        is open and folds them at the latest when it closes (or, if it is
        killed, the next opener's recovery does).
        """
        fd, self._writers_fd = self._writers_fd, None
        if fd is None:
            return False
        try:
            # Drop our hold first, then try for the whole lock without waiting
            # (never taking the hold back): of two closers, the second to drop
            # finds the first's hold gone, so they cannot both step aside. A
            # closer refused because a winner holds it exclusively is covered
            # too: the winner took it after our hold was gone, after our writes.
            _platform.unlock(fd)
            last = _platform.lock(fd, exclusive=True, blocking=False)
        finally:
            os.close(fd)  # lets go of the exclusive lock at once: openers wait only for this instant
        return last

    def positions(self) -> tuple[int, int]:
        """(synced, folded): how far the log is durable, and how far the shards hold it."""
        c = self._control()
        return c.synced, c.folded

    @_storage_errors("read the log in")
    def sweep_horizon(self) -> float:
        """A time before which a shard's expired records may be dropped: none of them can matter to the log.

        A put logged with its ``created_at`` carried over takes the time of
        the key's previous record if that was live at the put's time (the
        chain rule, _carry), and a key with no earlier unfolded op resolves
        against its shard record: so a record may leave its shard only if it
        expired before every unfolded batch, as in the fold's own install
        (``fold_range``). Returns the earlier of now and the oldest unfolded
        batch's time. Taken under the append lock: a put that read the clock
        before it has appended its frame (then counted here), one after
        stamps itself later than now. Any later moment keeps it valid (the
        fold only moves the oldest batch later), so a caller may take it once
        and sweep many shards with it. ``-inf`` (drop nothing) where the log
        cannot be read to say, or the append lock cannot be had in time.
        """
        if self.readonly:
            return -math.inf
        try:
            with self._append_locked():
                now = time.time()
                c = self._control(held=True)
        except LockTimeout:
            return -math.inf  # writers kept it: no sweep needs to wait for them
        pos, end = c.folded, c.appended
        reader = LogReader(self.dir)  # its own: the handle's reader belongs to its refresh and fold
        try:
            while pos < end:
                scan = reader.scan(pos, pos + 1)  # one frame (an END frame moves on to the next segment)
                if not scan.frames:
                    return -math.inf  # retired by a fold meanwhile, or damaged: the next sweep sees
                frame = scan.frames[0]
                if frame.kind == _format.BATCH:
                    try:
                        stamped = _format.index_batch(frame.payload)[1]
                    except ValueError:
                        return -math.inf
                    return min(now, stamped)
                pos = frame.end
        finally:
            reader.close()
        return now

    @_storage_errors("fold the log in")
    def fold(
        self,
        install: Callable[[list[Installed], float], None],
        *,
        wait: bool,
        max_bytes: int | None = None,
        shard_of: ShardOf | None = None,
        waiting: Callable[[], bool] | None = None,
    ) -> bool:
        """Fold every synced frame into the shards; False if another fold or a snapshot held the fold lock.

        ``wait``: wait up to the lock timeout for the fold lock. ``max_bytes``:
        stop after the checkpoint step that reaches that much log (at least
        one step), leaving the rest for a later fold. ``shard_of``: the shard a
        key lands in, so that a step writes each shard once (``fold_range``).
        ``waiting``: True while a listing or a snapshot waits to hold the folds
        off; between two installs the fold then lets go of its lock until they
        have it, and takes it back after them (:meth:`_let_readers_in`). Also
        False if it could not take it back within the lock timeout.
        """
        if self.readonly:
            return False
        if not self._fold_mu.acquire(timeout=self.lock_timeout_s if wait else 0):
            return False
        try:
            folding = os.open(os.path.join(self.dir, FOLDING_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fd = os.open(os.path.join(self.dir, FOLD_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    deadline = time.monotonic() + (self.lock_timeout_s if wait else 0)
                    # The folders' lock first, for the whole fold (also while it
                    # lets readers in); then the fold lock pins share with it.
                    if not _lock_by(folding, deadline) or not _lock_by(fd, deadline):
                        return False
                    try:
                        # A fold told not to wait does not wait long for its lock
                        # back either: its caller (the fold thread, settle) may be
                        # one that close() joins.
                        relock_s = self.lock_timeout_s if wait else min(self.lock_timeout_s, _RELOCK_NO_WAIT_S)
                        self._fold_locked(install, max_bytes, shard_of, self._between(fd, waiting, relock_s))
                    except _LockLostError:
                        return False  # a pin kept it past the lock timeout: the steps done are checkpointed
                    finally:
                        _platform.unlock(fd)
                finally:
                    os.close(fd)
            finally:
                os.close(folding)  # lets go of the folders' lock
        finally:
            self._fold_mu.release()
        return True

    def _fold_locked(
        self,
        install: Callable[[list[Installed], float], None],
        max_bytes: int | None,
        shard_of: ShardOf | None,
        between: Callable[[int], bool] | None,
    ) -> None:
        limit = self._control().synced
        while True:
            cp = read_checkpoint(self.dir) or Checkpoint(FIRST_POSITION, 0)
            stops = self._fold_stops(cp.folded, limit, max_bytes)
            self.fold_cut = bool(stops) and stops[-1] < limit
            try:
                for i, stop in enumerate(stops):
                    if i and between is not None and not between(cp.folded):
                        raise FoldSupersededError
                    # A checkpoint per step: a fold killed part way (its process
                    # SIGKILLed, as writers are) keeps what it moved, so the next fold
                    # starts there instead of redoing the whole range. Without it a log
                    # whose folders kept dying grew until a fold at open, which nobody
                    # kills, moved it all (issue 13: 5-47 s opens in the SIGKILL loop).
                    step_start = cp.folded
                    last, _ = fold_range(
                        self.reader,
                        step_start,
                        stop,
                        install,
                        lambda op, lsn, now: record_of(self.codecs, op, lsn, now),
                        segment_bytes=self.segment_bytes,
                        shard_of=shard_of,
                        between=None if between is None else functools.partial(between, step_start),
                    )
                    cp = Checkpoint(stop, max(last, cp.folded_lsn))
                    write_checkpoint(self.dir, cp, sync=self.sync_on)
                    # Published per step, not once at the end: a closer or a scan
                    # waiting for the shards to hold the log up to some position sees
                    # this fold's progress and keeps waiting instead of timing out
                    # behind a long backlog (issue 13).
                    self._publish_folded(cp)
            except FoldSupersededError:
                # Another process folded while we let a reader in: its
                # checkpoint is past ours (and may have retired segments we
                # would read). What we installed is there idempotently; start
                # again from its checkpoint, up to the same limit.
                self.fold_restarts += 1
                continue
            break
        if not stops:
            self._publish_folded(cp)  # a page re-derived behind the checkpoint catches up
        self.folds += 1
        self._retire(_format.segment_of(cp.folded))

    def _between(self, fd: int, waiting: Callable[[], bool] | None, relock_s: float) -> Callable[[int], bool] | None:
        """The fold's pause between two installs: :meth:`_let_readers_in` on ``fd`` when someone waits."""
        if waiting is None:
            return None

        def between(folded: int) -> bool:
            if not waiting():
                return True
            return self._let_readers_in(fd, waiting, folded, relock_s)

        return between

    def _let_readers_in(self, fd: int, waiting: Callable[[], bool], folded: int, relock_s: float) -> bool:
        """Let go of the fold lock until the waiting pins have it, then take it back; False if the checkpoint moved.

        Mid-step is safe to show: the shards then hold some of the step's
        records and the log (the overlay from the checkpoint) holds all of
        them, newer or equal, as after a fold killed there. A pin waits for a
        fold in progress to finish (``wal/foldwait.lock`` shared while it
        waits): before, a listing waited for a whole step, and steps of a few
        MiB into small shards took longer than the lock timeout on a loaded
        machine (issue 13; tests/concurrency/test_crash.py). Raises
        :class:`_LockLostError` if pins keep the lock past ``relock_s``.

        The fold keeps ``wal/folding.lock`` meanwhile, so no other fold of
        this build starts in the gap: two folds from one checkpoint, taking
        turns, could each install part of a step up to a different limit
        without the checkpoint moving, and an older put installed after a
        newer delete brought the deleted key back for good once the later
        checkpoint passed the delete (``tests/wal/test_fold_interleave_resurrects.py``).
        The checkpoint is still read again after: a fold that does not take
        the folders' lock (a build before it) may have folded meanwhile.
        """
        _platform.unlock(fd)
        self.fold_yields += 1
        deadline = time.monotonic() + relock_s
        sleep = 0.0005
        # Until every waiter holds its pin (it lets the wait lock go then); one
        # that gave up meanwhile ends the wait too.
        while waiting() and time.monotonic() < deadline:
            time.sleep(sleep)
            sleep = min(sleep * 2, 0.02)
        if not _lock_by(fd, deadline):
            raise _LockLostError
        # Anyone may have folded in between (a fold of another process waiting
        # for the lock): then our step is theirs, and our frames may be gone.
        now = read_checkpoint(self.dir) or Checkpoint(FIRST_POSITION, 0)
        return now.folded == folded

    def _publish_folded(self, cp: Checkpoint) -> None:
        """Tell every process (the control page) that the shards hold the log up to the checkpoint."""

        def folded(c: Control) -> bool:
            if cp.folded <= c.folded and cp.folded_lsn <= c.folded_lsn:
                return False
            c.folded, c.folded_lsn = max(c.folded, cp.folded), max(c.folded_lsn, cp.folded_lsn)
            c.folds += 1
            c.commits += 1  # readers look again: they drop what the shards now hold
            return True

        self._update_page(folded, append_held=False)

    def _fold_stops(self, start: int, limit: int, max_bytes: int | None) -> list[int]:
        """Where a fold from ``start`` to ``limit`` checkpoints: batch ends a step apart, then ``limit``.

        With ``max_bytes``, only the steps up to the first that reaches that
        much log from ``start``. The log is read a window at a time and only
        frame ends are kept: a fold behind by megabytes held every frame of
        the backlog here, once per bounded step (issue 13: the folding
        process's peak RSS).
        """
        if limit <= start:
            return []
        stops: list[int] = []
        mark = pos = start
        # A fixed window, not a step: steps of megabytes held that much log here.
        window = SCAN_WINDOW_BYTES
        while pos < limit:
            upto = window_end(pos, window, limit, self.segment_bytes)
            scan = self.reader.scan(pos, upto)
            ends = [(f.kind, f.end) for f in scan.frames]
            del scan
            if not ends:
                break  # unreadable here: fold_range raises with the detail
            step, seg_bytes = self.fold_step_bytes, self.segment_bytes
            for kind, end in ends:
                if kind == _format.BATCH and end < limit and _distance(mark, end, seg_bytes) >= step:
                    stops.append(end)
                    mark = end
                    if max_bytes is not None and _distance(start, end, seg_bytes) >= max_bytes:
                        return stops
            pos = ends[-1][1]
        stops.append(limit)
        return stops

    def _retire(self, below: int) -> None:
        """Unlink segments wholly below the checkpoint (open readers keep reading their copies)."""
        for name in _fs.listdir(self.dir):
            if name.endswith(".log") and _fs.TEMP_MARK not in name:
                try:
                    seg = int(name[:-4], 16)
                except ValueError:
                    continue
                if seg < below:
                    # Windows refuses while a reader has it open: the next fold tries again.
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.dir, name))

    def _segments(self) -> list[int]:
        out = []
        for name in _fs.listdir(self.dir):
            if name.endswith(".log") and _fs.TEMP_MARK not in name:
                with contextlib.suppress(ValueError):
                    out.append(int(name[:-4], 16))
        return sorted(out)

    @contextmanager
    def local_folds_held(self) -> Iterator[None]:
        """Keep folds of this process out while the block runs (waits for one in flight; no file lock)."""
        with self._fold_mu:
            yield

    @contextmanager
    def pin(self) -> Iterator[None]:
        """Keep folds out while the block runs (a snapshot reads shards + overlay at one position)."""
        try:
            fd = os.open(os.path.join(self.dir, FOLD_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _fs.storage_error(exc, "open the fold lock in", self.dir) from exc
        try:
            if not _lock_by(fd, time.monotonic() + self.lock_timeout_s, exclusive=False):
                raise LockTimeout(
                    f"timed out waiting for the fold lock in {self.dir}",
                    path=self.dir,
                    waited_s=self.lock_timeout_s,
                )
            try:
                yield
            finally:
                _platform.unlock(fd)
        finally:
            os.close(fd)


def _lock_by(fd: int, deadline: float, *, exclusive: bool = True) -> bool:
    """Lock ``fd`` (exclusively unless told), polling with backoff until ``deadline``; False if it stayed busy."""
    sleep = 0.0005
    while not _platform.lock(fd, exclusive=exclusive, blocking=False):
        if time.monotonic() >= deadline:
            return False
        time.sleep(sleep)
        sleep = min(sleep * 2, 0.02)
    return True


class _LockLostError(Exception):
    """A fold that let readers in could not take its lock back within the lock timeout."""


def _distance(start: int, end: int, segment_bytes: int) -> int:
    """Roughly how many bytes of log lie between two positions."""
    segs = _format.segment_of(end) - _format.segment_of(start)
    return segs * segment_bytes + _format.offset_of(end) - _format.offset_of(start)
