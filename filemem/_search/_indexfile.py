"""Index files: one per namespace (and index configuration), shared by every process (layer L4).

Layout::

    <store>/index/<seg>/<seg>/search-<config>-b<bits>.idx   segments of the shards whose prefix starts <bits>
    <store>/index/<seg>/<seg>/search-<config>.lock          held while (re)writing any of them

``<config>`` fingerprints what the index holds (which fields, which embedding
model), so processes configured differently keep separate files instead of
overwriting each other's. A namespace's index is split over up to 16 files
by the first 4 bits of the shard prefix, so that a rewrite, which costs a
whole file, stays small as the namespace grows. Each file is one JSON header line, then a msgpack
map ``{shard prefix: [inode, mtime_ns, size, segment blob]}``::

    {"filemem-index":1,"config":"3fa2c1d0e9b4","body_bytes":5120,"crc32":"1c291ca3"}\\n<body>

The file is a cache. It is replaced atomically (temp, rename) without fsync:
a crash or power loss can lose it or leave it unreadable, never half-used: a
damaged file fails its CRC and is rebuilt. Its lock is its own, so writers of
shards never wait for it, and taking it is only tried, never waited for: a
process that finds another rewriting the index skips its own write.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Iterator
from typing import Final

import msgpack

from .. import _fs, _locks
from .._engine import INDEX_DIR
from .._names import escape_segment

__all__ = ["INDEX_SUFFIX", "IndexFile", "bucket_of", "index_paths", "parse_index_name", "read_index", "write_index"]

INDEX_VERSION: Final = 1
INDEX_SUFFIX: Final = ".idx"
INDEX_LOCK_SUFFIX: Final = ".lock"
_STEM: Final = "search-"
#: Shard prefixes' first bits that choose the index file (see bucket_of).
BUCKET_BITS: Final = 4

#: prefix -> (shard identity, segment blob)
Entries = dict[str, tuple[tuple[int, int, int], bytes]]


class IndexFile:
    """Where one namespace's index lives for one configuration: bucket files and one lock."""

    __slots__ = ("config", "dir", "lock", "stem")

    def __init__(self, root: str, namespace: tuple[str, ...], config: str) -> None:
        self.config = config
        self.dir = os.path.join(root, INDEX_DIR, *(escape_segment(s) for s in namespace))
        self.stem = f"{_STEM}{config}"
        self.lock = os.path.join(self.dir, self.stem + INDEX_LOCK_SUFFIX)

    def path(self, bucket: str) -> str:
        """The file holding the segments of shards whose prefix starts with ``bucket``."""
        return os.path.join(self.dir, f"{self.stem}-b{bucket}{INDEX_SUFFIX}")

    def buckets(self) -> list[str]:
        """Buckets that have a file now."""
        out = []
        for name in _fs.listdir(self.dir):
            got = parse_index_name(name)
            if got is not None and got[0] == self.config:
                out.append(got[1])
        return out


def bucket_of(prefix: str) -> str:
    """Which index file of its namespace holds a shard's segment.

    Namespaces of many shards spread their index over up to
    2**BUCKET_BITS files, so one rewrite costs a sixteenth of the index.
    """
    return prefix[:BUCKET_BITS]


def read_index(path: str, config: str) -> tuple[Entries, _fs.StatKey] | None:
    """The entries of an index file and the identity of the file read; None if absent.

    Raises ValueError when the file is damaged (the caller rebuilds).
    """
    got = _fs.read_file(path)
    if got is None:
        return None
    data, key = got
    nl = data.find(b"\n")
    if nl < 0:
        raise ValueError(f"index file {path} has no header")
    try:
        head = json.loads(data[:nl])
    except ValueError as exc:
        raise ValueError(f"index file {path} has an unreadable header") from exc
    if not isinstance(head, dict) or head.get("filemem-index") != INDEX_VERSION or head.get("config") != config:
        raise ValueError(f"index file {path} is of another version or configuration")
    body = data[nl + 1 :]
    if head.get("body_bytes") != len(body) or head.get("crc32") != f"{zlib.crc32(body):08x}":
        raise ValueError(f"index file {path} fails its checksum (truncated or damaged)")
    try:
        raw = msgpack.unpackb(body, raw=False, strict_map_key=False)
        entries: Entries = {str(p): ((int(v[0]), int(v[1]), int(v[2])), bytes(v[3])) for p, v in raw.items()}
    except Exception as exc:  # any decoding failure means "damaged": rebuild
        raise ValueError(f"index file {path} does not decode: {exc}") from exc
    return entries, key


def encode_index(entries: Entries, config: str) -> bytes:
    """The bytes of an index file holding ``entries``."""
    body: bytes = msgpack.packb(
        {p: [k[0], k[1], k[2], blob] for p, (k, blob) in sorted(entries.items())}, use_bin_type=True
    )
    head = json.dumps(
        {"filemem-index": INDEX_VERSION, "config": config, "body_bytes": len(body), "crc32": f"{zlib.crc32(body):08x}"},
        separators=(",", ":"),
    )
    return head.encode() + b"\n" + body


@contextlib.contextmanager
def index_lock(where: IndexFile) -> Iterator[bool]:
    """Try the index's own lock; yields whether we have it (never waits)."""
    _fs.ensure_dir(where.dir)
    held = _locks.try_exclusive(where.lock)
    try:
        yield held is not None
    finally:
        if held is not None:
            held.release()


def write_index(path: str, entries: Entries, config: str) -> _fs.StatKey:
    """Replace an index file (caller holds the index lock). Not fsynced: the file is a cache."""
    return _fs.atomic_write(path, encode_index(entries, config), sync=False)


def index_paths(root: str) -> Iterator[tuple[str, str]]:
    """(directory, file name) of every file under ``<store>/index``."""
    top = os.path.join(root, INDEX_DIR)
    for directory, _dirs, files in os.walk(top):
        for name in sorted(files):
            yield directory, name


def parse_index_name(name: str) -> tuple[str, str] | None:
    """(config, bucket) of an index file name, or None if it is not one."""
    if not (name.startswith(_STEM) and name.endswith(INDEX_SUFFIX)) or _fs.TEMP_MARK in name:
        return None
    config, sep, bucket = name[len(_STEM) : -len(INDEX_SUFFIX)].partition("-b")
    if not sep or not config or any(c not in "01" for c in bucket):
        return None
    return config, bucket
