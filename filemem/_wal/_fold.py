"""Folding the log into the shard files (layer L2), and the checkpoint that records how far.

A fold runs in one process at a time (the caller holds ``wal/fold.lock``
exclusively) and never blocks writers: they keep appending past the range
being folded.

1. read the checkpoint ``wal/checkpoint``: the position up to which the shards
   hold the log, and the highest sequence number there;
2. index the log from there to the *synced* position (never past it), a window
   of frames at a time: per key only where its newest op lies and the header
   the chain rule needs (a carried ``created_at`` takes the one of the op it
   replaces in the range, and the shard's for the range's first op of a key;
   see _carry), never a value;
3. group the keys by the shard they land in and, a few dozen shards at a time,
   re-read just their newest ops, build the records and hand them to the
   installer, which writes the shard files through the ordinary atomic path
   under the shard locks: each shard the range touches is written once;
4. write the new checkpoint (temp, fsync, rename, directory fsync);
5. publish it in the control page and retire the segments wholly below it.

**A crash mid-fold is repaired by folding again.** The checkpoint moves only
after every shard of the range is written (never between two groups), and a
fold always starts at the checkpoint, so the next fold reads a superset of the records the crashed one had read and
installs, for every key, the newest of them: shards the crashed fold already
wrote get the same or a newer record, the others get what they were owed.
The installer also never replaces a record with an older one (it compares
versions), which makes installing any record twice harmless.

Invariant: a segment is unlinked only after a durable checkpoint lies past
its end.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .. import _fs
from .._errors import CorruptShardError
from . import _format
from ._carry import Carried
from ._reader import LogReader, Scan, undecodable

__all__ = [
    "Checkpoint",
    "FoldSupersededError",
    "Installer",
    "ShardOf",
    "fold_range",
    "read_checkpoint",
    "window_end",
    "write_checkpoint",
]

CHECKPOINT: Final = "checkpoint"
#: How long the fold decodes frames before it lets go of the GIL once.
_YIELD_EVERY_S: Final = 0.0005

#: (namespace, key, sequence number, record or None for a delete)
Installed = tuple[tuple[str, ...], str, int, dict[str, Any] | None]
#: The shard a key lands in (any label: the keys of one label are installed together).
ShardOf = Callable[[tuple[str, ...], str], str]

#: Bytes of log a fold reads at a time (its first pass, and the ends of its steps).
SCAN_WINDOW_BYTES: Final = 256 << 10
#: Shard groups one install gets at most (the engine commits 64 shards at a time).
SHARDS_PER_INSTALL: Final = 64
#: Records one install gets at most: what the folding process holds decoded at once.
RECORDS_PER_INSTALL: Final = 1024
#: BATCH frames the second pass keeps read (it reads them in log order).
_FRAME_CACHE: Final = 4


class Installer(Protocol):
    """Writes folded records into the shard files (the engine implements it)."""

    def install(self, records: list[Installed], expired_before: float) -> None:
        """Put each record in its shard unless the shard already holds that key at a version >= it.

        A carried ``created_at`` (:class:`~filemem._wal._carry.Carried`) is
        resolved against the record the shard holds for the key; records of
        the shards expired before ``expired_before`` may be dropped meanwhile,
        later ones must be kept (a carried op may still need them).
        """
        ...


class FoldSupersededError(Exception):
    """Raised by ``between`` of :func:`fold_range` (it returned False): another fold moved the checkpoint meanwhile."""


@dataclass(slots=True)
class Checkpoint:
    """How far the shards hold the log."""

    folded: int
    folded_lsn: int


def read_checkpoint(wal_dir: str) -> Checkpoint | None:
    """The checkpoint, or None if there is none (or it is damaged: see ``check``)."""
    path = os.path.join(wal_dir, CHECKPOINT)
    got = _fs.read_file(path)
    if got is None:
        return None
    head, _, body = got[0].partition(b"\n")
    body = body.rstrip(b"\n")
    try:
        if int(head, 16) != zlib.crc32(body):
            return None
        data = json.loads(body)
        return Checkpoint(int(data["folded"]), int(data["folded_lsn"]))
    except (ValueError, KeyError, TypeError):
        return None


def write_checkpoint(wal_dir: str, cp: Checkpoint, *, sync: bool) -> None:
    """Replace the checkpoint atomically (durably with ``sync``)."""
    body = json.dumps({"filemem_wal": 1, "folded": cp.folded, "folded_lsn": cp.folded_lsn}).encode()
    _fs.atomic_write(os.path.join(wal_dir, CHECKPOINT), b"%08x\n" % zlib.crc32(body) + body + b"\n", sync=sync)


def window_end(pos: int, nbytes: int, limit: int, segment_bytes: int) -> int:
    """The position about ``nbytes`` of log after ``pos`` (the next segment's start at most), capped at ``limit``.

    A scan up to it reads whole frames: one that starts before it is read to
    its end, past it, and the next window starts there.
    """
    seg, off = _format.segment_of(pos), _format.offset_of(pos)
    if off + nbytes < segment_bytes:
        return min(_format.position(seg, off + nbytes), limit)
    return min(_format.position(seg + 1, _format.SEGMENT_HEADER_BYTES), limit)


class _Yield:
    """Lets go of the GIL at most every :data:`_YIELD_EVERY_S` (call :meth:`maybe` often)."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at = time.perf_counter()

    def maybe(self) -> None:
        """Folds run in a background thread: a thread waiting for the GIL (an event loop) waits a fraction of a ms.

        Not on every call: under load each ``sleep(0)`` is a trip through
        the scheduler (a third of a close fold's time when it ran per frame).
        """
        if time.perf_counter() - self._at >= _YIELD_EVERY_S:
            time.sleep(0)
            self._at = time.perf_counter()


class _RangeIndex:
    """Pass 1 of a range fold: per key, where its newest op lies and its chain-rule header; no values.

    Per key a slot in flat arrays (a few dozen bytes, plus the key's string
    and dict entry) instead of a decoded record (about 1.5 KB): a step of
    megabytes of log fits in the folding process's memory bound (issue 13).
    ``created`` is the ``created_at`` the key's record gets, the chain rule
    applied within the range: a time, or NaN with ``as_of`` for a
    :class:`Carried` the shard resolves.
    """

    __slots__ = ("as_of", "codec", "created", "expires", "frame", "frame_now", "frame_pos", "keys", "lsn", "tail")

    def __init__(self) -> None:
        self.keys: dict[tuple[str, ...], dict[str, int]] = {}
        self.frame_pos = array("q")  # log position of each BATCH frame of the range
        self.frame_now = array("d")  # and its time
        self.frame = array("q")  # per slot: index into frame_pos
        self.tail = array("q")  # per slot: the op's put tail in its payload (0: a delete)
        self.codec = array("b")
        self.lsn = array("q")
        self.created = array("d")
        self.as_of = array("d")
        self.expires = array("d")  # NaN: none

    def add_frame(self, pos: int, payload: bytes, first: int, now: float, ops: list[_format.IndexedOp]) -> None:
        """Index one decoded BATCH frame's ops (in log order: each replaces the key's earlier one)."""
        frame = len(self.frame_pos)
        self.frame_pos.append(pos)
        self.frame_now.append(now)
        nan = math.nan
        for i, op in enumerate(ops):
            ns, key, kind, codec, tail = op
            per_ns = self.keys.get(ns)
            if per_ns is None:
                per_ns = self.keys[ns] = {}
            slot = per_ns.get(key)
            if kind == _format.PUT:
                created, expires = _format.put_header(payload, op)
                x = nan if expires is None else expires
                as_of = now
                if math.isnan(created) and slot is not None:
                    # The chain rule within the range: a carried created_at
                    # takes the one of the op it replaces (still carried if
                    # that one was: the shard decides), as carried_from does.
                    if self.tail[slot] == 0:
                        created = now  # over a delete: the put's own time
                    else:
                        px = self.expires[slot]
                        if not math.isnan(px) and px <= now:
                            created = now
                        else:
                            created, as_of = self.created[slot], self.as_of[slot]
            else:
                created, x, as_of, tail, codec = nan, nan, nan, 0, 0
            if slot is None:
                per_ns[key] = len(self.lsn)
                self.frame.append(frame)
                self.tail.append(tail)
                self.codec.append(codec)
                self.lsn.append(first + i)
                self.created.append(created)
                self.as_of.append(as_of)
                self.expires.append(x)
            else:
                self.frame[slot], self.tail[slot], self.codec[slot] = frame, tail, codec
                self.lsn[slot], self.created[slot], self.as_of[slot], self.expires[slot] = first + i, created, as_of, x

    def __len__(self) -> int:
        return len(self.lsn)


def fold_range(
    reader: LogReader,
    start: int,
    limit: int,
    install: Callable[[list[Installed], float], None],
    record_of: Callable[[_format.LogOp, int, float], dict[str, Any] | None],
    *,
    segment_bytes: int,
    shard_of: ShardOf | None = None,
    between: Callable[[], bool] | None = None,
) -> tuple[int, int]:
    """Fold the log from ``start`` to ``limit`` into the shards; return (last lsn folded, records).

    Two passes. The first reads the range a window at a time and keeps only
    :class:`_RangeIndex` (where each key's newest op lies). The second groups
    the keys by ``shard_of`` (the engine's shard for a key; without it, one
    group per namespace) and, for at most :data:`SHARDS_PER_INSTALL` groups and
    :data:`RECORDS_PER_INSTALL` records at a time, re-reads just their ops, builds
    their records and installs them: each shard the range touches is written
    once, not once per few hundred kilobytes of log (issue 13: with keys spread
    by hash over more shards than a step has records, every folded record cost
    a whole shard rewrite), unless one shard's keys alone pass the record bound.

    ``between``: called between two installs (not before the first); False
    raises :class:`FoldSupersededError` (the caller let go of its lock there and
    someone else folded: this range is no longer its to finish).

    Raises CorruptShardError if the log cannot be read all the way to
    ``limit`` (a synced frame that fails its checks is damage, not a tail).
    """
    index = _RangeIndex()
    oldest = math.inf
    last = 0
    count = 0
    pause = _Yield()
    pos = start
    while pos < limit:
        # A window at a time: the frames of a multi-megabyte range are never held together.
        scan = reader.scan(pos, window_end(pos, SCAN_WINDOW_BYTES, limit, segment_bytes))
        if not scan.frames:
            raise _unreadable(reader, scan)
        for frame in scan.frames:
            if frame.kind != _format.BATCH:
                continue
            pause.maybe()  # each frame is a batch to index
            try:
                first, now, ops = _format.index_batch(frame.payload)
            except ValueError as exc:
                raise undecodable(reader.wal_dir, frame.pos, exc) from exc
            oldest = min(oldest, now)
            index.add_frame(frame.pos, frame.payload, first, now, ops)
            count += len(ops)
            last = first + len(ops) - 1 if ops else last
        if scan.end < limit and scan.stop != "limit":
            raise _unreadable(reader, scan)
        pos = scan.end
        del scan
    if not len(index):
        return last, count

    # Only records expired before the oldest batch here may be dropped: a put
    # of this range or a later one (all stamped later: the time is taken
    # under the append lock) may carry its created_at over from a record live
    # at its time, and resolves it against the shard.
    def grouped(ns: tuple[str, ...], keys: Iterable[str]) -> list[tuple[tuple[tuple[str, ...], str], list[str]]]:
        groups: dict[tuple[tuple[str, ...], str], list[str]] = {}
        for key in keys:
            pause.maybe()  # a hash per key: tens of milliseconds for a step
            label = "" if shard_of is None else shard_of(ns, key)
            got = groups.get((ns, label))
            if got is None:
                groups[(ns, label)] = [key]
            else:
                got.append(key)
        return sorted(groups.items(), reverse=True)

    pending: list[tuple[tuple[tuple[str, ...], str], list[str]]] = []  # a stack: the next group last
    for ns in sorted(index.keys, reverse=True):
        pending.extend(grouped(ns, index.keys[ns]))
    shards_per_install, records_per_install = SHARDS_PER_INSTALL, RECORDS_PER_INSTALL
    frames = _FrameCache(reader)
    installs = 0

    def install_some(keys: list[tuple[tuple[str, ...], str]]) -> None:
        nonlocal installs
        if installs and between is not None and not between():
            raise FoldSupersededError
        _install_some(index, frames, keys, install, record_of, oldest, pause)
        installs += 1

    batch: list[tuple[tuple[str, ...], str]] = []
    shards = 0
    while pending:
        (ns, _label), keys = pending.pop()
        if batch and (shards >= shards_per_install or len(batch) + len(keys) > records_per_install):
            install_some(batch)
            batch, shards = [], 0
        if len(keys) > records_per_install:
            # More keys for one shard than an install holds (a new namespace:
            # one shard): install a slice, which splits the shard, and group
            # the rest again by the shards now there; slicing blindly rewrote
            # every leaf once per slice.
            install_some([(ns, k) for k in keys[:records_per_install]])
            pending.extend(grouped(ns, keys[records_per_install:]))
            continue
        batch.extend((ns, k) for k in keys)
        shards += 1
    if batch:
        install_some(batch)
    return last, count


def _unreadable(reader: LogReader, scan: Scan) -> CorruptShardError:
    """The error for a range whose synced frames cannot all be read (a synced frame failing its checks is damage)."""
    return CorruptShardError(
        f"write-ahead log in {reader.wal_dir} cannot be read up to its synced end: {scan.detail or scan.stop}",
        path=reader.wal_dir,
    )


def _install_some(
    index: _RangeIndex,
    frames: _FrameCache,
    keys: list[tuple[tuple[str, ...], str]],
    install: Callable[[list[Installed], float], None],
    record_of: Callable[[_format.LogOp, int, float], dict[str, Any] | None],
    oldest: float,
    pause: _Yield,
) -> None:
    """Pass 2 for some keys: re-read their newest ops (in log order), build their records, install them."""
    # In log order: the frames are read once each, one after the other.
    slots = sorted(((index.keys[ns][key], ns, key) for ns, key in keys), key=lambda s: s[0])
    slots.sort(key=lambda s: index.frame[s[0]])
    out: list[Installed] = []
    for slot, ns, key in slots:
        pause.maybe()  # a value to decode per key
        lsn = index.lsn[slot]
        tail = index.tail[slot]
        if tail == 0:
            out.append((ns, key, lsn, None))
            continue
        frame = index.frame[slot]
        payload = frames.get(index.frame_pos[frame])
        now = index.frame_now[frame]
        op = _format.op_at(payload, (ns, key, _format.PUT, index.codec[slot], tail))
        rec = record_of(op, lsn, now)
        assert rec is not None
        created = index.created[slot]
        rec["created_at"] = Carried(index.as_of[slot]) if math.isnan(created) else created
        out.append((ns, key, lsn, rec))
    del slots
    out.sort(key=lambda r: (r[0], r[1]))
    install(out, oldest)


class _FrameCache:
    """Pass 2's re-reads of BATCH frames: the last few, checked again (CRC) by the reader."""

    __slots__ = ("_frames", "_reader")

    def __init__(self, reader: LogReader) -> None:
        self._reader = reader
        self._frames: dict[int, bytes] = {}

    def get(self, pos: int) -> bytes:
        """The payload of the BATCH frame at ``pos``."""
        got = self._frames.get(pos)
        if got is not None:
            return got
        scan = self._reader.scan(pos, pos + 1)
        if not scan.frames or scan.frames[0].pos != pos or scan.frames[0].kind != _format.BATCH:
            raise CorruptShardError(
                f"write-ahead log in {self._reader.wal_dir}: frame at {pos:#x} cannot be read again: "
                f"{scan.detail or scan.stop}",
                path=self._reader.wal_dir,
            )
        got = scan.frames[0].payload
        if len(self._frames) >= _FRAME_CACHE:
            del self._frames[next(iter(self._frames))]
        self._frames[pos] = got
        return got
