"""The shard file format (layer L2). See docs/format.md for the full description.

A shard file is one header line of JSON, then the body::

    {"filemem":1,"codec":"json","prefix":"01","generation":7,"count":2,"body_bytes":153,
     "splitting":false,"touched":["k1"],"crc32":"1c291ca3"}\\n
    <body: the codec's encoding of {key: record, ...}>

The header is always JSON (whatever the codec) so any tool can read it. The
``crc32`` field is last; it is the CRC-32 (zlib polynomial) of the header
line's bytes up to, not including, ``,"crc32":`` followed by the body bytes.
So a flipped byte anywhere in the file, or a truncated body, is caught.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Final

from ._errors import CorruptShardError, UnsupportedFormatError
from .codecs import Codec

__all__ = ["FORMAT_VERSION", "Record", "Shard", "decode_shard", "encode_shard", "lacks_key", "shard_name"]

#: Bump only with a migration path; readers refuse versions above theirs.
FORMAT_VERSION: Final = 1
_CRC_MARK: Final = b',"crc32":"'
#: How many touched keys the header names before it just says "many" (null).
_TOUCHED_MAX: Final = 16
SHARD_SUFFIX: Final = ".shard"
LOCK_SUFFIX: Final = ".lock"

#: A record as stored: {"value": V, "version": int, "created_at": float,
#: "updated_at": float, optional "expires_at": float}.
Record = dict[str, Any]


def shard_name(prefix: str) -> str:
    """File name of the shard holding keys whose hash bits start with ``prefix``."""
    return f"s{prefix}{SHARD_SUFFIX}"


class Shard:
    """One parsed shard: its records plus the encoded form of each, when known.

    Instances in the engine's cache are never mutated: a write makes a
    :meth:`copy`, changes it, encodes it and replaces the cached one.
    """

    __slots__ = (
        "codec",
        "generation",
        "min_expires",
        "pairs",
        "prefix",
        "records",
        "splitting",
        "statkey",
        "touched",
    )

    def __init__(
        self,
        prefix: str,
        codec: str,
        generation: int,
        records: dict[str, Record],
        pairs: dict[str, bytes] | None = None,
        *,
        splitting: bool = False,
        touched: list[str] | None = None,
    ) -> None:
        self.prefix = prefix
        self.codec = codec
        self.generation = generation
        self.records = records
        # Encoded "key: record" entries by key; missing entries are encoded on
        # demand. This is what keeps a put's cost at encoding one record.
        self.pairs: dict[str, bytes] = pairs if pairs is not None else {}
        self.splitting = splitting
        self.touched = touched
        self.statkey: tuple[int, int, int] | None = None
        # Earliest expires_at of any record (or None): lets a write skip the
        # expiry scan of a shard in which nothing can have expired.
        self.min_expires: float | None = min(
            (x for r in records.values() if (x := r.get("expires_at")) is not None), default=None
        )

    def copy(self) -> Shard:
        """A copy whose dicts can be changed without touching this one."""
        new = Shard.__new__(Shard)
        new.prefix = self.prefix
        new.codec = self.codec
        new.generation = self.generation
        new.records = dict(self.records)
        new.pairs = dict(self.pairs)
        new.splitting = self.splitting
        new.touched = None
        new.statkey = None
        new.min_expires = self.min_expires
        return new

    def set(self, key: str, record: Record) -> None:
        """Insert or replace ``key``."""
        self.records[key] = record
        self.pairs.pop(key, None)
        x = record.get("expires_at")
        if x is not None and (self.min_expires is None or x < self.min_expires):
            self.min_expires = x

    def remove(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        self.pairs.pop(key, None)
        return self.records.pop(key, None) is not None

    def drop_expired(self, now: float) -> list[str]:
        """Remove records whose ``expires_at`` has passed; return their keys."""
        if self.min_expires is None or self.min_expires > now:
            return []
        gone = [k for k, r in self.records.items() if (x := r.get("expires_at")) is not None and x <= now]
        for k in gone:
            self.remove(k)
        self.min_expires = min(
            (x for r in self.records.values() if (x := r.get("expires_at")) is not None), default=None
        )
        return gone


def encode_shard(shard: Shard, codec: Codec) -> bytes:
    """Encode ``shard`` with ``codec`` (filling ``shard.pairs``); return the file bytes."""
    pairs = shard.pairs
    if shard.codec != codec.name:
        pairs.clear()
        shard.codec = codec.name
    out: list[bytes] = []
    for key, record in shard.records.items():
        pair = pairs.get(key)
        if pair is None:
            pair = codec.encode_pair(key, record)
            pairs[key] = pair
        out.append(pair)
    body = codec.join_map(out)
    touched = shard.touched if shard.touched is not None and len(shard.touched) <= _TOUCHED_MAX else None
    head = json.dumps(
        {
            "filemem": FORMAT_VERSION,
            "codec": codec.name,
            "prefix": shard.prefix,
            "generation": shard.generation,
            "count": len(shard.records),
            "body_bytes": len(body),
            "splitting": shard.splitting,
            "touched": touched,
        },
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")[:-1]
    crc = zlib.crc32(body, zlib.crc32(head))
    return b"".join((head, _CRC_MARK, b"%08x" % crc, b'"}\n', body))


def read_header(data: bytes, path: str) -> tuple[dict[str, Any], int]:
    """Parse and check the header line; return it and the offset of the body.

    Raises CorruptShardError (naming ``path``) on any damage, including a body
    whose checksum or length does not match.
    """
    end = data.find(b"\n")
    if end < 0:
        raise CorruptShardError(f"corrupt shard {path}: no header line (truncated?)", path=path)
    line = data[:end]
    mark = line.rfind(_CRC_MARK)
    if mark < 0 or not line.endswith(b'"}') or len(line) != mark + len(_CRC_MARK) + 10:
        raise CorruptShardError(f"corrupt shard {path}: malformed header", path=path)
    body = memoryview(data)[end + 1 :]
    try:
        expected = int(line[mark + len(_CRC_MARK) : -2], 16)
    except ValueError:
        raise CorruptShardError(f"corrupt shard {path}: malformed checksum", path=path) from None
    actual = zlib.crc32(body, zlib.crc32(line[:mark]))
    if actual != expected:
        raise CorruptShardError(
            f"corrupt shard {path}: checksum mismatch (file says {expected:08x}, content is {actual:08x})",
            path=path,
        )
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise CorruptShardError(f"corrupt shard {path}: header is not JSON: {exc}", path=path) from exc
    if not isinstance(header, dict):
        raise CorruptShardError(f"corrupt shard {path}: header is not an object", path=path)
    version = header.get("filemem")
    if not isinstance(version, int):
        raise CorruptShardError(f"corrupt shard {path}: header has no format version", path=path)
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"shard {path} has format version {version}; this filemem reads up to {FORMAT_VERSION}. Upgrade filemem.",
            path=path,
        )
    if header.get("body_bytes") != len(body):
        raise CorruptShardError(
            f"corrupt shard {path}: body is {len(body)} bytes, header says {header.get('body_bytes')}", path=path
        )
    for field, kind in (("generation", int), ("count", int), ("prefix", str), ("codec", str)):
        if not isinstance(header.get(field), kind):
            raise CorruptShardError(f"corrupt shard {path}: header field {field!r} missing or wrong", path=path)
    return header, end + 1


def decode_shard(
    data: bytes, path: str, codecs: dict[str, Codec], expected_prefix: str | None = None, *, keep_pairs: bool = True
) -> Shard:
    """Parse and verify a shard file's bytes; raise CorruptShardError naming ``path``.

    ``keep_pairs=False``: leave :attr:`Shard.pairs` empty (they are encoded
    again if the shard is ever written). A reader that never writes the shard
    saves about a quarter of its memory (the encoded copy of every record).
    """
    header, offset = read_header(data, path)
    codec = codecs.get(header["codec"])
    if codec is None:
        raise UnsupportedFormatError(f"shard {path} uses unknown codec {header['codec']!r}", path=path)
    if expected_prefix is not None and header["prefix"] != expected_prefix:
        raise CorruptShardError(
            f"corrupt shard {path}: holds prefix {header['prefix']!r}, file name says {expected_prefix!r}", path=path
        )
    body = data[offset:]
    try:
        records = codec.decode(body)
    except CorruptShardError as exc:
        raise CorruptShardError(f"corrupt shard {path}: {exc.message}", path=path) from exc
    if not isinstance(records, dict) or len(records) != header["count"]:
        raise CorruptShardError(f"corrupt shard {path}: body does not hold {header['count']} records", path=path)
    for rec in records.values():
        if not isinstance(rec, dict) or "value" not in rec or not isinstance(rec.get("version"), int):
            raise CorruptShardError(f"corrupt shard {path}: malformed record", path=path)
    raw = codec.split_map(body, len(records)) if keep_pairs else None
    pairs = dict(zip(records, raw, strict=True)) if raw is not None else None
    touched = header.get("touched")
    return Shard(
        header["prefix"],
        header["codec"],
        header["generation"],
        records,
        pairs,
        splitting=bool(header.get("splitting")),
        touched=touched if isinstance(touched, list) else None,
    )


def lacks_key(data: bytes, path: str, key: str, expected_prefix: str | None = None) -> bool:
    """Whether the shard file ``data`` surely holds no record of ``key``, found without decoding its records.

    The header and checksum are checked as :func:`decode_shard` checks them
    (``CorruptShardError`` naming ``path``). True only when the key's UTF-8
    bytes occur nowhere in the body, where that proves it absent: msgpack
    writes a str key's bytes as they are, and JSON writes a key with no
    quote, backslash or control character either as its bytes or with a
    ``\\u`` escape, so for JSON also no ``\\u`` may occur in the body.
    False means "maybe": decode the shard. A splitting shard is always
    "maybe" (its reader must look further). Resolving a carried
    ``created_at`` of a new key asks only this (issue 13: a parse of the
    key's shard per overwrite of a key not folded yet).
    """
    header, offset = read_header(data, path)
    if expected_prefix is not None and header["prefix"] != expected_prefix:
        raise CorruptShardError(
            f"corrupt shard {path}: holds prefix {header['prefix']!r}, file name says {expected_prefix!r}", path=path
        )
    if header.get("splitting"):
        return False
    codec = header["codec"]
    if codec == "json":
        if not _verbatim_in_json(key) or data.find(b"\\u", offset) >= 0:
            return False
    elif codec != "msgpack":
        return False
    return data.find(key.encode(), offset) < 0


def _verbatim_in_json(key: str) -> bool:
    """Whether JSON writes ``key`` as its own characters: no quote, backslash or control character."""
    return '"' not in key and "\\" not in key and (key.isprintable() or not any(c < " " for c in key))
