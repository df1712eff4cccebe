"""Looking at a store without changing it: info, per-namespace listing, statistics (part of :mod:`filemem.admin`).

Everything here reads files lock-free (a shard file is only ever replaced
whole, so a reader always holds one complete version) and never writes: the
one lock it touches is a non-blocking probe of existing lock files, to count
the locks held right now.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import _fs, _locks
from .._engine import BATCH_DIR, BATCH_SUFFIX, MARKER, QUARANTINE_DIR, Engine
from .._errors import CorruptShardError, UnsupportedFormatError
from .._names import hash_bits
from .._shard import LOCK_SUFFIX, Record
from .._store import Store
from .._view import View
from ._server import server_info, server_namespace_info, server_stats

__all__ = ["NamespaceInfo", "StoreInfo", "info", "namespace_info", "stats"]


@dataclass(slots=True)
class NamespaceInfo:
    """Figures of one namespace, read from its shard files.

    ``records``: live records; ``expired``: records past their TTL that are
    still on disk (``compact`` drops them); ``damaged``: shard files that
    failed their checksum or could not be decoded (run ``check``).
    """

    namespace: tuple[str, ...]
    records: int = 0
    expired: int = 0
    shards: int = 0
    bytes: int = 0
    damaged: int = 0
    codecs: dict[str, int] = field(default_factory=dict)
    shard_bytes: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)


@dataclass(slots=True)
class StoreInfo:
    """What ``filemem info`` prints: the store's format, codec and size.

    ``shard_codecs`` counts shards by the codec in their own header (a store
    being converted, or written by a process that opened it before a
    conversion, holds both). ``bytes`` is the size of every file under the
    store directory. ``pending_batches``: batch intents present (a live
    batch, or one whose writer died: ``check`` tells which).

    Example::

        with filemem.Store("./memories", readonly=True) as store:
            print(filemem.admin.info(store).records)
    """

    path: str
    format_version: int
    codec: str
    created_at: float | None
    namespaces: int
    records: int
    expired: int
    shards: int
    shard_codecs: dict[str, int]
    damaged_shards: int
    bytes: int
    files: int
    pending_batches: int
    quarantined: int
    #: ``"file"`` or ``"postgres"`` (on a server: no shards or files; ``bytes`` is the tables' size).
    backend: str = "file"

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON)."""
        return asdict(self)


def _engine(store: Store) -> Engine:
    # admin sits just above the Store facade and reads the files it manages.
    return store._engine


def _owner(view: View, prefix: str, key: str) -> bool:
    return view.resolve(hash_bits(key)) == prefix


def namespace_info(store: Store, namespace: tuple[str, ...]) -> NamespaceInfo:
    """Figures of one namespace (see :class:`NamespaceInfo`), lock-free.

    Example::

        with filemem.admin.open_store("./memories") as store:
            facts = filemem.admin.namespace_info(store, ("agent-1", "facts"))
            print(facts.records, facts.shards, facts.codecs)
    """
    if store.backend != "file":
        return server_namespace_info(store, namespace)
    engine = _engine(store)
    view = engine.view(namespace)
    view.refresh()
    out = NamespaceInfo(namespace)
    now = time.time()
    logged = engine.unfolded(namespace)  # before the shards: what the fold takes meanwhile is in them
    in_shards: dict[str, int] = {}
    for prefix in sorted(view.existing):
        path = view.shard_path(prefix)
        try:
            size = os.path.getsize(path)
            shard = engine.load(path, prefix)
        except FileNotFoundError:
            continue  # split away while we looked
        except (CorruptShardError, UnsupportedFormatError):
            shard = None
            out.damaged += 1
        else:
            if shard is None:
                continue
        out.shards += 1
        out.bytes += size
        out.shard_bytes.append(size)
        out.depths.append(len(prefix))
        if shard is None:
            continue
        out.codecs[shard.codec] = out.codecs.get(shard.codec, 0) + 1
        overlapped = shard.splitting or prefix in view.internal
        for key, rec in shard.records.items():
            if overlapped and not _owner(view, prefix, key):
                continue  # a leaf of an unfinished split holds the current copy
            in_shards[key] = rec["version"]
            if key in logged and logged[key][0] > rec["version"]:
                continue  # the log holds a newer state (counted below)
            _count(out, rec, now)
    # Records the write-ahead log holds and the shards do not yet (format 2),
    # as the log has them; one the fold has meanwhile written is counted once.
    for key, (version, logged_rec) in logged.items():
        if logged_rec is not None and in_shards.get(key, 0) < version:
            _count(out, logged_rec, now)
    return out


def _count(out: NamespaceInfo, rec: Record, now: float) -> None:
    x = rec.get("expires_at")
    if x is not None and x <= now:
        out.expired += 1
    else:
        out.records += 1


