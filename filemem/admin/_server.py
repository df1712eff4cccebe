"""``info``, ``namespace_info`` and ``stats`` for a store on a server backend (part of :mod:`filemem.admin`).

Invariant: the same result types and keys as for a directory store, so a
tool reads both the same way; figures that only files have (shards, lock
files, files on disk, pending batch intents, quarantine) are zero, and the
size is what the server's tables take (``pg_total_relation_size``). Read-only:
plain reads through the backend, which never block a writer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._store import Store
    from ._inspect import NamespaceInfo, StoreInfo

__all__ = ["server_info", "server_namespace_info", "server_stats"]


def _describe(store: Store, namespace: tuple[str, ...] | None = None) -> dict[str, Any]:
    store._backend.check_open()
    got: dict[str, Any] = store._backend.describe(namespace)  # type: ignore[attr-defined]
    return got


def server_namespace_info(store: Store, namespace: tuple[str, ...]) -> NamespaceInfo:
    """One namespace's records, expired records (not yet swept) and value bytes."""
    from ._inspect import NamespaceInfo  # noqa: PLC0415 - _inspect imports this module

    got = _describe(store, namespace)
    return NamespaceInfo(namespace, records=got["records"], expired=got["expired"], bytes=got["bytes"])


def server_info(store: Store) -> StoreInfo:
    """The store's schema version, codec, namespaces, records and table sizes."""
    from ._inspect import StoreInfo  # noqa: PLC0415 - _inspect imports this module

    got = _describe(store)
    per_ns = got["namespaces"]
    return StoreInfo(
        path=store.path,
        format_version=got["schema_version"],
        codec=got["codec"],
        created_at=got["created_at"],
        namespaces=sum(1 for n in per_ns if n["records"]),
        records=sum(n["records"] for n in per_ns),
        expired=sum(n["expired"] for n in per_ns),
        shards=0,
        shard_codecs={},
        damaged_shards=0,
        bytes=sum(got["tables"].values()),
        files=0,
        pending_batches=0,
        quarantined=0,
        backend=store.backend,
    )


def server_stats(store: Store) -> dict[str, Any]:
    """Per namespace: records, expired, value bytes; the tables' sizes; this process's figures."""
    got = _describe(store)
    per_ns = [n for n in got["namespaces"] if n["records"] or n["expired"]]
    return {
        "path": store.path,
        "backend": store.backend,
        "codec": store.codec,
        "schema_version": got["schema_version"],
        "namespaces": [
            {
                "namespace": list(n["namespace"]),
                "records": n["records"],
                "expired": n["expired"],
                "bytes": n["bytes"],
            }
            for n in per_ns
        ],
        "records": sum(n["records"] for n in per_ns),
        "expired": sum(n["expired"] for n in per_ns),
        "value_bytes": sum(n["bytes"] for n in per_ns),
        "tables": got["tables"],
        "outbox_rows": got["outbox_rows"],
        "process": store.stats(),
    }
