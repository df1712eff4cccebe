"""The search index of one shard: terms, lengths and vectors of its records (layer L4).

A segment is derived data: it describes exactly one version of one shard
file, named by that file's identity (inode, mtime_ns, size: the key the
engine guarantees never repeats for a path). Whoever finds a segment whose
identity differs from the shard on disk throws it away and builds a new one
from the shard, so a stale segment is never used.

Encoded form: a msgpack list of flat byte strings, so that loading one costs
a few copies and no per-term objects; a query finds its terms by a substring
search in ``terms`` and decodes only their postings::

    [3, keys (NUL-joined UTF-8), expires_at list or None, lengths (uint32),
     terms (NUL-delimited, "\\0t1\\0t2\\0"), term offsets (uint32, one more than terms),
     postings ((doc, tf) pairs: uint16 if all fit, else uint32), dim, vector mask, vectors (float32),
     splitting, versions (int64)]

Integers and floats are little-endian. Record versions are kept so that a
rebuild re-embeds only the records that changed: embedding calls may be slow
or paid for, and a shard write rewrites up to a few hundred records.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgpack

from .._errors import InvalidValueError
from .._shard import Shard
from ._text import record_text, tokenize

__all__ = ["Embed", "Segment", "build_segment", "decode_segment", "encode_segment", "norm"]

#: A user's embedding function: text -> vector.
Embed = Callable[[str], Sequence[float]]

_SWAP: Final = sys.byteorder == "big"  # files are little-endian everywhere
_SEGMENT_VERSION: Final = 3
_NUL: Final = b"\0"
_TWO_U32: Final = struct.Struct("<II")
#: Term lookups by byte search in a segment before it builds a term table.
_FINDS_BEFORE_TABLE: Final = 8
#: Decoded postings kept per segment (the terms of recent queries).
_POSTINGS_CACHE_MAX: Final = 64


def _pack(a: array[Any]) -> bytes:
    if _SWAP:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _unpack(typecode: str, raw: bytes) -> array[Any]:
    a = array(typecode)
    a.frombytes(raw)
    if _SWAP:
        a.byteswap()
    return a


def norm(v: Sequence[float]) -> float:
    """A vector's Euclidean length, as every backend computes it (``_scoring.cosine`` divides by it)."""
    return math.sqrt(sum(x * x for x in v))


