"""``Store.maintain()``: carry out what ``health()`` recommends, at low priority, within a time budget (layer L5).

Nothing here is new machinery: each step calls what already does that job,
under the same locks as every writer —

=====================  ==============================================================
dead sessions          ``check_sessions(fix=True)`` (marks them crashed, removes leftovers)
dead journals          ``recover_journals`` (replay, exactly once, then retire)
expired / splits /     ``maintain_shard(wait=False)`` per shard (drop expired, finish a
oversize shards        split, split an oversize shard)
tiny shards            ``merge_small_siblings`` (locks only tried, never waited for)
search indexes         ``check_indexes(fix=True)`` for damaged files, ``Searcher.reindex``
=====================  ==============================================================

**Low priority, never blocking agents for long.** A shard whose lock is
busy is skipped (counted in ``busy_skipped``), never waited for; merges only
try locks; index rebuilds take no shard lock at all; each shard is its own
small step (one lock, one atomic replace), and the run pauses briefly after
each write so waiting writers get their turn. Replaying a dead collector's
journal writes like any agent does (it waits for locks up to the store's
``lock_timeout_s``). The run stops taking new steps once ``budget_s`` has
passed; what is left is reported, and the next run picks it up.

Left for an operator, never done here: damaged shards (``check --fix``
quarantines them and their records are lost), dead letters (replaying is a
decision), a lock held long (the fix is in the holding process), a collector
backlog or open breaker (the fix is in the collecting process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from .._collector import recover_journals
from .._engine import maintain_shard
from .._errors import FileMemError
from .._maintain import merge_small_siblings
from .._search import check_indexes
from .._sessions import check_sessions
from ._diagnose import Subject, diagnose
from ._locks import free_now
from ._probes import INDEX_STALE_FRACTION, index_states
from ._shards import merge_limit, scan_shards
from ._types import MaintenanceReport, MaintenanceStep

__all__ = ["OPERATOR_CODES", "maintain"]

#: Findings maintain() reports but leaves to a person (see the module docstring).
OPERATOR_CODES: Final = frozenset(
    {
        "damaged-shard",
        "damaged-session-file",
        "dead-letters",
        "lock-held-long",
        "collector-backlog",
        "collector-breaker-open",
    }
)
#: After each step that wrote, sleep this long: waiting writers poll their
#: lock every few milliseconds at most, so they get in before the next step.
_PAUSE_S: Final = 0.002

_COUNTS: Final = (
    "expired_dropped",
    "splits",
    "merges",
    "sessions_cleaned",
    "journals_replayed",
    "records_replayed",
    "segments_indexed",
    "busy_skipped",
)


class _Run:
    """One maintain() run: the budget, the steps taken, the counts."""

    def __init__(self, budget_s: float, dry_run: bool) -> None:
        self.deadline = time.monotonic() + budget_s
        self.dry_run = dry_run
        self.steps: list[MaintenanceStep] = []
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.out_of_budget = False
        #: codes with a step skipped or not reached: their findings remain
        self.unfinished: set[str] = set()

    def has_time(self, code: str, target: str) -> bool:
        if time.monotonic() < self.deadline:
            return True
        self.out_of_budget = True
        self.skip(code, target, "out of budget: run maintain() again")
        return False

    def skip(self, code: str, target: str, why: str) -> None:
        self.unfinished.add(code)
        self.steps.append(MaintenanceStep(code, target, "skipped", why))

    def record(self, code: str, target: str, detail: str) -> None:
        self.steps.append(MaintenanceStep(code, target, "planned" if self.dry_run else "done", detail))

    def attempt(self, code: str, target: str, fn: Callable[[], str]) -> None:
        """Run one step; a store error skips it (reported) instead of ending the run."""
        try:
            detail = fn()
        except FileMemError as exc:
            self.skip(code, target, f"failed: {exc}")
            return
        self.record(code, target, detail)


def _ns(namespace: tuple[str, ...]) -> str:
    return "/".join(namespace)


def maintain(subject: Subject, *, budget_s: float, dry_run: bool, lock_probe_s: float) -> MaintenanceReport:
    """See :meth:`filemem.Store.maintain`."""
    started = time.time()
    t0 = time.monotonic()
    engine = subject.engine
    scans = scan_shards(engine)
    findings = diagnose(subject, lock_probe_s=lock_probe_s, scans=scans)
    codes = {f.code for f in findings}
    run = _Run(budget_s, dry_run)

    # 1. Sessions: cheap, and a dead session still holds a place under a limit.
    if codes & {"dead-sessions", "session-leftovers"} and run.has_time("dead-sessions", "sessions/"):
        if dry_run:
            n = sum(
                int(f.details.get("count", 0)) for f in findings if f.code in ("dead-sessions", "session-leftovers")
            )
            run.record("dead-sessions", "sessions/", f"would mark dead sessions crashed and remove {n} leftover(s)")
        else:

            def clean() -> str:
                fixed = [f for f in check_sessions(subject.registry, fix=True) if f.fixed]
                run.counts["sessions_cleaned"] += len(fixed)
                return f"{len(fixed)} fixed: " + ", ".join(sorted({f.code for f in fixed})) if fixed else "nothing left"

            run.attempt("dead-sessions", "sessions/", clean)

    # 2. Dead collectors' journals: records the store is owed.
    if "unreplayed-journal" in codes and run.has_time("unreplayed-journal", "journals/"):
        if dry_run:
            owed = next(f for f in findings if f.code == "unreplayed-journal").details.get("records", 0)
            run.record("unreplayed-journal", "journals/", f"would replay {owed} record(s)")
        else:

            def replay() -> str:
                got = recover_journals(engine)
                run.counts["journals_replayed"] += got["journals"]
                run.counts["records_replayed"] += got["applied"]
                return f"{got['journals']} journal(s) replayed, {got['applied']} record(s) applied"

            run.attempt("unreplayed-journal", "journals/", replay)

    # 3. Shard by shard: interrupted splits, expired records, oversize shards.
    for scan in scans:
        view = engine.view(scan.namespace)
        work = [
            *(("interrupted-split", p) for p in scan.interrupted),
            *(("expired-records", p) for p in scan.expired_in if p not in scan.interrupted),
            *(("oversize-shard", p) for p in scan.oversize if p not in scan.expired_in),
        ]
        if not work:
            continue
        target = _ns(scan.namespace)
        done = {"expired": 0, "splits": 0, "busy": 0, "shards": 0}
        for code, prefix in work:
            if not run.has_time(code, f"{target} s{prefix}"):
                break
            if dry_run:
                done["shards"] += 1
                continue
            if not free_now(view.lock_path(prefix)):
                done["busy"] += 1
                run.unfinished.add(code)
                continue
            try:
                dropped, splits = maintain_shard(engine, view, prefix, wait=False)
            except FileMemError as exc:
                run.skip(code, f"{target} s{prefix}", f"failed: {exc}")
                continue
            done["shards"] += 1
            done["expired"] += dropped
            done["splits"] += splits
            if dropped or splits:
                time.sleep(_PAUSE_S)
        run.counts["expired_dropped"] += done["expired"]
        run.counts["splits"] += done["splits"]
        run.counts["busy_skipped"] += done["busy"]
        if dry_run:
            run.record(
                work[0][0],
                target,
                f"would drop {scan.expired} expired record(s), finish {len(scan.interrupted)} split(s), split "
                f"{len(scan.oversize)} oversize shard(s)",
            )
        elif done["shards"] or done["busy"]:
            run.record(
                work[0][0],
                target,
                f"{done['shards']} shard(s): {done['expired']} expired record(s) dropped, {done['splits']} split(s)"
                + (f"; {done['busy']} busy shard(s) skipped" if done["busy"] else ""),
            )

    # 4. Tiny siblings, merged back (locks only tried: busy pairs wait for next time).
    limit = merge_limit(engine)
    for scan in scans:
        if not scan.mergeable:
            continue
        target = _ns(scan.namespace)
        if not run.has_time("tiny-shards", target):
            break
        if dry_run:
            run.record("tiny-shards", target, f"would merge {len(scan.mergeable)} pair(s) of sibling shards")
            continue
        try:
            merged = merge_small_siblings(engine, engine.view(scan.namespace), limit)
        except FileMemError as exc:
            run.skip("tiny-shards", target, f"failed: {exc}")
            continue
        run.counts["merges"] += merged
        if merged < len(scan.mergeable):
            run.unfinished.add("tiny-shards")  # busy, or changed since the scan
        run.record("tiny-shards", target, f"{merged} merge(s)")
        if merged:
            time.sleep(_PAUSE_S)

    # 5. Search indexes: damaged files go, this configuration's indexes are brought up to date
    #    (looked at afresh: the steps above rewrote shards, which leaves their segments behind).
    _indexes(subject, run, codes)

    remaining = tuple(f for f in findings if dry_run or f.code in OPERATOR_CODES or f.code in run.unfinished)
    return MaintenanceReport(
        dry_run=dry_run,
        started_at=started,
        duration_s=time.monotonic() - t0,
        findings=tuple(findings),
        steps=tuple(run.steps),
        counts=run.counts,
        out_of_budget=run.out_of_budget,
        remaining=remaining,
    )


def _indexes(subject: Subject, run: _Run, codes: set[str]) -> None:
    engine, searcher = subject.engine, subject.searcher
    # Looked at before damaged files go: their namespaces are rebuilt below.
    states = index_states(engine)
    if "damaged-search-index" in codes and run.has_time("damaged-search-index", "index/"):
        if run.dry_run:
            run.record("damaged-search-index", "index/", "would delete damaged index files and rebuild them")
        else:

            def drop() -> str:
                gone = [f for f in check_indexes(engine, True) if f.code == "corrupt-index" and f.fixed]
                return f"{len(gone)} damaged index file(s) deleted"

            run.attempt("damaged-search-index", "index/", drop)
    for st in states:
        if not st.shards or not (st.damaged or st.stale / st.shards >= INDEX_STALE_FRACTION):
            continue
        target = _ns(st.namespace)
        code = "damaged-search-index" if st.damaged else "stale-search-index"
        if st.config != searcher.config:
            run.skip(code, target, f"index configuration {st.config} is not this store's (index_fields/embed)")
            continue
        if not run.has_time(code, target):
            return
        if run.dry_run:
            run.record(code, target, f"would re-index {st.stale} shard(s)")
            continue

        def rebuild(ns: tuple[str, ...] = st.namespace) -> str:
            built = searcher.reindex(ns)
            run.counts["segments_indexed"] += built
            return f"{built} segment(s) indexed"

        run.attempt(code, target, rebuild)
