"""The search index of one shard: terms, lengths and vectors of its records (layer L4).

A segment is derived data: it describes exactly one version of one shard
file, named by that file's identity (inode, mtime_ns, size: the key the
engine guarantees never repeats for a path). Whoever finds a segment whose
identity differs from the shard on disk throws it away and builds a new one
from the shard, so a stale segment is never used.

Encoded form (a msgpack list, stored as one opaque blob in the namespace's
index file so that loading a file does not decode every segment)::

    [keys, expires_at list, lengths (uint32 LE), {term: postings}, dim, vector mask, vectors, splitting, versions]

Record versions are kept so that a rebuild re-embeds only the records that
changed: embedding calls may be slow or paid for, and a shard write rewrites
up to a few hundred records.

``postings`` is a packed uint32 little-endian array of (doc, tf) pairs;
``vectors`` packs float32 little-endian values of the docs whose mask byte is 1.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from .._errors import InvalidValueError
from .._shard import Shard
from ._text import record_text, tokenize

__all__ = ["Embed", "Segment", "build_segment", "decode_segment", "encode_segment"]

#: A user's embedding function: text -> vector.
Embed = Callable[[str], Sequence[float]]

_SWAP = sys.byteorder == "big"  # files are little-endian everywhere


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


class Segment:
    """One shard's records as the searcher sees them (immutable once built)."""

    __slots__ = (
        "_postings_raw",
        "_terms",
        "dim",
        "expires",
        "has_expiry",
        "keys",
        "lens",
        "norms",
        "splitting",
        "statkey",
        "total_len",
        "vectors",
        "versions",
    )

    def __init__(
        self,
        statkey: tuple[int, int, int],
        keys: list[str],
        expires: list[float | None],
        lens: array[int],
        postings_raw: dict[str, bytes],
        dim: int,
        vectors: list[array[float] | None],
        splitting: bool,
        versions: list[int],
    ) -> None:
        self.statkey = statkey
        self.versions = versions
        #: The shard version was flagged mid-split: its keys need an owner check.
        self.splitting = splitting
        self.has_expiry = any(x is not None for x in expires)
        self.total_len = sum(lens)
        self.keys = keys
        self.expires = expires
        self.lens = lens
        self._postings_raw = postings_raw
        self._terms: dict[str, array[int]] = {}
        self.dim = dim
        self.vectors = vectors
        self.norms = [math.sqrt(sum(x * x for x in v)) if v is not None else 0.0 for v in vectors]

    def postings(self, term: str) -> array[int] | None:
        """(doc, tf, doc, tf, ...) for ``term``; None if no record here has it."""
        got = self._terms.get(term)
        if got is None:
            raw = self._postings_raw.get(term)
            if raw is None:
                return None
            got = self._terms[term] = _unpack("I", raw)
        return got


def build_segment(
    shard: Shard,
    statkey: tuple[int, int, int],
    fields: tuple[tuple[str, ...], ...] | None,
    embed: Embed | None,
    old: Segment | None = None,
) -> Segment:
    """Index every record of ``shard`` (expired ones too: expiry is checked at query time).

    ``old``: an earlier segment of the same shard; its vectors are reused for
    records whose version did not change.
    """
    keys = sorted(shard.records)
    reuse: dict[str, tuple[int, array[float] | None]] = {}
    if old is not None and embed is not None:
        reuse = {k: (v, vec) for k, v, vec in zip(old.keys, old.versions, old.vectors, strict=True)}
    versions: list[int] = []
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
    raw = {t: _pack(p) for t, p in postings.items()}
    return Segment(statkey, keys, expires, lens, raw, dim, vectors, shard.splitting, versions)


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
    mask = bytes(1 if v is not None else 0 for v in seg.vectors)
    flat = array("f")
    for v in seg.vectors:
        if v is not None:
            flat.extend(v)
    body = [
        seg.keys,
        seg.expires,
        _pack(seg.lens),
        seg._postings_raw,
        seg.dim,
        mask,
        _pack(flat),
        seg.splitting,
        seg.versions,
    ]
    out: bytes = msgpack.packb(body, use_bin_type=True)
    return out


def decode_segment(blob: bytes, statkey: tuple[int, int, int]) -> Segment:
    """Inverse of :func:`encode_segment`; raises ValueError (or msgpack's errors) on a bad blob."""
    keys, expires, lens_raw, postings, dim, mask, flat_raw, splitting, versions = msgpack.unpackb(
        blob, raw=False, strict_map_key=False
    )
    lens = _unpack("I", lens_raw)
    flat = _unpack("f", flat_raw)
    if not (len(keys) == len(expires) == len(lens) == len(mask) == len(versions)) or len(flat) != dim * sum(mask):
        raise ValueError("inconsistent segment")
    vectors: list[array[float] | None] = []
    pos = 0
    for m in mask:
        if m:
            vectors.append(flat[pos : pos + dim])
            pos += dim
        else:
            vectors.append(None)
    return Segment(
        statkey, list(keys), list(expires), lens, dict(postings), int(dim), vectors, bool(splitting), list(versions)
    )