class Segment:
    """One shard's records as the searcher sees them (immutable once built; parts decoded on demand)."""

    __slots__ = (
        "_expires",
        "_finds",
        "_keys",
        "_norms",
        "_postings_cache",
        "_term_ids",
        "_vectors",
        "_versions",
        "dim",
        "has_expiry",
        "keys_raw",
        "lens",
        "mask",
        "n",
        "offsets_raw",
        "postings_raw",
        "postings_type",
        "splitting",
        "statkey",
        "terms_raw",
        "total_len",
        "vectors_raw",
        "versions_raw",
    )

    def __init__(
        self,
        statkey: tuple[int, int, int],
        keys_raw: bytes,
        n: int,
        expires: list[float | None] | None,
        lens_raw: bytes,
        terms_raw: bytes,
        offsets_raw: bytes,
        postings_raw: bytes,
        dim: int,
        mask: bytes,
        vectors_raw: bytes,
        splitting: bool,
        versions_raw: bytes,
    ) -> None:
        self.statkey = statkey
        self.keys_raw = keys_raw
        self.n = n
        self._expires = expires
        #: Some record has an expiry time: liveness must be checked per record.
        self.has_expiry = expires is not None
        self.lens = _unpack("I", lens_raw)
        self.total_len = sum(self.lens)
        self.terms_raw = terms_raw
        self.offsets_raw = offsets_raw
        self.postings_raw = postings_raw
        # Postings are uint16 when every doc number and count fits (most
        # shards), else uint32; the width follows from the byte count.
        total = int.from_bytes(offsets_raw[-4:], "little") if offsets_raw else 0
        width = len(postings_raw) // total if total else 4
        if width not in (2, 4) or width * total != len(postings_raw):
            raise ValueError("inconsistent segment postings")
        self.postings_type = "H" if width == 2 else "I"
        self.dim = dim
        self.mask = mask
        self.vectors_raw = vectors_raw
        #: The shard version was flagged mid-split: its keys need an owner check.
        self.splitting = splitting
        self.versions_raw = versions_raw
        self._keys: list[str] | None = None
        self._versions: array[int] | None = None
        self._vectors: list[array[float] | None] | None = None
        self._norms: list[float] | None = None
        self._postings_cache: dict[str, array[int] | None] = {}
        self._term_ids: dict[str, int] | None = None
        self._finds = 0
        if len(self.lens) != n or len(mask) != n or len(versions_raw) != 8 * n:
            raise ValueError("inconsistent segment")

    @property
    def keys(self) -> list[str]:
        """Record keys, in doc order."""
        if self._keys is None:
            self._keys = self.keys_raw.decode().split("\0") if self.n else []
        return self._keys

    @property
    def expires(self) -> list[float | None]:
        """``expires_at`` of each record (None: never)."""
        return self._expires if self._expires is not None else [None] * self.n

    @property
    def versions(self) -> array[int]:
        """Record versions, in doc order."""
        if self._versions is None:
            self._versions = _unpack("q", self.versions_raw)
        return self._versions

    @property
    def vectors(self) -> list[array[float] | None]:
        """Each record's vector, or None (no text, or no embed)."""
        if self._vectors is None:
            flat = _unpack("f", self.vectors_raw)
            out: list[array[float] | None] = []
            pos = 0
            dim = self.dim
            for m in self.mask:
                if m:
                    out.append(flat[pos : pos + dim])
                    pos += dim
                else:
                    out.append(None)
            self._vectors = out
        return self._vectors

    @property
    def norms(self) -> list[float]:
        """Euclidean norm of each vector (0.0 where none)."""
        if self._norms is None:
            self._norms = [norm(v) if v is not None else 0.0 for v in self.vectors]
        return self._norms

    def postings(self, term: str) -> array[int] | None:
        """(doc, tf, doc, tf, ...) for ``term``; None if no record here has it.

        The first lookups search the raw term bytes (no per-term objects: a
        fresh process answers its first queries without decoding a term
        table); after a few, a term table is built, so a warm process looks
        terms up in a dict.
        """
        try:
            return self._postings_cache[term]
        except KeyError:
            pass
        ids = self._term_ids
        if ids is None and self._finds >= _FINDS_BEFORE_TABLE:
            names = self.terms_raw[1:-1].decode().split("\0") if self.terms_raw else []
            ids = self._term_ids = {t: i for i, t in enumerate(names)}
        if ids is not None:
            idx = ids.get(term, -1)
        else:
            self._finds += 1
            raw = self.terms_raw
            pos = raw.find(_NUL + term.encode() + _NUL)
            idx = raw.count(_NUL, 0, pos + 1) - 1 if pos >= 0 else -1
        got: array[int] | None = None
        if idx >= 0:
            start, end = _TWO_U32.unpack_from(self.offsets_raw, idx * 4)
            w = 2 if self.postings_type == "H" else 4
            got = _unpack(self.postings_type, self.postings_raw[start * w : end * w])
        if len(self._postings_cache) >= _POSTINGS_CACHE_MAX:
            self._postings_cache.clear()
        self._postings_cache[term] = got
        return got


