"""What ``health()`` and ``check()`` read on a server: expiry, the outbox, the schema, long-held key locks (issue 16).

Invariant: everything here only reads (``check(fix=True)`` aside, which
deletes outbox rows the prune mark already declared gone), so it runs on a
read-only store and never makes a writer wait: ``pg_locks`` and
``pg_stat_activity`` are views of the server's memory and take no lock a
writer needs.

A "lock held long" is a transaction that has held a transaction-level
advisory lock (a key lock: ``update``, ``batch``, ``if_version``) for longer
than the probe window, read from its ``xact_start``. Sessions' liveness and
slot locks are held by idle connections outside any transaction, so they
never count. Advisory lock keys are salted hashes, so the probe cannot tell
which store of the database a lock belongs to: it reports every such
transaction in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ..._types import Finding
from ._schema import SCHEMA_VERSION
from ._writes import NOW_SQL

__all__ = ["LONG_LOCKS_SQL", "server_check", "upkeep_figures"]

Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]

LONG_LOCKS_SQL: Final = """
SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''),
       extract(epoch from clock_timestamp() - a.xact_start)::float8, count(*),
       (SELECT count(*) FROM pg_locks w WHERE w.locktype = 'advisory' AND NOT w.granted AND w.database = l.database)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL
  AND a.xact_start < clock_timestamp() - make_interval(secs => %s)
GROUP BY a.pid, a.application_name, a.state, a.xact_start, l.database
ORDER BY a.xact_start
"""


def upkeep_figures(query: Query, lock_probe_s: float, outbox_keep_s: float) -> dict[str, Any]:
    """The figures ``filemem._health._server`` turns into findings (one round of queries)."""
    row = query(
        f"SELECT (SELECT count(*) FROM filemem_records WHERE expires_at <= {NOW_SQL}),"
        f" (SELECT count(*) FROM filemem_outbox WHERE at < {NOW_SQL} - %s),"
        " (SELECT count(*) FROM filemem_records)",
        (outbox_keep_s,),
    )[0]
    long_locks = []
    if lock_probe_s > 0:
        for pid, app, state, held_s, locks, waiters in query(LONG_LOCKS_SQL, (lock_probe_s,)):
            long_locks.append(
                {
                    "pid": int(pid),
                    "application_name": str(app),
                    "state": str(state),
                    "held_s": float(held_s),
                    "locks": int(locks),
                    "waiters": int(waiters),
                }
            )
    return {"expired": int(row[0]), "outbox_stale": int(row[1]), "records": int(row[2]), "long_locks": long_locks}


def server_check(query: Query, location: str, *, fix: bool) -> list[Finding]:
    """The schema's layout version, and outbox rows the prune mark says are gone but are still there."""
    out: list[Finding] = []
    meta: dict[str, str] = dict(query("SELECT key, value FROM filemem_meta", ()))
    version = meta.get("schema_version")
    if version != str(SCHEMA_VERSION):
        out.append(
            Finding(
                "schema-version",
                location,
                f"filemem_meta says schema_version {version!r}; this filemem knows {SCHEMA_VERSION}",
                severity="error",
            )
        )
    mark = int(meta.get("outbox_pruned_below", "0") or 0)
    [(orphans,)] = query("SELECT count(*) FROM filemem_outbox WHERE id < %s", (mark,))
    if orphans:
        fixed = False
        if fix:
            query("DELETE FROM filemem_outbox WHERE id < %s RETURNING id", (mark,))
            fixed = True
        out.append(
            Finding(
                "orphan-outbox",
                location,
                f"{orphans} outbox row(s) below the prune mark {mark} (no listener can ask for them)",
                severity="info",
                fixed=fixed,
                action="removed" if fixed else "",
                details={"rows": int(orphans)},
            )
        )
    return out
