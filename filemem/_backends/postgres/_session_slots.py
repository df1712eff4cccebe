"""Session limits on a PostgreSQL server: slot locks under a per-scope gate, a waiting room by priority (issue 16).

Invariant (as ``filemem._sessions._slots``): a scope with limit N never has
more than N sessions admitted while N stays put, and a lowered limit admits
nobody until the live count is under it. It holds because:

* holding a slot is holding a session-level advisory lock ``(scope_key, i)``
  on the session's own connection, so a dead session's slot is free the
  moment its connection ends;
* an admission counts the scope's held slots in ``pg_locks`` (every index,
  also those taken under an older, higher limit) and takes a free one inside
  one transaction that holds the scope's gate (a transaction-level advisory
  lock), so two admissions never count the same free place;
* a session takes its slots in every limited scope or none (it unlocks what
  it took and waits), so two sessions needing two scopes never deadlock.

**The waiting room.** A waiter puts a ticket (scope, priority, arrival, id)
in ``filemem_session_queue`` for each of its limited scopes and takes slots
only when no live ticket ranks before its own (higher priority first, then
earlier arrival, then id). A ticket whose session is not alive is deleted by
whoever meets it. Waiters poll with capped, jittered back-off, as on files
(capped at ``_MAX_SLEEP_S``).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from typing import Final

import psycopg

from ... import _locks
from ..._errors import StoreClosedError
from ..._sessions import Releasable
from ..._sessions._slots import limit_error
from ._names import decode_ns, encode_ns
from ._session_registry import PgRegistry, SessionConn
from ._session_tables import ALIVE_SQL, HELD_SQL, gate_key, scope_key

__all__ = ["PgSlots"]

_FIRST_SLEEP_S: Final = 0.0005
#: Longer than on files (10 ms): each pass is a few round trips, and a server
#: shared by many waiters should not spend itself on polling. A freed slot is
#: taken within about this long.
_MAX_SLEEP_S: Final = 0.05

Scope = tuple[str, ...]

_TAKE: Final = """
SELECT i FROM (SELECT (%(first)s + g) %% %(limit)s AS i FROM generate_series(0, %(limit)s - 1) g) t
WHERE pg_try_advisory_lock(%(scope)s, t.i) LIMIT 1
"""
_HELD_SLOTS: Final = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND classid = %s::bigint::oid"
)
_AHEAD: Final = f"""
WITH held AS MATERIALIZED ({HELD_SQL})
SELECT q.session_id, s.id IS NOT NULL AND s.state NOT IN ('ended', 'crashed') AND {ALIVE_SQL}
FROM filemem_session_queue q LEFT JOIN filemem_sessions s ON s.id = q.session_id
WHERE q.scope = %s AND (-q.priority, q.arrival, q.session_id) < (%s::bigint, %s::bigint, %s::text COLLATE "C")
"""


class _Slot:
    """One slot a session holds: unlocked on release, or with its connection."""

    def __init__(self, held: SessionConn, scope: int, index: int) -> None:
        self._held = held
        self._key = (scope, index)
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if not self._held.closed:
            with contextlib.suppress(psycopg.Error), self._held._lock:
                self._held.conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._key)


def _scope_text(scope: Scope) -> str:
    return encode_ns(scope) if scope else ""


class PgSlots:
    """Limits, slots and the waiting room of one store (implements ``filemem._sessions.SessionSlots``)."""

    def __init__(self, registry: PgRegistry) -> None:
        self.registry = registry
        self.salt = registry.salt

    # ------------------------------------------------------------------ limits

    def limits(self) -> dict[Scope, int]:
        """Every configured limit: scope (``()`` = the whole store) -> max_sessions."""
        out: dict[Scope, int] = {}
        for scope, n in self.registry.query("session limits", "SELECT scope, max_sessions FROM filemem_session_limits"):
            ns = () if scope == "" else decode_ns(scope)
            if ns is not None:
                out[ns] = int(n)
        return out

    def set_limit(self, scope: Scope, max_sessions: int | None) -> None:
        """Set (or with None remove) the limit of a scope: one statement, so nothing to lock."""
        text = _scope_text(scope)
        if max_sessions is None:
            self.registry.execute("session limit", "DELETE FROM filemem_session_limits WHERE scope = %s", (text,))
        else:
            self.registry.execute(
                "session limit",
                "INSERT INTO filemem_session_limits (scope, max_sessions) VALUES (%s, %s)"
                " ON CONFLICT (scope) DO UPDATE SET max_sessions = excluded.max_sessions",
                (text, max_sessions),
            )

    def scopes_for(self, namespace: Scope | None) -> list[tuple[Scope, int]]:
        """The limited scopes a session in ``namespace`` needs a slot in (store first, then prefixes)."""
        limits = self.limits()
        if not limits:
            return []
        ns = namespace or ()
        return [(ns[:i], limits[ns[:i]]) for i in range(len(ns) + 1) if ns[:i] in limits]

    # ------------------------------------------------------------------ slots

    def _take_slot(self, held: SessionConn, scope: Scope, limit: int) -> _Slot | None:
        """Take a slot if fewer than ``limit`` of the scope's are held (counted and taken under the gate)."""
        text = _scope_text(scope)
        skey = scope_key(self.salt, text)
        conn = held.conn
        with held._lock, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (gate_key(self.salt, text),))
            row = conn.execute(_HELD_SLOTS, (skey,)).fetchone()
            if row is None or int(row[0]) >= limit:
                return None
            # Start at a random slot: N waiters all trying 0, 1, 2... would collide.
            first = random.randrange(limit)  # noqa: S311 - not crypto
            got = conn.execute(_TAKE, {"first": first, "limit": limit, "scope": skey}).fetchone()
        return None if got is None else _Slot(held, skey, int(got[0]))

    def _ahead(self, scope: Scope, mine: tuple[int, int, str]) -> bool:
        """Whether a live ticket of ``scope`` ranks before ``mine`` (dead ones are deleted)."""
        text = _scope_text(scope)
        rows = self.registry.query("session queue", _AHEAD, (text, *mine))
        dead = [sid for sid, alive in rows if not alive]
        if dead:
            self.registry.execute(
                "session queue",
                "DELETE FROM filemem_session_queue WHERE scope = %s AND session_id = ANY(%s)",
                (text, dead),
            )
        return any(alive for _sid, alive in rows)

    def acquire(
        self,
        session_id: str,
        priority: int,
        namespace: Scope | None,
        *,
        wait: bool,
        timeout: float | None,
        alive: Callable[[str], bool],
        is_closed: Callable[[], bool] = lambda: False,
    ) -> tuple[list[Releasable], float]:
        """Take one slot in every limited scope of ``namespace``, in turn by priority (see ``_slots.Slots``)."""
        held = self.registry.owned[session_id]
        arrival = time.time_ns()
        mine = (-priority, arrival, session_id)
        tickets: set[Scope] = set()
        started = time.monotonic()
        deadline = math.inf if timeout is None else started + timeout
        try:
            sleep = _FIRST_SLEEP_S
            while True:
                if is_closed():
                    raise StoreClosedError("the store was closed while this session waited for a slot")
                scopes = self.scopes_for(namespace)
                if not scopes:
                    return [], time.time()
                self._sync_tickets(tickets, scopes, session_id, priority, arrival)
                blocked: tuple[Scope, int] | None = None
                for scope, limit in scopes:
                    if self._ahead(scope, mine):
                        blocked = (scope, limit)
                        break
                if blocked is None:
                    taken: list[Releasable] = []
                    for scope, limit in scopes:
                        try:
                            slot = self._take_slot(held, scope, limit)
                        except psycopg.Error as exc:
                            for t in taken:
                                t.release()
                            raise self.registry._err(exc, "taking a session slot") from exc
                        if slot is None:
                            blocked = (scope, limit)
                            break
                        taken.append(slot)
                    if blocked is None:
                        return taken, time.time()
                    for t in taken:
                        t.release()
                now = time.monotonic()
                if not wait or now >= deadline:
                    raise limit_error(blocked, waited_s=now - started, wait=wait)
                _locks.check_abort(self.registry.dir)
                time.sleep(min(sleep * (0.5 + random.random()), max(deadline - now, 0.0)))  # noqa: S311
                sleep = min(sleep * 2, _MAX_SLEEP_S)
        finally:
            if tickets:
                with contextlib.suppress(Exception):
                    self.registry.execute(
                        "session queue", "DELETE FROM filemem_session_queue WHERE session_id = %s", (session_id,)
                    )

    def _sync_tickets(
        self, tickets: set[Scope], scopes: list[tuple[Scope, int]], session_id: str, priority: int, arrival: int
    ) -> None:
        """One ticket in each limited scope: add those of newly limited scopes, drop those no longer limited."""
        wanted = {scope for scope, _limit in scopes}
        for scope in [s for s in tickets if s not in wanted]:
            tickets.discard(scope)
            self.registry.execute(
                "session queue",
                "DELETE FROM filemem_session_queue WHERE scope = %s AND session_id = %s",
                (_scope_text(scope), session_id),
            )
        for scope in wanted - tickets:
            self.registry.execute(
                "session queue",
                "INSERT INTO filemem_session_queue (scope, session_id, priority, arrival) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (_scope_text(scope), session_id, priority, arrival),
            )
            tickets.add(scope)