def build_segment(
    shard: Shard,
    statkey: tuple[int, int, int],
    fields: tuple[tuple[str, ...], ...] | None,
    embed: Embed | None,
    old: Segment | None = None,
    also: Segment | None = None,
) -> Segment:
    """Index every record of ``shard`` (expired ones too: expiry is checked at query time).

    ``old``: an earlier segment of the same shard; its vectors are reused for
    records whose version did not change. ``also``: one more segment to take
    such vectors from (format 2: the one built from the log's records, which
    the fold has since moved into this shard).
    """
    keys = sorted(shard.records)
    reuse: dict[str, tuple[int, array[float] | None]] = {}
    if embed is not None:
        for seg in (also, old):  # old last: it wins for a key both hold
            if seg is not None:
                reuse.update({k: (v, vec) for k, v, vec in zip(seg.keys, seg.versions, seg.vectors, strict=True)})
    versions = array("q")
    expires: list[float | None] = []
    lens = array("I")
    postings: dict[str, array[int]] = {}
    vectors: list[array[float] | None] = []
    dim = 0
    for doc, key in enumerate(keys):
        rec = shard.records[key]
        expires.append(rec.get("expires_at"))
        versions.append(rec["version"])
        texts = record_text(rec["value"], fields)
        terms: list[str] = []
        for t in texts:
            terms.extend(tokenize(t))
        lens.append(len(terms))
        for term, tf in Counter(terms).items():
            p = postings.get(term)
            if p is None:
                p = postings[term] = array("I")
            p.append(doc)
            p.append(tf)
        vec: array[float] | None = None
        if embed is not None and texts:
            prev = reuse.get(key)
            vec = prev[1] if prev is not None and prev[0] == rec["version"] and prev[1] is not None else None
            if vec is None:
                vec = _embed(embed, " ".join(texts))
            if dim and len(vec) != dim:
                raise InvalidValueError(f"embed returned vectors of {dim} and {len(vec)} dimensions")
            dim = len(vec)
        vectors.append(vec)
    offsets = array("I", [0])
    flat_postings = array("I")
    for p in postings.values():
        flat_postings.extend(p)
        offsets.append(len(flat_postings))
    terms_raw = _NUL + _NUL.join(t.encode() for t in postings) + _NUL if postings else b""
    flat_vectors = array("f")
    for v in vectors:
        if v is not None:
            flat_vectors.extend(v)
    return Segment(
        statkey,
        "\0".join(keys).encode(),
        len(keys),
        expires if any(x is not None for x in expires) else None,
        _pack(lens),
        terms_raw,
        _pack(offsets),
        _pack(array("H", flat_postings) if max(flat_postings, default=0) < 65536 else flat_postings),
        dim,
        bytes(1 if v is not None else 0 for v in vectors),
        _pack(flat_vectors),
        shard.splitting,
        _pack(versions),
    )


def _embed(embed: Embed, text: str) -> array[float]:
    try:
        got = array("f", [float(x) for x in embed(text)])
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidValueError(f"embed must return a sequence of numbers: {exc}") from exc
    if not got:
        raise InvalidValueError("embed returned an empty vector")
    return got


def encode_segment(seg: Segment) -> bytes:
    """The segment as a blob for the index file."""
    body = [
        _SEGMENT_VERSION,
        seg.keys_raw,
        seg.n,
        seg._expires,
        _pack(seg.lens),
        seg.terms_raw,
        seg.offsets_raw,
        seg.postings_raw,
        seg.dim,
        seg.mask,
        seg.vectors_raw,
        seg.splitting,
        seg.versions_raw,
    ]
    out: bytes = msgpack.packb(body, use_bin_type=True)
    return out


def decode_segment(blob: bytes, statkey: tuple[int, int, int]) -> Segment:
    """Inverse of :func:`encode_segment`; raises ValueError (or msgpack's errors) on a bad blob."""
    body = msgpack.unpackb(blob, raw=False)
    if not isinstance(body, list) or len(body) != 13 or body[0] != _SEGMENT_VERSION:
        raise ValueError("not a segment of this version")
    _, keys_raw, n, expires, lens_raw, terms_raw, offsets_raw, postings_raw, dim, mask, vec_raw, split, ver_raw = body
    seg = Segment(
        statkey,
        keys_raw,
        int(n),
        expires,
        lens_raw,
        terms_raw,
        offsets_raw,
        postings_raw,
        int(dim),
        mask,
        vec_raw,
        bool(split),
        ver_raw,
    )
    if len(vec_raw) != 4 * dim * sum(mask) or (expires is not None and len(expires) != n):
        raise ValueError("inconsistent segment")
    return seg
