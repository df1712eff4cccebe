"""Looking at every shard once, lock-free, for what compaction would change (layer L5).

Reads each shard file whole (a shard is only ever replaced by rename, so a
reader holds one complete version) without entering the process cache, the
way ``scan`` does: a health check must not evict the agents' hot shards. The
only lock it touches is a non-blocking probe of a shard that looks like an
interrupted split, to tell a dead splitter from a live one.

What it reports mirrors what :mod:`filemem._maintain` would do, with the same
rules: the merge limit is the one ``merge_small_siblings`` uses.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Final

from .. import _fs, _locks
from .._engine import Engine
from .._errors import CorruptShardError, StorageError, UnsupportedFormatError
from .._maintain import _MERGE_FRACTION
from .._names import hash_bits
from .._shard import Shard, decode_shard
from .._view import View
from ._types import HealthFinding

__all__ = ["NamespaceScan", "merge_limit", "scan_shards", "shard_findings"]

#: Expired records become a warning past this many, or past this share of what is on disk.
EXPIRED_WARN_RECORDS: Final = 1000
EXPIRED_WARN_FRACTION: Final = 0.25
#: How many namespaces a finding names in its details (the rest are counted).
_TOP: Final = 20


@dataclass(slots=True)
class NamespaceScan:
    """What one namespace's shard files hold right now, as maintenance sees it."""

    namespace: tuple[str, ...]
    records: int = 0
    expired: int = 0
    shards: int = 0
    bytes: int = 0
    #: parents whose two leaves could be merged back into them now
    mergeable: list[str] = field(default_factory=list)
    #: prefixes of splits nobody is finishing (the lock was free)
    interrupted: list[str] = field(default_factory=list)
    #: prefixes of shards past shard_max_bytes
    oversize: list[str] = field(default_factory=list)
    #: paths that fail their checksum or do not decode here
    damaged: list[str] = field(default_factory=list)
    #: prefixes of shards holding expired records
    expired_in: list[str] = field(default_factory=list)


def merge_limit(engine: Engine) -> int:
    """Two sibling shards are worth merging when their files together are at most this many bytes."""
    return engine.shard_max_bytes // _MERGE_FRACTION


def _read(engine: Engine, path: str, prefix: str) -> Shard | None:
    got = _fs.read_file(path)
    if got is None:
        return None
    return decode_shard(got[0], path, engine._codecs, prefix)


def _lock_free(view: View, prefix: str) -> bool:
    got = _locks.try_exclusive_existing(view.lock_path(prefix))
    if isinstance(got, _locks.Held):
        got.release()
        return True
    return got is False  # no lock file: nobody can be splitting it


def scan_namespace(engine: Engine, namespace: tuple[str, ...], now: float) -> NamespaceScan:
    """One namespace's figures (see :class:`NamespaceScan`)."""
    view = engine.view(namespace)
    view.refresh()
    out = NamespaceScan(namespace)
    existing, internal = view.existing, view.internal
    sizes: dict[str, int] = {}
    for prefix in sorted(existing):
        path = view.shard_path(prefix)
        try:
            size = os.path.getsize(path)
            shard = _read(engine, path, prefix)
        except FileNotFoundError:
            continue  # split or merged away while we looked
        except (CorruptShardError, UnsupportedFormatError):
            out.damaged.append(path)
            continue
        if shard is None:
            continue
        sizes[prefix] = size
        out.shards += 1
        out.bytes += size
        overlapped = shard.splitting or prefix in internal
        if overlapped and _lock_free(view, prefix):
            out.interrupted.append(prefix)
        elif not overlapped and size > engine.shard_max_bytes and len(shard.records) > 1:
            out.oversize.append(prefix)
        expired = 0
        for key, rec in shard.records.items():
            if overlapped and view.resolve(hash_bits(key)) != prefix:
                continue  # a leaf of the unfinished split holds the current copy
            x = rec.get("expires_at")
            if x is not None and x <= now:
                expired += 1
            else:
                out.records += 1
        if expired:
            out.expired += expired
            out.expired_in.append(prefix)
    limit = merge_limit(engine)
    parents = {p[:-1] for p in existing if p} - existing
    for parent in sorted(parents):
        a, b = parent + "0", parent + "1"
        if a in sizes and b in sizes and a not in internal and b not in internal and sizes[a] + sizes[b] <= limit:
            out.mergeable.append(parent)
    return out


