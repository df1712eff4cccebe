"""Following the log for the change feed (layer L2): every committed batch once, in commit order.

The overlay keeps only the newest entry of each key; the change feed needs
every commit. A :class:`LogTail` has its own reader and its own position: each
:meth:`LogTail.read` returns the batches committed since the last call, read
up to the synced end and never past it (a reader must not learn of a write
before it is durable).

How a follower learns that something committed: a writer, once its commit is
published on the control page, bumps the page file's timestamps
(:func:`announce`, one ``futimens``). That is an inotify event (IN_ATTRIB) like
a shard rename, so the watcher that keeps caches fresh wakes the feed too; the
polling watcher simply asks every round. A page write through the mapping is
no event by itself, which is why the touch is needed.

A put's ``created_at`` logged as carried over resolves against the key's
previous record in log order (the chain rule, see _carry): the tail keeps the
header of each key's last unfolded op it has read (from the folded position
on, the part before its start read once, headers only), and hands each
carried put what it carries from that one (``Committed.carried``); a key with
none resolves against the shard. The overlay cannot say it: it holds only a
key's newest entry, and the feed may lag behind it (a later delete there would
hide the time).

Invariant: batches come out in log order, each once; a gap the tail cannot
read (segments the fold retired before the tail reached them) is reported as
``lost``, never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .. import _fs
from .._errors import FileMemError
from . import _format
from ._carry import Carried, Header, carried_over, is_carried_float
from ._reader import LogReader, undecodable

__all__ = ["CONTROL_PAGE", "Committed", "LogTail", "announce", "control_fd"]

#: The file :func:`announce` touches (the control page: it exists while the log does).
CONTROL_PAGE: Final = "control"


@dataclass(frozen=True, slots=True)
class Committed:
    """One committed batch as the feed sees it: when, and which keys of which namespaces (in op order).

    ``ops``: the batch's ops as logged (op ``i`` wrote version ``first_lsn + i``),
    so a follower can say what each key now holds without reading the store.
    """

    time: float
    first_lsn: int
    keys: dict[tuple[str, ...], tuple[str, ...]]
    ops: tuple[_format.LogOp, ...] = ()
    #: Per op: for a put logged as carried over whose key has an earlier unfolded
    #: op, what it carries from that op (a time, or a :class:`Carried` the shard
    #: resolves); None otherwise (then the shard's record is the previous one).
    carried: tuple[Any, ...] = ()


def announce(fd: int) -> None:
    """Tell watchers of the store that a commit was published (touch the control page's timestamps).

    Best effort: a failure costs followers promptness (the next commit or
    fold wakes them), never correctness, so it is never raised.
    """
    with contextlib.suppress(OSError):
        os.utime(fd)


class LogTail:
    """A cursor over the committed batches of one ``wal/`` directory, for one process's change feed.

    ``bounds()`` returns ``(synced end, folded position)`` from the control page,
    or None when the page cannot be read consistently now (try again later).
    """

    def __init__(self, wal_dir: str, bounds: Callable[[], tuple[int, int] | None]) -> None:
        self.wal_dir = wal_dir
        self._bounds = bounds
        self._reader = LogReader(wal_dir)
        self.pos = 0
        #: Each key's last op read from the unfolded log: (where its frame ends, its header).
        self._heads: dict[tuple[tuple[str, ...], str], tuple[int, Header]] = {}
        self.skip_to_end()

    def skip_to_end(self) -> None:
        """Start after everything committed so far (a new listener hears of later commits only)."""
        got = self._bounds()
        if got is not None and got[0] > self.pos:
            self._heads_upto(got[1], got[0])
            self.pos = got[0]

    def _heads_upto(self, folded: int, end: int) -> None:
        """Index the headers of the unfolded log below ``end`` (headers only: no value is decoded)."""
        self._heads = {}
        pos = folded
        for _ in range(100):
            scan = self._reader.scan(pos, end)
            for frame in scan.frames:
                if frame.kind == _format.BATCH:
                    self._index(frame.payload, frame.end)
                pos = frame.end
            if scan.end >= end or scan.stop != "missing":
                break
            got = self._bounds()  # retired under us: the shards hold it; start again where they end
            if got is None or got[1] <= pos:
                break
            self._heads, pos = {}, got[1]
        self._reader.forget_below(_format.segment_of(pos))

    def _index(self, payload: bytes, end: int) -> tuple[Any, ...]:
        """Record one batch's ops in ``_heads``; return what each carried put carries (see ``Committed.carried``)."""
        try:
            _, now, ops = _format.index_batch(payload)
        except ValueError:
            return ()  # the log's readers report the damage
        heads = self._heads
        out: list[Any] = []
        for op in ops:
            ident = (op[0], op[1])
            if op[2] != _format.PUT:
                heads[ident] = (end, None)
                out.append(None)
                continue
            logged, expires = _format.put_header(payload, op)
            created: Any = logged
            base: Any = None
            if is_carried_float(logged):
                prev = heads.get(ident)
                if prev is not None:
                    base = carried_over(prev[1], now)
                # A carried one with no earlier unfolded op: the shard's record
                # decides, and whoever reads it on, reads it there too.
                created = base if base is not None else Carried(now)
            heads[ident] = (end, (created, expires))
            out.append(base)
        return tuple(out)

    def _forget_folded(self, folded: int) -> None:
        """Drop heads the shards now hold (a carried put after them resolves there, the same).

        Only once the tail has read past the fold: while it is behind, a
        carried put it has yet to read may be folded over already, and then
        the shard no longer holds the record before it.
        """
        if self.pos >= folded and self._heads:
            self._heads = {k: v for k, v in self._heads.items() if v[0] > folded}

    def read(self) -> tuple[list[Committed], bool]:
        """Batches committed since the last call, and whether some could not be read (``lost``)."""
        got = self._bounds()
        if got is None:
            return [], False
        synced, folded = got
        if synced <= self.pos:
            return [], False
        out: list[Committed] = []
        lost = False
        if self.pos < folded and self._reader._fd(_format.segment_of(self.pos)) is None:
            # Retired by a fold before we read it: its records are in the shards,
            # but which keys they were is gone. Say so and go on from the fold
            # (whose shards now hold every key's previous record).
            self.pos, lost = folded, True
            self._heads = {}
        for _ in range(100):  # a segment boundary or a retired segment per turn
            scan = self._reader.scan(self.pos, synced)
            for frame in scan.frames:
                if frame.kind == _format.BATCH:
                    try:
                        first, now, ops = _format.decode_batch(frame.payload)
                    except ValueError as exc:
                        raise undecodable(self.wal_dir, frame.pos, exc) from exc
                    keys: dict[tuple[str, ...], dict[str, None]] = {}
                    for op in ops:
                        keys.setdefault(op.namespace, {})[op.key] = None
                    carried = self._index(frame.payload, frame.end)
                    out.append(Committed(now, first, {ns: tuple(k) for ns, k in keys.items()}, tuple(ops), carried))
                self.pos = frame.end
            if scan.end >= synced or scan.stop == "limit":
                break
            if scan.stop == "missing":
                got = self._bounds()
                if got is None or got[1] <= self.pos:
                    break  # not retired: a segment being created; the next event reads on
                self.pos, lost = max(self.pos, got[1]), True
                self._heads = {}
                continue
            break  # a torn or damaged tail below the synced end: the log's own readers report it
        self._reader.forget_below(_format.segment_of(self.pos))
        self._forget_folded(folded)
        return out, lost

    def close(self) -> None:
        """Close the segment files this tail holds open."""
        self._reader.close()


def control_fd(wal_dir: str) -> int | None:
    """A descriptor of the control page file for :func:`announce` (None if it cannot be opened)."""
    try:
        return _fs.open_regular(os.path.join(wal_dir, CONTROL_PAGE), os.O_RDONLY)
    except FileMemError:
        return None
