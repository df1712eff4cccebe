"""Folding the log into the shard files (layer L2), and the checkpoint that records how far.

A fold runs in one process at a time (the caller holds ``wal/fold.lock``
exclusively) and never blocks writers: they keep appending past the range
being folded.

1. read the checkpoint ``wal/checkpoint``: the position up to which the shards
   hold the log, and the highest sequence number there;
2. scan the log from there to the *synced* position (never past it);
3. keep the newest record of each key (a carried ``created_at`` taking the
   one of the op it replaces in the range, and the shard's for the range's
   first op of a key: the chain rule, see _carry), and hand them, by namespace, to the
   installer, which writes the shard files through the ordinary atomic path
   under the shard locks;
4. write the new checkpoint (temp, fsync, rename, directory fsync);
5. publish it in the control page and retire the segments wholly below it.

**A crash mid-fold is repaired by folding again.** The checkpoint moves only
after every shard is written, and a fold always starts at the checkpoint, so
the next fold reads a superset of the records the crashed one had read and
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .. import _fs
from .._errors import CorruptShardError
from . import _format
from ._carry import Carried, carried_from
from ._reader import LogReader

__all__ = ["Checkpoint", "Installer", "fold_range", "read_checkpoint", "write_checkpoint"]

CHECKPOINT: Final = "checkpoint"
#: How long the fold decodes frames before it lets go of the GIL once.
_YIELD_EVERY_S: Final = 0.0005

#: (namespace, key, sequence number, record or None for a delete)
Installed = tuple[tuple[str, ...], str, int, dict[str, Any] | None]


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


def fold_range(
    reader: LogReader,
    start: int,
    limit: int,
    install: Callable[[list[Installed], float], None],
    record_of: Callable[[_format.LogOp, int, float], dict[str, Any] | None],
) -> tuple[int, int]:
    """Fold the log from ``start`` to ``limit`` into the shards; return (last lsn folded, records).

    Raises CorruptShardError if the log cannot be read all the way to
    ``limit`` (a synced frame that fails its checks is damage, not a tail).
    """
    scan = reader.scan(start, limit)
    if scan.end < limit:
        raise CorruptShardError(
            f"write-ahead log in {reader.wal_dir} cannot be read up to its synced end: {scan.detail or scan.stop}",
            path=reader.wal_dir,
        )
    newest: dict[tuple[tuple[str, ...], str], Installed] = {}
    oldest = math.inf
    last = 0
    count = 0
    yielded = time.perf_counter()
    for frame in scan.frames:
        if frame.kind != _format.BATCH:
            continue
        if time.perf_counter() - yielded >= _YIELD_EVERY_S:
            # Folds run in a background thread: let go of the GIL now and then
            # (each frame is a batch to decode), so a thread waiting for it (an
            # event loop) waits for a fraction of a millisecond, not for the
            # whole step. Not after every frame: under load each sleep(0) is a
            # trip through the scheduler (a third of a close fold's time).
            time.sleep(0)
            yielded = time.perf_counter()
        try:
            first, now, ops = _format.decode_batch(frame.payload)
        except ValueError as exc:
            raise CorruptShardError(
                f"write-ahead log in {reader.wal_dir}: frame at {frame.pos:#x} does not decode: {exc}",
                path=reader.wal_dir,
            ) from exc
        oldest = min(oldest, now)
        for i, op in enumerate(ops):
            ident = (op.namespace, op.key)
            rec = record_of(op, first + i, now)
            if rec is not None and isinstance(rec["created_at"], Carried):
                prev = newest.get(ident)
                if prev is not None:
                    # Only the newest op of a key is installed: a carried
                    # created_at takes the one it replaces in this range now
                    # (still a Carried if that one was: the shard decides).
                    rec["created_at"] = carried_from(prev[3], now)
            newest[ident] = (op.namespace, op.key, first + i, rec)
        count += len(ops)
        last = first + len(ops) - 1 if ops else last
    if newest:
        # Only records expired before the oldest batch here may be dropped: a
        # put of this range or a later one (all stamped later: the time is
        # taken under the append lock) may carry its created_at over from a
        # record live at its time, and resolves it against the shard.
        install(sorted(newest.values(), key=lambda r: (r[0], r[1])), oldest)
    return last, count
