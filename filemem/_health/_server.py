"""``health()`` and ``maintain()`` for a store on a server (issue 16): the findings that apply there (layer L5).

A server has no shards, splits, journals or index files; what is worth
doing to it is: expired rows the sweeper has not deleted yet, change-feed
outbox rows past their keep time, sessions whose owner's connection is gone
(and their waiting-room tickets), and a transaction that has held a key lock
for longer than ``lock_probe_s`` (a slow ``update`` function, a stuck
client: every writer of that key waits behind it). The backend answers
through the ``ServerUpkeep`` Protocol (figures from one round of queries,
and its sweeper); sessions through the store's ``SessionHub``.

``maintain()`` marks dead sessions crashed, removes stale tickets and runs
the sweeper (each pass deletes at most a bounded number of rows with
``SKIP LOCKED``, so no writer waits on it) until nothing is left or the
budget is spent. A lock held long is reported, never acted on: the fix is in
the holding process (or ``pg_terminate_backend`` by an operator).
"""

from __future__ import annotations

import time
from typing import Any, Final, Protocol

from .._sessions import SessionHub
from ._diagnose import order
from ._shards import EXPIRED_WARN_FRACTION, EXPIRED_WARN_RECORDS
from ._types import HealthFinding, MaintenanceReport, MaintenanceStep

__all__ = ["ServerUpkeep", "server_diagnose", "server_maintain"]

_TOP: Final = 20
#: maintain() on a server: findings it leaves to a person.
_OPERATOR: Final = frozenset({"lock-held-long", "damaged-session-record"})
_COUNTS: Final = (
    "expired_dropped",
    "outbox_pruned",
    "splits",
    "merges",
    "sessions_cleaned",
    "journals_replayed",
    "records_replayed",
    "segments_indexed",
    "busy_skipped",
)


class ServerUpkeep(Protocol):
    """What health() needs of a server backend."""

    @property
    def location(self) -> str: ...
    @property
    def readonly(self) -> bool: ...

    def upkeep_figures(self, lock_probe_s: float) -> dict[str, Any]:
        """``expired``: rows past expiry; ``outbox_stale``: outbox rows past their keep time;
        ``long_locks``: one dict per transaction holding a key lock longer than ``lock_probe_s``
        (``pid``, ``held_s``, ``application_name``, ``state``, ``locks``, ``waiters``)."""
        ...

    def sweep(self) -> dict[str, int]:
        """One sweeper pass: ``expired`` rows deleted, ``outbox`` rows pruned."""
        ...


