"""The collector's journal file: framing, the owner's writer, the reader (layer L4).

One append-only file per collector, ``<store>/journals/<jid>.journal``::

    header   b"FMJOURNAL1\\n"
    frame    <u32 little-endian payload length> <u32 crc32 of payload> <payload>
    payload  msgpack [seq, collected_at, priority, [namespace segments], key, codec, value bytes]

The value is encoded by the store's codec (the same bytes a shard would hold),
so what the journal accepts the store can store. A crash can leave a frame
half written at the end: the reader stops at the first frame whose length runs
past the end or whose checksum fails and ignores the rest (a *torn tail*);
frames are only ever appended, and fsynced before anything after them counts,
so nothing valid can follow a torn frame.

The live owner holds an exclusive lock on the file for as long as it lives
(the kernel drops it when the process dies, however it dies): a journal whose
lock can be taken belongs to a dead collector and may be replayed.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from .. import _fs, _locks
from .._errors import StorageError

__all__ = [
    "HEADER",
    "JOURNAL_SUFFIX",
    "JournalFile",
    "JournalRecord",
    "decode_frame",
    "encode_frame",
    "frame_tail",
    "frame_with_seq",
    "read_journal",
]

#: Frames read back in one pread at most (the apply side reads a batch's frames in runs).
_READ_RUN_BYTES: Final = 1 << 20

HEADER: Final = b"FMJOURNAL1\n"
JOURNAL_SUFFIX: Final = ".journal"
_FRAME: Final = struct.Struct("<II")
#: A frame longer than this is treated as garbage (a torn length field).
_MAX_FRAME_BYTES: Final = 1 << 30


@dataclass(slots=True)
class JournalRecord:
    """One record as read back from a journal."""

    seq: int
    collected_at: float
    priority: int
    namespace: tuple[str, ...]
    key: str
    codec: str
    payload: bytes


def encode_frame(
    seq: int, collected_at: float, priority: int, namespace: tuple[str, ...], key: str, codec: str, payload: bytes
) -> bytes:
    """One length- and checksum-framed journal record."""
    body: bytes = msgpack.packb([seq, collected_at, priority, list(namespace), key, codec, payload], use_bin_type=True)
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def frame_tail(
    collected_at: float, priority: int, namespace: tuple[str, ...], key: str, codec: str, payload: bytes
) -> bytes:
    """Everything of a frame's payload but the id: packed before the id is known (outside collect()'s lock)."""
    packed: bytes = msgpack.packb([collected_at, priority, list(namespace), key, codec, payload], use_bin_type=True)
    return packed[1:]  # without the 6-element array header (one byte, 0x96): frame_with_seq writes a 7-element one


def frame_with_seq(seq: int, tail: bytes) -> bytes:
    """The frame :func:`encode_frame` makes, byte for byte, from the id and :func:`frame_tail`."""
    packed_seq: bytes = msgpack.packb(seq)
    body = b"\x97" + packed_seq + tail
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def decode_frame(frame: bytes) -> JournalRecord:
    """The record in one whole frame made by this process (StorageError if it does not decode)."""
    rec = _decode_body(frame[_FRAME.size :])
    if rec is None:
        raise StorageError("a queued journal frame does not decode")
    return rec


def read_journal(path: str) -> tuple[list[JournalRecord], int, bool]:
    """The valid records of a journal, the byte offset where they end, and whether a torn tail follows.

    A file without a complete header holds no records (a crash during
    creation). Raises StorageError only if the file cannot be read at all.
    """
    got = _fs.read_file(path)  # never follows a link, never waits on a FIFO
    if got is None:
        return [], 0, False
    data = got[0]
    if not data.startswith(HEADER):
        return [], 0, bool(data)
    records: list[JournalRecord] = []
    pos = len(HEADER)
    end = len(data)
    while pos < end:
        if end - pos < _FRAME.size:
            return records, pos, True
        length, crc = _FRAME.unpack_from(data, pos)
        start = pos + _FRAME.size
        if length > _MAX_FRAME_BYTES or start + length > end:
            return records, pos, True
        body = data[start : start + length]
        if zlib.crc32(body) != crc:
            return records, pos, True
        rec = _decode_body(body)
        if rec is None:
            return records, pos, True
        records.append(rec)
        pos = start + length
    return records, pos, False


def _decode_body(body: bytes) -> JournalRecord | None:
    try:
        got: Any = msgpack.unpackb(body, raw=False, strict_map_key=True)
        seq, ts, prio, ns, key, codec, payload = got
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not (
        isinstance(seq, int)
        and isinstance(ts, (int, float))
        and isinstance(prio, int)
        and isinstance(ns, list)
        and all(isinstance(s, str) for s in ns)
        and isinstance(key, str)
        and isinstance(codec, str)
        and isinstance(payload, bytes)
    ):
        return None
    return JournalRecord(seq, float(ts), prio, tuple(ns), key, codec, payload)


class JournalFile:
    """The live owner's handle on its journal: append, sync, truncate, retire.

    Not thread-safe by itself; the collector's journal thread is its only writer
    (the apply thread truncates under the collector's journal lock).
    """

    def __init__(self, directory: str, jid: str, *, sync: bool) -> None:
        self.directory = directory
        self.jid = jid
        self.path = os.path.join(directory, jid + JOURNAL_SUFFIX)
        self.sync = sync
        _fs.ensure_dir(directory)
        # Created under a temp name, locked, then renamed: nobody can ever
        # see the final name unlocked while we live, so "the lock can be
        # taken" really means "the owner is dead".
        tmp = _fs.temp_path(self.path)
        self._held = _locks.create_locked(tmp)
        try:
            _fs.write_fd(self._held.fd, HEADER, sync=sync, path=tmp)
            _fs.replace(tmp, self.path)
            if sync:
                _fs.fsync_dir(directory)
        except BaseException:
            self._held.release()
            _fs.remove_quietly(tmp)
            raise
        self.offset = len(HEADER)
        self.size_since_truncate = 0

    @property
    def fd(self) -> int:
        """The descriptor writes go through (it carries the lock)."""
        return self._held.fd

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end; on failure cut the file back so no half frame stays before later ones."""
        try:
            written = 0
            view = memoryview(data)
            while written < len(data):
                written += os.pwrite(self.fd, view[written:], self.offset + written)
        except OSError as exc:
            self._cut(self.offset)
            raise _fs.storage_error(exc, "append to journal", self.path) from exc
        self.offset += len(data)
        self.size_since_truncate += len(data)

    def read_frames(self, spans: list[tuple[int, int]]) -> list[JournalRecord]:
        """The records whose frames start at ``spans``' offsets with their sizes, in that order.

        Frames next to each other are read in one ``pread``. A frame that does
        not read back whole and intact raises StorageError: this process wrote
        and fsynced it and holds the file's lock, so that is a failing disk.
        """
        out: list[JournalRecord] = []
        i = 0
        n = len(spans)
        while i < n:
            start, size = spans[i]
            j = i + 1
            end = start + size
            while j < n and spans[j][0] == end and end - start < _READ_RUN_BYTES:
                end += spans[j][1]
                j += 1
            try:
                data = os.pread(self.fd, end - start, start)
            except OSError as exc:
                raise _fs.storage_error(exc, "read back from journal", self.path) from exc
            pos = 0
            for k in range(i, j):
                size = spans[k][1]
                rec = None
                if len(data) >= pos + size >= pos + _FRAME.size:
                    length, crc = _FRAME.unpack_from(data, pos)
                    body = data[pos + _FRAME.size : pos + size]
                    if length == len(body) and zlib.crc32(body) == crc:
                        rec = _decode_body(body)
                if rec is None:
                    raise StorageError(
                        f"journal {self.path}: frame at {spans[k][0]} does not read back", path=self.path
                    )
                out.append(rec)
                pos += size
            i = j
        return out

    def flush(self) -> None:
        """fsync what was appended (a no-op for a store with durability="flush")."""
        if not self.sync:
            return
        try:
            os.fdatasync(self.fd) if hasattr(os, "fdatasync") else os.fsync(self.fd)
        except OSError as exc:
            raise _fs.storage_error(exc, "fsync journal", self.path) from exc

    def truncate(self) -> None:
        """Drop every frame (all of them are applied): the file goes back to its header."""
        self._cut(len(HEADER))
        self.offset = len(HEADER)
        self.size_since_truncate = 0
        self.flush()

    def _cut(self, length: int) -> None:
        try:
            os.ftruncate(self.fd, length)
        except OSError as exc:
            raise _fs.storage_error(exc, "truncate journal", self.path) from exc

    def retire(self) -> None:
        """Remove the journal (everything in it is applied) and release its lock."""
        try:
            os.unlink(self.path)
            if self.sync:
                _fs.fsync_dir(self.directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"could not remove journal {self.path}: {exc.strerror}", path=self.path) from exc
        finally:
            self._held.release()

    def release(self) -> None:
        """Let go of the lock and keep the file (it still owes records: a later open replays them)."""
        self._held.release()
