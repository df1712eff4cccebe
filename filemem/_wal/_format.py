"""Byte layout of log segments and their records (layer L2). docs/format.md has the same, for other languages.

A **position** in the log is one unsigned 64-bit number: the segment number
in the high 24 bits and the byte offset in that segment in the low 40, so
positions grow along the log, across segments, and a position names its file.

A **segment** file ``wal/<segment number as 16 hex digits>.log`` starts with a
32-byte header, then frames, each aligned to 8 bytes::

    header:  magic "FMWALSEG" | u32 layout (1) | u32 0 | u64 segment | u32 crc | u32 0
    frame:   u32 crc | u32 length | u64 position | u8 type | 7 zero bytes | payload | zero pad to 8

All integers little-endian. A frame's ``crc`` is zlib's CRC-32 of the frame
bytes after it (header rest and payload, not the padding); its ``position``
is where the frame itself starts. A reader therefore never mistakes zeros
(preallocated space: length 0), a torn write (bad crc) or stale bytes left
from older data (wrong position) for a record: the first frame that fails any
check is the end of the log.

**Frame types.** ``BATCH`` holds one whole write: one op or a thousand, in a
single frame under a single CRC, so after a crash a batch is wholly there or
wholly absent (leveldb's ``write_batch``, for the same reason). ``END`` closes
a segment: the log goes on at offset 32 of the next segment.

**Batch payload**::

    u64 first lsn | f64 time | u32 count | count x op
    op:  u8 kind (1 put, 2 delete) | u8 codec (0 none, 1 json, 2 msgpack) | u16 ns length | u32 key length
         | namespace (JSON array of strings, UTF-8) | key (UTF-8)
         | put only: f64 created_at | f64 expires_at (NaN: none) | u32 value length | value (codec bytes)

The i-th op carries log sequence number ``first lsn + i``, which is also the
record's version: versions come from one counter that only grows, so they
never repeat for a key, across deletes, folds and crashes.

Invariant: :func:`decode_frame` accepts exactly what :func:`encode_frame`
produced at that position and rejects every other byte string.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "BATCH",
    "END",
    "FRAME_HEADER_BYTES",
    "SEGMENT_HEADER_BYTES",
    "IndexedOp",
    "LogOp",
    "check_frame",
    "decode_batch",
    "decode_frame_header",
    "decode_segment_header",
    "encode_batch",
    "encode_frame",
    "encode_segment_header",
    "frame_size",
    "index_batch",
    "offset_of",
    "op_at",
    "position",
    "put_header",
    "segment_name",
    "segment_of",
]

SEGMENT_MAGIC: Final = b"FMWALSEG"
LAYOUT_VERSION: Final = 1
_SEG_HEAD: Final = struct.Struct("<8sIIQ")  # magic, layout, 0, segment (crc'd part: 24 bytes)
SEGMENT_HEADER_BYTES: Final = 32
_FRAME_HEAD: Final = struct.Struct("<IIQB7x")
FRAME_HEADER_BYTES: Final = _FRAME_HEAD.size  # 24
OFFSET_BITS: Final = 40
_OFFSET_MASK: Final = (1 << OFFSET_BITS) - 1
#: Largest frame payload a reader accepts (a batch bigger than this is refused up front).
MAX_PAYLOAD_BYTES: Final = 1 << 31

BATCH: Final = 1
END: Final = 2
_TYPES: Final = frozenset({BATCH, END})

PUT: Final = 1
DELETE: Final = 2
CODEC_IDS: Final = {"json": 1, "msgpack": 2}
CODEC_NAMES: Final = {v: k for k, v in CODEC_IDS.items()}

_BATCH_HEAD: Final = struct.Struct("<QdI")
_OP_HEAD: Final = struct.Struct("<BBHI")
_PUT_TAIL: Final = struct.Struct("<ddI")


def position(segment: int, offset: int) -> int:
    """The log position of ``offset`` in ``segment``."""
    return (segment << OFFSET_BITS) | offset


#: The log's first position: just past the first segment's header.
FIRST_POSITION: Final = position(1, SEGMENT_HEADER_BYTES)


def segment_of(pos: int) -> int:
    """The segment a position lies in."""
    return pos >> OFFSET_BITS


def offset_of(pos: int) -> int:
    """The byte offset of a position within its segment."""
    return pos & _OFFSET_MASK


def segment_name(segment: int) -> str:
    """File name of a segment in ``wal/``."""
    return f"{segment:016x}.log"


def encode_segment_header(segment: int) -> bytes:
    """The 32 header bytes of a segment."""
    head = _SEG_HEAD.pack(SEGMENT_MAGIC, LAYOUT_VERSION, 0, segment)
    return head + struct.pack("<II", zlib.crc32(head), 0)


def decode_segment_header(data: bytes) -> int | None:
    """The segment number a header names, or None if it is not a valid header."""
    if len(data) < SEGMENT_HEADER_BYTES:
        return None
    magic, layout, _, segment = _SEG_HEAD.unpack_from(data)
    (crc,) = struct.unpack_from("<I", data, _SEG_HEAD.size)
    if magic != SEGMENT_MAGIC or layout != LAYOUT_VERSION or crc != zlib.crc32(data[: _SEG_HEAD.size]):
        return None
    return int(segment)


def frame_size(payload_len: int) -> int:
    """Bytes a frame with this payload takes in the segment, padding included."""
    n = FRAME_HEADER_BYTES + payload_len
    return (n + 7) & ~7


def encode_frame(kind: int, pos: int, payload: bytes) -> bytes:
    """One frame (with its padding) to be written at ``pos``."""
    rest = _FRAME_HEAD.pack(0, len(payload), pos, kind)[4:]
    crc = zlib.crc32(payload, zlib.crc32(rest))
    pad = frame_size(len(payload)) - FRAME_HEADER_BYTES - len(payload)
    return b"".join((struct.pack("<I", crc), rest, payload, bytes(pad)))


def decode_frame_header(head: bytes, pos: int) -> tuple[int, int, int] | None:
    """(crc, payload length, kind) of a frame header read at ``pos``; None if it cannot start a frame."""
    if len(head) < FRAME_HEADER_BYTES:
        return None
    crc, length, at, kind = _FRAME_HEAD.unpack_from(head)
    if length == 0 and crc == 0:
        return None  # zeros: preallocated space, the end of what was written
    if at != pos or kind not in _TYPES or length > MAX_PAYLOAD_BYTES:
        return None
    return crc, length, kind


def check_frame(head: bytes, payload: bytes, crc: int) -> bool:
    """Whether ``payload`` (read after ``head``) matches the frame's CRC."""
    return zlib.crc32(payload, zlib.crc32(head[4:FRAME_HEADER_BYTES])) == crc