def _marker(root: str) -> dict[str, Any]:
    try:
        with open(os.path.join(root, MARKER), "rb") as fh:
            got = json.loads(fh.read())
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def _disk_usage(root: str) -> tuple[int, int]:
    size = files = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except FileNotFoundError:
                continue
    return size, files


def info(store: Store) -> StoreInfo:
    """The store's format, codec, namespaces, records, shards and size (lock-free, read-only).

    Example::

        with filemem.admin.open_store("./memories") as store:
            summary = filemem.admin.info(store)
            print(summary.codec, summary.records, summary.shard_codecs)
    """
    if store.backend != "file":
        return server_info(store)
    engine = _engine(store)
    per_ns = [namespace_info(store, ns) for ns in store.list_namespaces()]
    marker = _marker(engine.root)
    codecs: dict[str, int] = {}
    for n in per_ns:
        for name, count in n.codecs.items():
            codecs[name] = codecs.get(name, 0) + count
    size, files = _disk_usage(engine.root)
    batches = [n for n in _fs.listdir(os.path.join(engine.root, BATCH_DIR)) if n.endswith(BATCH_SUFFIX)]
    created = marker.get("created_at")
    return StoreInfo(
        path=engine.root,
        format_version=int(marker.get("filemem", 0)),
        codec=str(marker.get("codec", store.codec)),
        created_at=float(created) if isinstance(created, (int, float)) else None,
        namespaces=len(per_ns),
        records=sum(n.records for n in per_ns),
        expired=sum(n.expired for n in per_ns),
        shards=sum(n.shards for n in per_ns),
        shard_codecs=dict(sorted(codecs.items())),
        damaged_shards=sum(n.damaged for n in per_ns),
        bytes=size,
        files=files,
        pending_batches=len(batches),
        quarantined=len(_fs.listdir(os.path.join(engine.root, QUARANTINE_DIR))),
    )


def _locks_held(engine: Engine) -> tuple[int, int]:
    """(lock files, held right now), by a non-blocking probe that never creates a file."""
    total = held = 0
    for directory, _namespace in engine.namespace_dirs():
        for name in _fs.listdir(directory):
            if not (name.startswith("s") and name.endswith(LOCK_SUFFIX)):
                continue
            total += 1
            got = _locks.try_exclusive_existing(os.path.join(directory, name))
            if got is None:
                held += 1
            elif isinstance(got, _locks.Held):
                got.release()
    return total, held


_SIZE_BUCKETS = ((1024, "<1K"), (4096, "<4K"), (16384, "<16K"), (65536, "<64K"))


def _bucket(size: int) -> str:
    for limit, label in _SIZE_BUCKETS:
        if size < limit:
            return label
    return ">=64K"


def stats(store: Store) -> dict[str, Any]:
    """Sizes, shard distribution per namespace, lock figures, and this process's cache figures.

    Caches are per process: the ``process`` section is the inspecting
    process's own (what reading the store once cost it), not the agents'.
    On a server store the shard and lock figures have no meaning: the result
    has ``backend``, per-namespace records/expired/bytes, ``tables`` (bytes
    per table) and ``process`` instead (see ``_server.server_stats``).

    Example::

        with filemem.Store("./memories", readonly=True) as store:
            print(filemem.admin.stats(store)["shard_sizes"])
    """
    if store.backend != "file":
        return server_stats(store)
    engine = _engine(store)
    per_ns = [namespace_info(store, ns) for ns in store.list_namespaces()]
    sizes = [b for n in per_ns for b in n.shard_bytes]
    hist: dict[str, int] = {label: 0 for _, label in _SIZE_BUCKETS}
    hist[">=64K"] = 0
    for s in sizes:
        hist[_bucket(s)] += 1
    depth_hist: dict[str, int] = {}
    for n in per_ns:
        for d in n.depths:
            depth_hist[str(d)] = depth_hist.get(str(d), 0) + 1
    lock_files, held = _locks_held(engine)
    process = store.stats()
    return {
        "path": engine.root,
        "codec": store.codec,
        "namespaces": [
            {
                "namespace": list(n.namespace),
                "records": n.records,
                "expired": n.expired,
                "shards": n.shards,
                "bytes": n.bytes,
                "damaged": n.damaged,
                "shard_bytes_min": min(n.shard_bytes, default=0),
                "shard_bytes_median": int(statistics.median(n.shard_bytes)) if n.shard_bytes else 0,
                "shard_bytes_max": max(n.shard_bytes, default=0),
            }
            for n in per_ns
        ],
        "records": sum(n.records for n in per_ns),
        "shards": len(sizes),
        "shard_bytes_total": sum(sizes),
        "shard_sizes": hist,
        "shard_depths": dict(sorted(depth_hist.items(), key=lambda kv: int(kv[0]))),
        "locks": {"lock_files": lock_files, "held_now": held},
        # Everything store.stats() reports for this process: the same figures
        # (and names) as `filemem serve`'s /v1/stats "store" section and /metrics.
        "process": process,
    }
