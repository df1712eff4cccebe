"""Store's health facet: ``health()`` and ``maintain()`` (layer L5).

``Store`` inherits this facet; it reaches the store only through the
attributes declared at its top, which ``Store`` sets in its constructor (like
the facets in ``_store_features``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

from .._backends import StoreBackend
from .._collector import Collector
from .._engine import Engine
from .._errors import InvalidValueError, ReadOnlyError
from .._search import Searcher
from ._diagnose import Subject, diagnose
from ._locks import LOCK_WINDOW_S
from ._run import maintain
from ._server import ServerUpkeep, server_diagnose, server_maintain
from ._types import HealthFinding, MaintenanceReport

if TYPE_CHECKING:
    from .._sessions import SessionHub

from .._sessions._registry import Registry

__all__ = ["HealthFacet"]


def _seconds(name: str, value: object, *, zero_ok: bool) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        raise InvalidValueError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} number, not {value!r}")
    return float(value)


class HealthFacet:
    """Proactive health (findings with a recommended action each) and self-maintenance (issue 15)."""

    _engine: Engine
    _searcher: Searcher
    _backend: StoreBackend

    if TYPE_CHECKING:

        def _sessions(self) -> SessionHub: ...

    def _server(self) -> ServerUpkeep | None:
        """The backend, when it keeps its own upkeep figures (a server store); None for files."""
        backend = self._backend
        backend.check_open()
        return cast(ServerUpkeep, backend) if "server-health" in backend.features else None

    def _subject(self) -> Subject:
        self._engine.check_open()
        collectors: list[Collector] = list(self.__dict__.get("_collectors", []))
        # Only the file store comes here (a server store takes the _server path), so its registry is the file one.
        return Subject(self._engine, self._searcher, cast(Registry, self._sessions().registry), collectors)

    def health(self, *, lock_probe_s: float = LOCK_WINDOW_S) -> list[HealthFinding]:
        """What is worth doing to the store, most severe first; empty: nothing.

        Each :class:`~filemem.HealthFinding` has a stable ``code``, a
        ``severity`` (``"info"``, ``"warning"``, ``"error"``), a ``message``,
        the recommended ``action`` and ``details``. It looks for: expired
        records to sweep, tiny sibling shards to merge, interrupted splits,
        oversize shards, damaged shards, dead sessions and their leftovers,
        journals of dead collectors, collector backlogs and open breakers,
        dead letters (a warning while they keep coming), damaged or stale
        search indexes, and shard locks that could not be had within
        ``lock_probe_s`` seconds (0 skips that probe; see docs/health.md).

        Reads every shard once, lock-free and outside the process cache; never
        writes, so it works on a read-only store. Safe on a live store.

        >>> [(f.severity, f.code) for f in store.health()]  # doctest: +SKIP
        [('warning', 'dead-sessions'), ('info', 'expired-records')]
        """
        window = _seconds("lock_probe_s", lock_probe_s, zero_ok=True)
        server = self._server()
        if server is not None:
            return server_diagnose(server, self._sessions(), lock_probe_s=window)
        subject = self._subject()
        self._engine.settle()  # format 2: the probes read shard files, so move the log's records into them first
        return diagnose(subject, lock_probe_s=window)

    def maintain(
        self, *, budget_s: float = 30.0, dry_run: bool = False, lock_probe_s: float = LOCK_WINDOW_S
    ) -> MaintenanceReport:
        """Carry out what :meth:`health` recommends, at low priority, within ``budget_s`` seconds.

        Sweeps expired records, finishes interrupted splits, splits oversize
        shards, merges tiny siblings, marks dead sessions crashed and removes
        their leftovers, replays dead collectors' journals, rebuilds damaged
        or stale search indexes. Busy shards are skipped, never waited for;
        each shard is one small step under its writers' own lock. Damaged
        shards, dead letters, long-held locks and collector backlogs are
        reported, never acted on (they need a person). ``dry_run=True``
        changes nothing and says what would be done. Returns a
        :class:`~filemem.MaintenanceReport`.

        >>> report = store.maintain(budget_s=5.0)  # doctest: +SKIP
        >>> report.counts["expired_dropped"], [s.outcome for s in report.steps]  # doctest: +SKIP
        (120, ['done', 'done'])
        """
        budget = _seconds("budget_s", budget_s, zero_ok=False)
        window = _seconds("lock_probe_s", lock_probe_s, zero_ok=True)
        if not isinstance(dry_run, bool):
            raise InvalidValueError(f"dry_run must be True or False, not {dry_run!r}")
        server = self._server()
        if server is not None:
            if server.readonly and not dry_run:
                raise ReadOnlyError(f"store {server.location} was opened read-only (maintain(dry_run=True) only looks)")
            return server_maintain(server, self._sessions(), budget_s=budget, dry_run=dry_run, lock_probe_s=window)
        subject = self._subject()
        if self._engine.readonly and not dry_run:
            raise ReadOnlyError(f"store {self._engine.root} was opened read-only (maintain(dry_run=True) only looks)")
        self._engine.settle()  # as in health(): the steps work on shard files
        return maintain(subject, budget_s=budget, dry_run=dry_run, lock_probe_s=window)
