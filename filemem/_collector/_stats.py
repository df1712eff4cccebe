"""The collector's counters and health report (layer L4).

A mixin of :class:`~filemem._collector._writer.Collector`, kept apart because
it is one job: reading the state the writer threads keep. Invariant: a
report never changes that state, and in a forked child it never takes the
parent's locks (a parent thread may have held one at fork time, and it would
never be released in the child).
"""

from __future__ import annotations

import time
from typing import Any

from .._engine import _fork_generation
from .._errors import FileMemError
from ._apply import ApplyLoop
from ._journal import decode_frame
from ._spool import Rec

__all__ = ["StatsView"]


class StatsView(ApplyLoop):
    """``stats()`` and ``health()`` of the collector (state is set up by Collector.__init__)."""

    _fork: int
    _seq: int

    def stats(self) -> dict[str, Any]:
        """Counters and gauges of this collector.

        ``queue_depth`` (records queued, not yet finished), ``oldest_age_s``,
        ``collected``, ``accepted`` (journal-fsynced; without a journal: queued),
        ``applied``, ``retried``, ``failed`` (record-attempts that failed),
        ``dropped``, ``dead_letters``, ``batches``, ``apply_p50_ms`` /
        ``apply_p99_ms`` (per batch), ``breaker`` and ``breaker_opened``.

        >>> collector.stats()["queue_depth"]  # doctest: +SKIP
        0
        """
        if self._fork != _fork_generation[0]:
            # A forked child: a parent thread may have held the lock at fork
            # time (it would never be released here), and none of the
            # collector's threads exist. Report without the lock.
            counts = dict(self._counts)
            depth = self._queued
            heads: list[float] = []
            collected = self._seq
        else:
            with self._lock:
                counts = dict(self._counts)
                depth = self._queued
                first = self._incoming.peek()
                heads = [decode_frame(first[2]).collected_at] if first is not None else []
                heads += [r.ts for r in self._loaded_heads()]
                inflight = self._inflight
                heads += [inflight[0].ts] if inflight and inflight[0].loaded else []
                collected = self._seq
        lat = sorted(self._latency)
        breaker = self.breaker.state if self._fork == _fork_generation[0] else self.breaker.state_nolock()
        if self._journal is None:
            counts["accepted"] = collected - counts["dropped"] if collected else 0
        return {
            **counts,
            "collected": collected,
            "queue_depth": depth,
            "oldest_age_s": (time.time() - min(heads)) if heads else 0.0,
            "apply_p50_ms": _pct(lat, 0.50) * 1000,
            "apply_p99_ms": _pct(lat, 0.99) * 1000,
            "breaker": breaker,
            "breaker_opened": self.breaker.opened_count,
            "last_error": self.last_error,
            "journal": self._journal.path if self._journal is not None else None,
        }

    def _loaded_heads(self) -> list[Rec]:
        """With the lock held: the front record of each priority, read back from the journal if need be."""
        heads = [h for h in (q.head() for q in self._ready) if h is not None]
        try:
            self._load(heads)
        except FileMemError:
            return [h for h in heads if h.loaded]
        return heads

    def health(self) -> dict[str, Any]:
        """Is the collector keeping up? ``ok`` is False while the breaker is not closed, the
        writer died, or the queue is full.

        >>> collector.health()["ok"]  # doctest: +SKIP
        True
        """
        s = self.stats()
        alive = self._fatal is None and self._fork == _fork_generation[0]  # a forked child has no writer
        ok = s["breaker"] == "closed" and alive and s["queue_depth"] < self.config.max_queue
        return {
            "ok": ok,
            "breaker": s["breaker"],
            "queue_depth": s["queue_depth"],
            "oldest_age_s": s["oldest_age_s"],
            "last_error": s["last_error"],
            "writer_alive": alive,
        }


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