def scan_shards(engine: Engine) -> list[NamespaceScan]:
    """Every namespace's figures, one shard file at a time."""
    now = time.time()
    out: list[NamespaceScan] = []
    for _directory, namespace in list(engine.namespace_dirs()):
        if not namespace:
            continue
        try:
            out.append(scan_namespace(engine, namespace, now))
        except StorageError:
            continue  # a directory that vanished or cannot be read: check() reports what is wrong
    return out


def _ns(namespace: tuple[str, ...]) -> str:
    return "/".join(namespace)


def _top(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP])


def shard_findings(engine: Engine, scans: list[NamespaceScan]) -> list[HealthFinding]:
    """Findings about shard files: expired records, tiny siblings, interrupted splits, oversize, damage."""
    out: list[HealthFinding] = []
    damaged = [p for s in scans for p in s.damaged]
    if damaged:
        out.append(
            HealthFinding(
                "damaged-shard",
                "error",
                f"{len(damaged)} shard file(s) fail their checksum or do not decode; reads of their keys raise "
                "CorruptShardError",
                "run `filemem check PATH --fix` (moves them to quarantine/; their records are lost from the store, "
                "restore them from an export); maintain() never does this for you",
                {"paths": damaged[:_TOP], "count": len(damaged)},
            )
        )
    interrupted = {_ns(s.namespace): len(s.interrupted) for s in scans if s.interrupted}
    if interrupted:
        n = sum(interrupted.values())
        out.append(
            HealthFinding(
                "interrupted-split",
                "warning",
                f"{n} shard split(s) started by a writer that died and not finished yet (writers of those ranges "
                "finish them, but reads pay for the overlap meanwhile)",
                "finish them: store.maintain() or `filemem maintain PATH` (also `filemem check PATH --fix`)",
                {"count": n, "namespaces": _top(interrupted)},
            )
        )
    expired = {_ns(s.namespace): s.expired for s in scans if s.expired}
    if expired:
        n = sum(expired.values())
        on_disk = n + sum(s.records for s in scans)
        share = n / on_disk if on_disk else 0.0
        out.append(
            HealthFinding(
                "expired-records",
                "warning" if n >= EXPIRED_WARN_RECORDS or share >= EXPIRED_WARN_FRACTION else "info",
                f"{n} expired record(s) ({share:.0%} of the records on disk) still take space in "
                f"{len(expired)} namespace(s); reads skip them",
                "sweep them: store.maintain() or `filemem maintain PATH` (also `filemem compact PATH`)",
                {"expired": n, "share": round(share, 4), "namespaces": _top(expired)},
            )
        )
    mergeable = {_ns(s.namespace): len(s.mergeable) for s in scans if s.mergeable}
    if mergeable:
        n = sum(mergeable.values())
        out.append(
            HealthFinding(
                "tiny-shards",
                "info",
                f"{n} pair(s) of sibling shards hold together at most {merge_limit(engine)} bytes (1/"
                f"{_MERGE_FRACTION} of shard_max_bytes) in {len(mergeable)} namespace(s): listing and searching "
                "them costs more files than needed",
                "merge them: store.maintain() or `filemem maintain PATH` (also `filemem compact PATH`)",
                {"pairs": n, "max_bytes": merge_limit(engine), "namespaces": _top(mergeable)},
            )
        )
    oversize = {_ns(s.namespace): len(s.oversize) for s in scans if s.oversize}
    if oversize:
        n = sum(oversize.values())
        out.append(
            HealthFinding(
                "oversize-shard",
                "info",
                f"{n} shard(s) larger than shard_max_bytes ({engine.shard_max_bytes}): each write rewrites "
                "the whole file",
                "split them: store.maintain() or `filemem maintain PATH` (uses this process's shard_max_bytes)",
                {"count": n, "shard_max_bytes": engine.shard_max_bytes, "namespaces": _top(oversize)},
            )
        )
    return out
