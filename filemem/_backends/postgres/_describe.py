"""What ``filemem info``, ``stats`` and ``ls`` report about a server store: figures per namespace (issue 16).

Invariant: read-only, one statement per figure set, never a lock a writer
waits for (plain ``SELECT``s under MVCC). Records are counted as the data
API sees them: live ones (not expired by the server's clock) as records,
expired ones not yet swept as ``expired``; filemem's internal namespaces are
left out as ``list_namespaces`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._names import INTERNAL_TEXT, decode_ns, encode_ns, prefix_range
from ._writes import NOW_SQL

__all__ = ["namespace_figures", "one_namespace", "store_figures"]

Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]

_TABLES = ("filemem_records", "filemem_outbox", "filemem_meta")


def namespace_figures(query: Query, prefix: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """Per namespace under the whole-segment ``prefix`` (None or empty: all): records, expired, value bytes."""
    where = "TRUE"
    params: tuple[Any, ...] = ()
    rng = prefix_range(prefix) if prefix else None
    if rng is not None:
        where, params = "(ns = %s OR (ns >= %s AND ns < %s))", rng
    rows = query(
        "SELECT ns,"
        f" count(*) FILTER (WHERE expires_at IS NULL OR expires_at > {NOW_SQL}),"
        f" count(*) FILTER (WHERE expires_at <= {NOW_SQL}),"
        " coalesce(sum(octet_length(value)), 0)"
        f" FROM filemem_records WHERE {where} GROUP BY ns ORDER BY ns",
        params,
    )
    out = []
    for text, live, expired, size in rows:
        if text.startswith(INTERNAL_TEXT):
            continue
        ns = decode_ns(text)
        if ns is None:
            continue
        out.append({"namespace": ns, "records": int(live), "expired": int(expired), "bytes": int(size)})
    return out


def one_namespace(query: Query, namespace: tuple[str, ...]) -> dict[str, Any]:
    """The figures of exactly ``namespace`` (zeros when it holds nothing)."""
    rows = query(
        f"SELECT count(*) FILTER (WHERE expires_at IS NULL OR expires_at > {NOW_SQL}),"
        f" count(*) FILTER (WHERE expires_at <= {NOW_SQL}), coalesce(sum(octet_length(value)), 0)"
        " FROM filemem_records WHERE ns = %s",
        (encode_ns(namespace),),
    )
    live, expired, size = rows[0]
    return {"namespace": namespace, "records": int(live), "expired": int(expired), "bytes": int(size)}


def store_figures(query: Query) -> dict[str, Any]:
    """Schema version, codec, the oldest record's time, and the size of each table on the server (bytes)."""
    meta = {str(k): str(v) for k, v in query("SELECT key, value FROM filemem_meta", ())}
    sizes = {
        name: int(size)
        for name, size in query(
            "SELECT t, pg_total_relation_size(to_regclass(t)) FROM unnest(%s::text[]) AS t"
            " WHERE to_regclass(t) IS NOT NULL",
            (list(_TABLES),),
        )
    }
    oldest = query("SELECT min(created_at) FROM filemem_records", ())[0][0]
    outbox = query("SELECT count(*) FROM filemem_outbox", ())[0][0]
    return {
        "schema_version": int(meta.get("schema_version", "0")),
        "codec": meta.get("codec", "json"),
        "created_at": float(oldest) if oldest is not None else None,
        "tables": sizes,
        "outbox_rows": int(outbox),
    }
