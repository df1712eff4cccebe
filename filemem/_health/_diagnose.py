"""``Store.health()``: every probe, in one pass, most severe finding first (layer L5).

A health run reads every shard once (lock-free, outside the process cache),
the session, journal, dead-letter and index files, and probes the shard
locks (see ``_locks``). It never writes, so it works on a read-only store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from .._collector import Collector
from .._engine import Engine
from .._search import Searcher
from .._sessions._registry import Registry
from ._locks import lock_findings
from ._probes import collector_findings, dead_letter_findings, index_findings, index_states, session_findings
from ._shards import NamespaceScan, scan_shards, shard_findings
from ._types import HealthFinding

__all__ = ["Subject", "diagnose", "order"]

_RANK = {"error": 0, "warning": 1, "info": 2}


@dataclass(slots=True)
class Subject:
    """What a health run looks at: one open store's engine and per-process parts."""

    engine: Engine
    searcher: Searcher
    registry: Registry
    collectors: Sequence[Collector]


def order(findings: list[HealthFinding]) -> list[HealthFinding]:
    """Most severe first; codes alphabetically within a severity (stable for tests and screens)."""
    return sorted(findings, key=lambda f: (_RANK.get(f.severity, 3), f.code))


def diagnose(subject: Subject, *, lock_probe_s: float, scans: list[NamespaceScan] | None = None) -> list[HealthFinding]:
    """Every finding (see :meth:`filemem.Store.health`)."""
    engine = subject.engine
    now = time.time()
    if scans is None:
        scans = scan_shards(engine)
    found = shard_findings(engine, scans)
    found += lock_findings(engine, lock_probe_s)
    found += session_findings(subject.registry)
    found += collector_findings(engine, subject.collectors, now)
    found += dead_letter_findings(engine, now)
    found += index_findings(index_states(engine), subject.searcher.config)
    return order(found)
