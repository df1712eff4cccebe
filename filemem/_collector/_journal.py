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
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from .. import _fs, _locks
from .._errors import StorageError
from .._wal import _platform

__all__ = [
    "FRAME",
    "HEADER",
    "JOURNAL_SUFFIX",
    "Fields",
    "JournalFile",
    "JournalRecord",
    "TailPacker",
    "decode_frame",
    "encode_frame",
    "frame_tail",
    "frame_with_seq",
    "pack_frames",
    "pack_namespace",
    "pack_str",
    "pack_uint",
    "read_journal",
]

#: Frames read back in one pread at most (the apply side reads a batch's frames in runs).
_READ_RUN_BYTES: Final = 1 << 20

HEADER: Final = b"FMJOURNAL1\n"
JOURNAL_SUFFIX: Final = ".journal"
_FRAME: Final = struct.Struct("<II")
#: A frame's header: payload length, crc32 of the payload.
FRAME: Final = _FRAME
#: A frame longer than this is treated as garbage (a torn length field).
_MAX_FRAME_BYTES: Final = 1 << 30
# msgpack headers packed by hand (see frame_tail): a type byte and a big-endian length or value.
_F64: Final = struct.Struct(">Bd")
_HEAD8: Final = struct.Struct(">BB")
_HEAD16: Final = struct.Struct(">BH")
_HEAD32: Final = struct.Struct(">BI")
_U64: Final = struct.Struct(">BQ")
_FIXINT: Final = tuple(bytes((i,)) for i in range(128))
_FIXSTR: Final = tuple(bytes((0xA0 | i,)) for i in range(32))
#: Namespaces whose packed form a TailPacker keeps.
_NAMESPACES_KEPT: Final = 4096


#: A record's fields as :meth:`JournalFile.read_fields` gives them: (seq, collected_at, priority, namespace,
#: key, codec, payload).
Fields = tuple[int, float, int, tuple[str, ...], str, str, bytes]
_unpackb: Final = msgpack.unpackb


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
    """Everything of a frame's payload but the id: packed before the id is known (outside collect()'s lock).

    Byte for byte what ``msgpack.packb`` writes for the last six fields (the
    test suite holds it to that), but packed with ``struct``: this runs on
    every ``collect()``, where ``packb`` (a new packer per call) cost about
    2 us, a sixth of the call. :class:`TailPacker` keeps the packed namespace too.
    """
    return _pack_tail(collected_at, priority, pack_namespace(namespace), key, pack_str(codec), payload)


class TailPacker:
    """:func:`frame_tail` for one codec, keeping the packed form of recent namespaces.

    Thread-safe: the cache is one dict, read and replaced by single operations
    (a race at worst packs a namespace twice).
    """

    __slots__ = ("_codec", "_namespaces")

    def __init__(self, codec: str) -> None:
        self._codec = pack_str(codec)
        #: namespace -> its packed form behind each priority's fixint (priorities 0, 1, 2)
        self._namespaces: dict[tuple[str, ...], tuple[bytes, ...]] = {}

    def pack(self, collected_at: float, priority: int, namespace: tuple[str, ...], key: str, payload: bytes) -> bytes:
        """:func:`frame_tail` of these fields with this packer's codec (``priority`` 0-2, as collect() gives it)."""
        # One call, one join: this runs on every collect(), often with cold caches (a paced caller).
        heads = self._namespaces.get(namespace)
        if heads is None:
            if len(self._namespaces) >= _NAMESPACES_KEPT:
                self._namespaces = {}
            packed = pack_namespace(namespace)
            heads = self._namespaces[namespace] = tuple(_FIXINT[p] + packed for p in range(3))
        kb = key.encode("utf-8")
        n_key = len(kb)
        n_payload = len(payload)
        return b"".join(
            (
                _F64.pack(0xCB, collected_at),  # msgpack writes a Python float as float 64
                heads[priority],  # the priority (a fixint) and the namespace
                _FIXSTR[n_key] if n_key < 32 else _str_header(n_key),
                kb,
                self._codec,
                _HEAD8.pack(0xC4, n_payload) if n_payload < 256 else _bin_header(n_payload),
                payload,
            )
        )


def _pack_tail(collected_at: float, priority: int, ns: bytes, key: str, codec: bytes, payload: bytes) -> bytes:
    kb = key.encode("utf-8")
    n_key = len(kb)
    n_payload = len(payload)
    return b"".join(
        (
            _F64.pack(0xCB, collected_at),  # msgpack writes a Python float as float 64
            pack_uint(priority),
            ns,
            _FIXSTR[n_key] if n_key < 32 else _str_header(n_key),
            kb,
            codec,
            _HEAD8.pack(0xC4, n_payload) if n_payload < 256 else _bin_header(n_payload),
            payload,
        )
    )


def pack_frames(
    seqs: Sequence[int], prios: Sequence[int], fields: Sequence[tuple[float, tuple[str, ...], str, bytes]], codec: str
) -> tuple[bytearray, array[int]]:
    """The frames :func:`encode_frame` makes for these records, back to back, and each one's size.

    ``fields``: each record's (collected_at, namespace, key, value bytes). The
    journal thread packs a whole group so, with one msgpack packer (whose C
    code writes exactly what ``packb`` of the list does: the test suite holds
    it to that), off ``collect()``'s path.
    """
    pack = msgpack.Packer(use_bin_type=True).pack
    head = _FRAME.pack
    crc32 = zlib.crc32
    out = bytearray()
    sizes = array("I")
    for seq, prio, (ts, ns, key, payload) in zip(seqs, prios, fields, strict=True):
        body = pack((seq, ts, prio, ns, key, codec, payload))
        out += head(len(body), crc32(body))
        out += body
        sizes.append(_FRAME.size + len(body))
    return out, sizes