@dataclass(slots=True)
class LogOp:
    """One op of a batch as the log holds it. ``value`` is codec bytes (put) or None (delete)."""

    namespace: tuple[str, ...]
    key: str
    kind: int
    codec: str | None = None
    value: bytes | None = None
    created_at: float = 0.0
    expires_at: float | None = None


#: Namespaces as logged, both ways: a store has few, and JSON for each op of
#: each frame (every process decodes every frame) was a measurable part of a put.
_NS_BYTES: dict[tuple[str, ...], bytes] = {}
_NS_TUPLES: dict[bytes, tuple[str, ...]] = {}
_NS_CACHE_MAX: Final = 4096


def _ns_bytes(namespace: tuple[str, ...]) -> bytes:
    got = _NS_BYTES.get(namespace)
    if got is None:
        got = json.dumps(list(namespace), ensure_ascii=False, separators=(",", ":")).encode()
        if len(_NS_BYTES) < _NS_CACHE_MAX:
            _NS_BYTES[namespace] = got
    return got


def _ns_tuple(raw: bytes) -> tuple[str, ...]:
    got = _NS_TUPLES.get(raw)
    if got is None:
        ns_raw: Any = json.loads(raw)
        if not isinstance(ns_raw, list) or not all(isinstance(s, str) for s in ns_raw):
            raise ValueError("namespace is not a list of strings")
        got = tuple(ns_raw)
        if len(_NS_TUPLES) < _NS_CACHE_MAX:
            _NS_TUPLES[raw] = got
    return got