def server_diagnose(backend: ServerUpkeep, hub: SessionHub, *, lock_probe_s: float) -> list[HealthFinding]:
    """Every finding on a server store, most severe first (see the module docstring)."""
    figures = backend.upkeep_figures(lock_probe_s)
    out: list[HealthFinding] = []
    expired = int(figures["expired"])
    if expired:
        share = expired / max(int(figures["records"]), 1)
        out.append(
            HealthFinding(
                "expired-records",
                # The file store's thresholds: the same finding means the same on both.
                "warning" if expired >= EXPIRED_WARN_RECORDS or share >= EXPIRED_WARN_FRACTION else "info",
                f"{expired} expired row(s) ({share:.0%} of the rows) not deleted yet; reads skip them",
                "sweep them: store.maintain() (the sweeper also runs after writes, at most once a minute)",
                {"expired": expired, "share": round(share, 4)},
            )
        )
    stale = int(figures["outbox_stale"])
    if stale:
        out.append(
            HealthFinding(
                "outbox-backlog",
                "info",
                f"{stale} change-feed outbox row(s) are past their keep time and not pruned yet",
                "store.maintain() prunes them (a listener away longer than the keep time is told it missed changes)",
                {"count": stale},
            )
        )
    found = hub.check(False)
    dead = [f for f in found if f.code == "dead-session"]
    if dead:
        ids = [str(f.details.get("session", "")) for f in dead]
        out.append(
            HealthFinding(
                "dead-sessions",
                "warning",
                f"{len(dead)} session(s) say waiting/running but their connection to the server is gone (crashed)",
                "clean up: store.maintain() marks them crashed (so does any store.sessions() call that looks at them)",
                {"sessions": ids[:_TOP], "count": len(dead)},
            )
        )
    left = [f for f in found if f.code == "stale-ticket"]
    if left:
        out.append(
            HealthFinding(
                "session-leftovers",
                "info",
                f"{len(left)} waiting-room ticket(s) of sessions that are gone",
                "store.maintain() removes them (waiters skip them meanwhile)",
                {"count": len(left)},
            )
        )
    damaged = [f for f in found if f.code == "corrupt-session"]
    if damaged:
        out.append(
            HealthFinding(
                "damaged-session-record",
                "error",
                f"{len(damaged)} session record(s) do not parse",
                "store.check(fix=True) deletes them once their owner is gone",
                {"where": [f.path for f in damaged][:_TOP]},
            )
        )
    for lock in figures["long_locks"][:_TOP]:
        out.append(
            HealthFinding(
                "lock-held-long",
                "warning",
                f"server process {lock['pid']} ({lock['application_name'] or 'no application_name'},"
                f" {lock['state']}) has held {lock['locks']} key lock(s) for {lock['held_s']:.1f}s;"
                f" {lock['waiters']} writer(s) wait for advisory locks in this database",
                "find the client holding that transaction open (a slow update() function, a stuck batch);"
                " maintain() never touches it (an operator may pg_terminate_backend it)",
                dict(lock),
            )
        )
    return order(out)


def server_maintain(
    backend: ServerUpkeep, hub: SessionHub, *, budget_s: float, dry_run: bool, lock_probe_s: float
) -> MaintenanceReport:
    """Carry out what ``server_diagnose`` recommends within ``budget_s`` (see the module docstring)."""
    started = time.time()
    t0 = time.monotonic()
    deadline = t0 + budget_s
    findings = server_diagnose(backend, hub, lock_probe_s=lock_probe_s)
    codes = {f.code for f in findings}
    counts = dict.fromkeys(_COUNTS, 0)
    steps: list[MaintenanceStep] = []
    unfinished: set[str] = set()
    out_of_budget = False
    target = backend.location
    if codes & {"dead-sessions", "session-leftovers"}:
        if dry_run:
            steps.append(MaintenanceStep("dead-sessions", "sessions", "planned", "would mark dead sessions crashed"))
        else:
            fixed = [f for f in hub.check(True) if f.fixed]
            counts["sessions_cleaned"] = len(fixed)
            steps.append(MaintenanceStep("dead-sessions", "sessions", "done", f"{len(fixed)} fixed"))
    if codes & {"expired-records", "outbox-backlog"}:
        code = "expired-records" if "expired-records" in codes else "outbox-backlog"
        if dry_run:
            steps.append(MaintenanceStep(code, target, "planned", "would sweep expired rows and prune the outbox"))
        else:
            while True:
                if time.monotonic() >= deadline:
                    out_of_budget = True
                    unfinished |= codes & {"expired-records", "outbox-backlog"}
                    steps.append(MaintenanceStep(code, target, "skipped", "out of budget: run maintain() again"))
                    break
                got = backend.sweep()
                counts["expired_dropped"] += got["expired"]
                counts["outbox_pruned"] += got["outbox"]
                if not got["expired"] and not got["outbox"]:
                    break
            steps.append(
                MaintenanceStep(
                    code,
                    target,
                    "done",
                    f"{counts['expired_dropped']} expired row(s) deleted,"
                    f" {counts['outbox_pruned']} outbox row(s) pruned",
                )
            )
    remaining = tuple(f for f in findings if dry_run or f.code in _OPERATOR or f.code in unfinished)
    return MaintenanceReport(
        dry_run=dry_run,
        started_at=started,
        duration_s=time.monotonic() - t0,
        findings=tuple(findings),
        steps=tuple(steps),
        counts=counts,
        out_of_budget=out_of_budget,
        remaining=remaining,
    )
