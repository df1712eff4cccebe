"""What a log handle reads: the commit counter, and the overlay brought up to the synced end (layer L2).

Invariant: the overlay never holds a frame past the control page's
``synced`` position (unsynced data is never visible), and it is advanced
only under ``_mu``; a frame the fold retired while it was being read makes
the overlay start again where the shards end. ``Log`` (``_log.py``) adds
opening, writes and recovery on top of this class.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from .._errors import CorruptShardError
from . import _format
from ._carry import carried_over, is_carried_float
from ._control import Control
from ._fold import SCAN_WINDOW_BYTES, window_end
from ._log_core import _storage_errors
from ._log_fold import LogFold
from ._overlay import Change, Entry
from ._reader import undecodable

__all__ = ["LogReads"]


class LogReads(LogFold):
    """The reading side of :class:`filemem._wal.Log` (attributes set by its ``__init__``)."""

    #: A read-only handle's own view when the page cannot be trusted (None: read the page).
    _private: Control | None
    #: The commit counter and fold count as of the last refresh.
    _seen_commits: int
    _seen_folds: int
    #: How an indexed op of another process's frame becomes a record, on first read.
    _decode_record: Callable[[tuple[Any, ...], int, float], dict[str, Any] | None]

    def changed(self) -> bool:
        """Whether anything committed since the last :meth:`refresh` (no system call where mapped)."""
        return self._private is not None or self.control.commits() != self._seen_commits

    def commits_reader(self) -> Callable[[], int]:
        """The commit counter as a cheap call, for caches above the log (valid until :meth:`close`).

        A value cached when it read ``n`` is current while it still reads ``n``
        (and the overlay's generation has not moved). A handle that cannot
        trust the page (:meth:`changed` always True) gets a call that never
        repeats a number, so nothing cached against it is ever current.
        """
        if self._private is not None:
            return itertools.count(-(1 << 62)).__next__
        return self.control.commits_reader()

    def readable_bounds(self) -> tuple[int, int] | None:
        """(how far this handle may read, where the folded part ends); None while the page is mid-update.

        For a :class:`filemem._wal._tail.LogTail`. A handle that cannot trust
        the page reads as far as the good frames go, like :meth:`refresh`.
        """
        if self._private is not None:
            return (1 << 63) - 1, self._private.folded
        c = self.control.read()
        return None if c is None else (c.synced, c.folded)

    def refresh(self) -> None:
        """Bring the overlay up to the synced end of the log (``on_folded`` hears of what the fold took)."""
        if self._private is None and self.control.commits() == self._seen_commits:
            return  # the hot path: one 8-byte read, nothing to translate
        self._refresh()

    @_storage_errors("read the log in")
    def _refresh(self) -> None:
        with self._mu:
            commits = self.control.commits()
            c = self._control()
            if self._private is not None:
                scan = self.reader.scan(self.overlay.tail, None)
                self._private.synced = self._private.appended = max(scan.end, self._private.synced)
            self._advance(c, c.synced)
            self._seen_commits = commits

    @_storage_errors("read the log in")
    def drop_folded(self) -> None:
        """After a fold: drop what the shards now hold from the overlay, reading the log up to the folded position only.

        The overlay is brought to ``folded`` (frames a window at a time, each
        window's entries pruned as soon as it is read: ``on_folded`` hears of
        every key, so cached shards are forgotten as after :meth:`refresh`),
        never past it: the unfolded rest waits for the next read's
        :meth:`refresh`. A full refresh here made the process that folds read
        the whole backlog behind its step into its overlay, so the last writer
        to close, folding the log of four blind writers step by step, held
        every unfolded record of all of them at once (issue 13: 19 MB of its
        47-51 MB peak, the others stayed at 28 MB).
        """
        with self._mu:
            c = self._control()
            # A fixed window, not a fold step: a multi-megabyte step read into
            # the overlay at once would be the folding process's peak.
            window = SCAN_WINDOW_BYTES
            while True:
                tail = self.overlay.tail
                # One window (or just the prune when the overlay is already there).
                self._advance(c, window_end(tail, window, c.folded, self.segment_bytes) if tail < c.folded else tail)
                if self.overlay.tail >= c.folded or self.overlay.tail <= tail:
                    return

    def _advance(self, c: Control, upto: int) -> None:
        """Read frames from the overlay's tail to ``upto`` (``_mu`` held)."""
        ov = self.overlay
        reset = False
        for _ in range(100):
            if ov.tail >= upto:
                break
            scan = self.reader.scan(ov.tail, upto)
            for frame in scan.frames:
                if frame.kind == _format.BATCH:
                    ov.add(frame.end, self._changes(frame), synced=frame.end <= c.synced)
                else:
                    ov.add(frame.end, [], synced=frame.end <= c.synced)
            if scan.end >= upto:
                break
            if scan.stop == "missing" or ov.tail < c.folded:
                # The fold retired the segment we were reading: everything in it
                # is in the shards now. Start again where the shards end.
                c = self._control()
                ov.reset(c.folded, c.folded_lsn)
                self.reader.forget_below(_format.segment_of(c.folded))
                reset = True
                upto = max(upto, c.synced) if upto == c.synced else upto
                continue
            raise CorruptShardError(
                f"write-ahead log in {self.dir} is damaged below its synced end: {scan.detail}", path=self.dir
            )
        ov.promote(c.synced)
        gone = ov.prune(c.folded_lsn)
        if c.folds != self._seen_folds:
            self._seen_folds = c.folds
            self.reader.forget_below(_format.segment_of(c.folded))
        if reset:
            self.on_folded(None)
        elif gone:
            self.on_folded(gone)

    def _changes(self, frame: Any) -> list[Change]:
        """The entries of one frame, in op order (the overlay must hold every frame before it).

        Keys and where each value lies, not the values: see _format.index_batch.
        A put logged as carried over whose key has an earlier entry (in this
        frame or the overlay) gets that entry's header resolved into it now,
        as its *base* (the chain rule, _carry): the overlay keeps only the
        newest entry of a key, so the previous one is known only here.
        """
        payload = frame.payload
        try:
            first, now, ops = _format.index_batch(payload)
        except ValueError as exc:
            raise undecodable(self.dir, frame.pos, exc) from exc
        decode = self._decode_record
        put = _format.PUT
        previous = self.overlay.get_latest
        out: list[Change] = []
        mine: dict[tuple[tuple[str, ...], str], Entry] = {}  # this frame's entries by key (a batch may repeat one)
        for i, op in enumerate(ops):
            ident = (op[0], op[1])
            if op[2] == put:
                ref: tuple[Any, ...] = (payload, op)
                prev = mine.get(ident) if mine else None
                if prev is None:
                    prev = previous(op[0], op[1])
                if prev is not None and is_carried_float(_format.put_header(payload, op)[0]):
                    ref = (payload, op, carried_over(prev.header(), now))
                entry = Entry(first + i, None, ref, now, decode)
            else:
                entry = Entry(first + i, None)
            if len(ops) > 1:
                mine[ident] = entry
            out.append((op[0], op[1], entry))
        return out

    def get(self, namespace: tuple[str, ...], key: str) -> Entry | None:
        """The newest synced unfolded entry of a key (call :meth:`refresh` first)."""
        return self.overlay.get(namespace, key)

    def entries(self, namespace: tuple[str, ...]) -> dict[str, Entry]:
        """A copy of the synced unfolded entries of one namespace."""
        with self._mu:
            return self.overlay.namespace(namespace)

    def namespaces(self) -> list[tuple[str, ...]]:
        """Namespaces with synced unfolded entries."""
        with self._mu:
            return self.overlay.namespaces()