def encode_batch(first_lsn: int, now: float, ops: list[LogOp]) -> bytes:
    """The payload of a BATCH frame."""
    out = [_BATCH_HEAD.pack(first_lsn, now, len(ops))]
    # One extend of whole op pieces, packers and a batch's namespaces looked
    # up once: a 1,000-record batch() spent half a millisecond here in calls
    # (issue 13). The bytes are the same as ever.
    extend = out.extend
    op_head = _OP_HEAD.pack
    put_tail = _PUT_TAIL.pack
    codec_ids = CODEC_IDS
    nan = math.nan
    names: dict[tuple[str, ...], bytes] = {}
    for op in ops:
        ns = names.get(op.namespace)
        if ns is None:
            ns = names[op.namespace] = _ns_bytes(op.namespace)
        key = op.key.encode()
        if op.kind == PUT:
            value = op.value
            assert value is not None
            x = op.expires_at
            codec = 0 if op.codec is None else codec_ids[op.codec]
            extend(
                (
                    op_head(PUT, codec, len(ns), len(key)),
                    ns,
                    key,
                    put_tail(op.created_at, nan if x is None else x, len(value)),
                    value,
                )
            )
        else:
            extend((op_head(op.kind, 0, len(ns), len(key)), ns, key))
    return b"".join(out)


def decode_batch(payload: bytes) -> tuple[int, float, list[LogOp]]:
    """(first lsn, time, ops) of a BATCH payload. Raises ValueError if it is malformed.

    :func:`index_batch` checks the payload; each op is then built from it
    (one parser for both: a frame the fold decodes and a frame a writer only
    indexes cannot be judged differently).
    """
    first, now, indexed = index_batch(payload)
    return first, now, [op_at(payload, op) for op in indexed]


#: One op of a batch as :func:`index_batch` finds it: namespace, key, kind,
#: codec id, and where its put tail starts in the payload (0 for a delete).
IndexedOp = tuple[tuple[str, ...], str, int, int, int]


def index_batch(payload: bytes) -> tuple[int, float, list[IndexedOp]]:
    """Like :func:`decode_batch` (the same checks, the same ``ValueError``), without building values.

    A writer reads every other writer's frame to know which keys the log
    holds unfolded; the values it almost never needs (issue 13: decoding
    them, op objects and value copies, was most of a put's catch-up with
    four writers). :func:`op_at` makes the full op from an entry when asked.
    """
    try:
        first, now, count = _BATCH_HEAD.unpack_from(payload)
        at = _BATCH_HEAD.size
        end = len(payload)
        ops: list[IndexedOp] = []
        op_head = _OP_HEAD.unpack_from
        put_tail = _PUT_TAIL.unpack_from
        tail_size = _PUT_TAIL.size
        for _ in range(count):
            kind, codec, ns_len, key_len = op_head(payload, at)
            at += _OP_HEAD.size
            if at + ns_len + key_len > end:
                raise ValueError("truncated namespace or key")
            namespace = _ns_tuple(payload[at : at + ns_len])
            at += ns_len
            key = payload[at : at + key_len].decode()
            at += key_len
            if kind == PUT:
                if codec not in CODEC_NAMES:
                    raise ValueError("unknown codec")
                tail = at
                value_len = put_tail(payload, at)[2]
                at += tail_size + value_len
                if at > end:
                    raise ValueError("truncated value")
                ops.append((namespace, key, kind, codec, tail))
            elif kind == DELETE:
                ops.append((namespace, key, kind, 0, 0))
            else:
                raise ValueError(f"unknown op kind {kind}")
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed batch: {exc}") from exc
    if at != end:
        raise ValueError("batch has trailing bytes")
    return first, now, ops


def put_header(payload: bytes, op: IndexedOp) -> tuple[float, float | None]:
    """(created_at, expires_at) of a put :func:`index_batch` indexed, without its value (NaN created: carried)."""
    created, expires, _ = _PUT_TAIL.unpack_from(payload, op[4])
    return created, None if math.isnan(expires) else expires


def op_at(payload: bytes, op: IndexedOp) -> LogOp:
    """The full op :func:`index_batch` indexed in ``payload`` (which it checked)."""
    namespace, key, kind, codec, tail = op
    if kind != PUT:
        return LogOp(namespace, key, kind)
    created, expires, value_len = _PUT_TAIL.unpack_from(payload, tail)
    start = tail + _PUT_TAIL.size
    return LogOp(
        namespace,
        key,
        PUT,
        CODEC_NAMES[codec],
        payload[start : start + value_len],
        created,
        None if math.isnan(expires) else expires,
    )