def pack_str(text: str) -> bytes:
    """msgpack's encoding of a str (``use_bin_type=True``: str 8 allowed)."""
    raw = text.encode("utf-8")
    n = len(raw)
    return (_FIXSTR[n] if n < 32 else _str_header(n)) + raw


def pack_namespace(namespace: tuple[str, ...]) -> bytes:
    """msgpack's encoding of a namespace: an array of str."""
    n = len(namespace)
    head = bytes((0x90 | n,)) if n < 16 else _HEAD16.pack(0xDC, n) if n < 65536 else _HEAD32.pack(0xDD, n)
    return head + b"".join(pack_str(s) for s in namespace)


def pack_uint(n: int) -> bytes:
    """msgpack's (shortest) encoding of a non-negative int."""
    if n < 128:
        return _FIXINT[n]
    if n < 256:
        return _HEAD8.pack(0xCC, n)
    if n < 65536:
        return _HEAD16.pack(0xCD, n)
    if n < 1 << 32:
        return _HEAD32.pack(0xCE, n)
    return _U64.pack(0xCF, n)


def _str_header(n: int) -> bytes:
    if n < 256:
        return _HEAD8.pack(0xD9, n)
    if n < 65536:
        return _HEAD16.pack(0xDA, n)
    return _HEAD32.pack(0xDB, n)


def _bin_header(n: int) -> bytes:
    if n < 256:
        return _HEAD8.pack(0xC4, n)
    if n < 65536:
        return _HEAD16.pack(0xC5, n)
    return _HEAD32.pack(0xC6, n)


def frame_with_seq(seq: int, tail: bytes) -> bytes:
    """The frame :func:`encode_frame` makes, byte for byte, from the id and :func:`frame_tail`."""
    head = b"\x97" + pack_uint(seq)  # a 7-element array: the id, then the tail's six fields
    crc = zlib.crc32(tail, zlib.crc32(head))  # crc32 of head + tail, without joining them first
    return b"".join((_FRAME.pack(len(head) + len(tail), crc), head, tail))


def decode_frame(frame: bytes | bytearray) -> JournalRecord:
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


def _decode_body(body: bytes | bytearray | memoryview) -> JournalRecord | None:
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
        self._namespaces: dict[tuple[str, ...], tuple[str, ...]] = {}  # checked once, shared by every record

    @property
    def fd(self) -> int:
        """The descriptor writes go through (it carries the lock)."""
        return self._held.fd

    def append(self, data: bytes | bytearray) -> None:
        """Write ``data`` at the end; on failure cut the file back so no half frame stays before later ones."""
        try:
            _platform.pwrite(self.fd, memoryview(data), self.offset)  # seek+write where no pwrite
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
        return [
            JournalRecord(seq, ts, prio, ns, key, codec, payload)
            for seq, ts, prio, ns, key, codec, payload in self.read_fields(
                [off for off, _ in spans], [size for _, size in spans]
            )
        ]

    def read_fields(self, offs: Sequence[int], sizes: Sequence[int]) -> list[Fields]:
        """:meth:`read_frames` as bare tuples ``(seq, collected_at, priority, namespace, key, codec, payload)``.

        The apply thread's path: no object per record beyond the tuple msgpack
        builds anyway (``_decode_body`` costs ~3x more per frame, in checks a
        frame this process wrote, checksummed and fsynced does not need twice).
        """
        out: list[Fields] = []
        i = 0
        n = len(offs)
        unpack_from = _FRAME.unpack_from
        crc32 = zlib.crc32
        while i < n:
            start = offs[i]
            j = i + 1
            end = start + sizes[i]
            while j < n and offs[j] == end and end - start < _READ_RUN_BYTES:
                end += sizes[j]
                j += 1
            try:
                data = _platform.pread(self.fd, end - start, start)
            except OSError as exc:
                raise _fs.storage_error(exc, "read back from journal", self.path) from exc
            view = memoryview(data)
            pos = 0
            for k in range(i, j):
                size = sizes[k]
                got = None
                if len(data) >= pos + size >= pos + _FRAME.size:
                    length, crc = unpack_from(data, pos)
                    body = view[pos + _FRAME.size : pos + size]
                    if length == len(body) and crc32(body) == crc:
                        got = self._fields(body)
                if got is None:
                    raise StorageError(f"journal {self.path}: frame at {offs[k]} does not read back", path=self.path)
                out.append(got)
                pos += size
            i = j
        return out

    def _fields(self, body: memoryview) -> Fields | None:
        try:
            got: Any = _unpackb(body, use_list=False)
            seq, ts, prio, ns, key, codec, payload = got
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if type(seq) is int and type(ts) is float and type(key) is str and type(payload) is bytes:
            known = self._namespaces.get(ns) if type(ns) is tuple else None
            if known is None and type(ns) is tuple and all(type(s) is str for s in ns):
                if len(self._namespaces) >= _NAMESPACES_KEPT:
                    self._namespaces = {}
                known = self._namespaces[ns] = ns
            if known is not None and type(prio) is int and type(codec) is str:
                return seq, ts, prio, known, key, codec, payload
        rec = _decode_body(body)  # (an int timestamp, say: the full check decides)
        if rec is None:
            return None
        return rec.seq, rec.collected_at, rec.priority, rec.namespace, rec.key, rec.codec, rec.payload

    def flush(self) -> None:
        """fsync what was appended (a no-op for a store with durability="flush")."""
        if not self.sync:
            return
        try:
            _platform.datasync(self.fd)
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
