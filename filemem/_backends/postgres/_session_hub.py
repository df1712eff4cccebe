"""Sessions of a PostgreSQL store: the watcher, ``check()``, and the hub that ties them together (issue 16).

Invariant: the same ``SessionHub`` as on files runs here (``Session``,
confinement, priorities, waiting, stop callbacks), over ``PgRegistry`` and
``PgSlots``; only the watching and the checking are server-shaped. The
watcher reads the whole table once per interval, with each row's liveness
from ``pg_locks``: a row whose ``rev`` moved is a start or a change, a row
that turned final (or whose lock vanished: it is marked crashed on the spot)
is an end. A death is seen within one interval plus the time the server
takes to notice the closed socket (milliseconds after a SIGKILL).

Check codes (stable, as on files where they mean the same):

``dead-session``     a record says waiting/running but its owner's lock is gone; fix: mark it crashed
``corrupt-session``  a record that does not parse; fix (owner gone): delete it
``stale-ticket``     a waiting-room ticket of a session that is not alive (or has no record); fix: delete
"""

from __future__ import annotations

import time
from typing import Any, Final

from ..._feed import Change
from ..._sessions import SessionHub, SessionInfo
from ..._sessions._events import SessionWatcher
from ..._sessions._record import FINAL_STATES
from ..._types import Finding
from ._connect import Connections
from ._session_registry import PgRegistry, _decode
from ._session_slots import PgSlots
from ._session_tables import ALIVE_SQL, HELD_SQL

__all__ = ["SESSION_POLL_S", "check_server_sessions", "server_session_hub"]

#: How often a store's session watcher reads the table (subscriptions, on_stop callbacks).
SESSION_POLL_S: Final = 0.05

_STALE_TICKETS: Final = f"""
WITH held AS MATERIALIZED ({HELD_SQL})
SELECT q.scope, q.session_id FROM filemem_session_queue q LEFT JOIN filemem_sessions s ON s.id = q.session_id
WHERE s.id IS NULL OR s.state IN ('ended', 'crashed') OR NOT {ALIVE_SQL}
"""


class PgSessionWatcher(SessionWatcher):
    """Polls ``filemem_sessions`` for starts, changes, ends (crashes included) and stop requests."""

    registry: PgRegistry  # the server registry (the base takes the Protocol)

    def __init__(self, registry: Any, *, interval_s: float, is_closed: Any) -> None:
        super().__init__(registry, interval_s=interval_s, is_closed=is_closed)
        self._revs: dict[str, tuple[int, SessionInfo]] = {}

    def _emit(self, kind: Any, info: SessionInfo) -> None:
        self.feed.emit(Change(info.namespace or (), "", kind, time.time(), (info.id,), self.registry.dir))

    def _scan(self, *, report: bool) -> None:
        self.rounds += 1
        now = time.time()
        current: dict[str, tuple[int, SessionInfo]] = {}
        for row in self.registry.rows():
            session_id, rev, record, _stop_at, alive = row
            info = _decode(record)
            if info is None:
                continue  # check() reports it
            if info.state not in FINAL_STATES and not alive:
                info = self.registry.bury(info, now)
                rev += 1  # the verdict is news even if another process wrote it
            current[session_id] = (int(rev), info)
        for gone in set(self._revs) - set(current):
            _rev, old = self._revs.pop(gone)
            if report and old.state not in FINAL_STATES:
                self._emit("session-ended", old)
        for session_id, (rev, info) in current.items():
            old_entry = self._revs.get(session_id)
            if old_entry is not None and old_entry[0] == rev:
                continue
            self._revs[session_id] = (rev, info)
            if not report:
                continue
            final = info.state in FINAL_STATES
            if old_entry is None:
                self._emit("session-ended" if final else "session-started", info)
            elif final and old_entry[1].state not in FINAL_STATES:
                self._emit("session-ended", info)
            elif not final:
                self._emit("session-changed", info)


def check_server_sessions(registry: PgRegistry, *, fix: bool) -> list[Finding]:
    """Findings about the session tables (empty on a healthy store, live sessions or not)."""
    fix = fix and not registry.readonly
    out: list[Finding] = []
    now = time.time()
    for session_id, _rev, record, _stop_at, alive in registry.rows():
        where = f"{registry.dir} {session_id}"
        info = _decode(record)
        if info is None:
            done = False
            if fix and not alive:
                done = bool(registry.execute("check", "DELETE FROM filemem_sessions WHERE id = %s", (session_id,)))
            out.append(
                Finding(
                    "corrupt-session",
                    where,
                    "session record does not parse",
                    severity="error",
                    fixed=done,
                    action="removed" if done else "",
                )
            )
            continue
        if info.state in FINAL_STATES or alive:
            continue
        if fix:
            registry.bury(info, now)
        out.append(
            Finding(
                "dead-session",
                where,
                f"session {session_id} ({info.agent}, pid {info.pid} on {info.host}) is {info.state}"
                " but its owner's connection is gone",
                fixed=fix,
                action="marked crashed" if fix else "",
                details={"session": session_id},
            )
        )
    for scope, session_id in registry.query("check", _STALE_TICKETS):
        done = fix and bool(
            registry.execute(
                "check", "DELETE FROM filemem_session_queue WHERE scope = %s AND session_id = %s", (scope, session_id)
            )
        )
        out.append(
            Finding(
                "stale-ticket",
                f"{registry.dir} queue {scope or '(store)'} {session_id}",
                "waiting-room ticket of a session that is not alive",
                fixed=done,
                action="removed" if done else "",
            )
        )
    return out


def server_session_hub(
    conns: Connections,
    *,
    salt: str,
    location: str,
    readonly: bool,
    lock_timeout_s: float,
    is_closed: Any,
) -> SessionHub:
    """The sessions of one PostgreSQL store object (creating the tables if missing and writable)."""
    registry = PgRegistry(conns, salt=salt, location=location, readonly=readonly, lock_timeout_s=lock_timeout_s)
    return SessionHub(
        registry,
        PgSlots(registry),
        readonly=readonly,
        poll_interval_s=SESSION_POLL_S,
        is_closed=is_closed,
        checker=lambda fix: check_server_sessions(registry, fix=fix),
        watcher_type=PgSessionWatcher,
    )
