"""The collector's apply side: batches, retries, the breaker, dead letters, journal truncation (layer L4).

A mixin of :class:`~filemem._collector._writer.Collector`, kept apart because
it is one mechanism: the apply thread takes up to ``batch_size`` records (high
priority first), applies them in id order as one engine batch together with
the journal's marker of applied ids, retries transient failures with backoff
behind the circuit breaker, and dead-letters records the store refuses while
it takes others.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from array import array
from collections import deque
from operator import attrgetter
from typing import Final

from .._engine import UNDECODED, Engine, Op
from .._errors import FileMemError, InvalidKeyError, InvalidValueError, LockTimeout, StorageError
from ..codecs import Codec
from ._applied import RangeSet, marker_op, read_marker
from ._breaker import CircuitBreaker, backoff_delay
from ._config import CollectorConfig
from ._deadletter import append_dead_letters, letter
from ._journal import JournalFile
from ._spool import Inbox, Rec, Run, Spool, recs_of_hot, recs_of_runs

__all__ = ["ApplyLoop"]

log = logging.getLogger("filemem.collector")

#: Truncate the journal once everything in it is applied and it is at least this big.
_TRUNCATE_BYTES: Final = 1 << 20
#: Most distinct namespaces in one engine batch (each holds shard locks).
_MAX_NAMESPACES_PER_APPLY: Final = 64
IDLE_WAIT_S: Final = 0.1
#: Records decoded or read back between two points where the apply thread may let go of the GIL.
#: A thread that wakes (a paced collect() caller) waits for the GIL until the holder blocks or
#: CPython's 5 ms switch interval runs out; slices of ~50-100 us of work keep collect() p99 low.
SLICE_RECORDS: Final = 64
#: ...but only for a caller that is between calls (no collect() this recently). A caller busy in
#: Python would keep the GIL a whole switch interval after each yield and starve the writer.
_PACED_GAP_S: Final = 0.0002
#: ...and while a flush() waits, only if some thread collected this recently: a caller blocked in
#: flush() calls nothing, and each yield can hand the GIL to a busy thread (the fold) for a whole
#: switch interval: 150 yields cost a 5,000-record flush more than its commits (issue 13).
_FLUSHING_GAP_S: Final = 0.005
_PERMANENT: Final = (InvalidValueError, InvalidKeyError)
_SEQ: Final = attrgetter("seq")
_OFF: Final = attrgetter("off")
_NS: Final = attrgetter("ns")
#: ``Op``'s fields between ``value`` and ``encoded``, at their defaults: ttl, if_version, fn, bits,
#: view, prefix, record, version, expired_before (a test holds it to Op's field list).
_PUT_ARGS: Final = (None, None, None, "", None, "", None, 0, None)
#: The store's trouble, not the record's (a full disk, an I/O error, a busy
#: shard): such records are never dead-lettered; they stay in flight (and in
#: the journal) and are retried behind the breaker until the store takes them.
_TRANSIENT: Final = (StorageError, LockTimeout)


class ApplyLoop:
    """The apply thread's half of the collector (state is set up by Collector.__init__)."""

    config: CollectorConfig
    jid: str
    breaker: CircuitBreaker
    last_error: str
    _engine: Engine
    _codec: Codec
    #: The engine takes puts as their codec bytes alone (see ``Engine.takes_undecoded``).
    _undecoded: bool
    _lock: threading.Lock
    _progress: threading.Condition
    _queued: int
    _incoming: Inbox
    _ready: tuple[Spool, Spool, Spool]
    _jbatch_min: float
    _inflight: list[Rec]
    _inflight_lo: float
    _awake: threading.Event
    _stop: threading.Event
    _rng: random.Random
    _counts: dict[str, int]
    _latency: deque[float]
    _journal: JournalFile | None
    _applied: RangeSet
    _retired: RangeSet
    _in_file: int
    _done_in_file: int
    _file_lock: threading.Lock
    _fatal: BaseException | None
    _last_collect: float
    _flushing: int
    #: The apply thread waits for its batch to fill (until batch_timeout): handing on records does not wake it.
    _filling: bool

    _contended: bool

    def _let_callers_in(self) -> None:
        """After a writer thread let go of the lock: if a collect() waited for it, hand it the GIL now."""
        if self._contended:
            self._contended = False
            time.sleep(0)  # releases the GIL, so the woken caller takes it instead of waiting up to 5 ms

    def _yield_gil(self) -> None:
        """Let go of the GIL for a moment if a paced collect() caller may be waking (see _PACED_GAP_S)."""
        gap = time.time() - self._last_collect  # (collect() stamps it with its record's time)
        if gap > _PACED_GAP_S and (not self._flushing or gap < _FLUSHING_GAP_S):
            time.sleep(0)  # releases the GIL: a thread waiting for it runs now, not after 5 ms

    def _load(self, recs: list[Rec]) -> None:
        """Read back from the journal the fields of records that wait there as (id, offset, size)."""
        stubs = [r for r in recs if not r.loaded]
        if not stubs:
            return
        journal = self._journal
        assert journal is not None, "only journaled records wait unloaded"
        stubs.sort(key=_OFF)
        for i in range(0, len(stubs), SLICE_RECORDS):
            if i:
                self._yield_gil()
            part = stubs[i : i + SLICE_RECORDS]
            got = journal.read_fields([r.off for r in part], [r.size for r in part])
            for r, (seq, ts, _, ns, key, _, payload) in zip(part, got, strict=True):
                if seq != r.seq:
                    raise StorageError(f"journal {journal.path}: frame at {r.off} holds record {seq}, not {r.seq}")
                r.ts, r.ns, r.key, r.payload, r.loaded = ts, ns, key, payload, True

    def _recs_of_runs(self, runs: list[Run]) -> list[Rec]:
        """The records of runs taken from the spools, read back from the journal whole (in id order).

        One object per record, built from the frame's fields (a stub filled in
        later cost twice the Python work). If the journal cannot be read, the
        records come back as stubs: ``_commit`` reads them again inside its
        retries, which handle the error.
        """
        journal = self._journal
        if journal is None or all(run.recs is not None or run.hot is not None for run in runs):
            return recs_of_runs(runs)
        out: list[Rec] = []
        slices = 0
        try:
            for run in runs:
                if run.recs is not None:
                    out += run.recs
                    continue
                if run.hot is not None:
                    out += recs_of_hot(run)
                    continue
                assert run.seqs is not None and run.offs is not None and run.sizes is not None
                prio = run.prio
                for i in range(0, run.n, SLICE_RECORDS):
                    if slices:
                        self._yield_gil()
                    slices += 1
                    seqs = run.seqs[i : i + SLICE_RECORDS]
                    offs = run.offs[i : i + SLICE_RECORDS]
                    sizes = run.sizes[i : i + SLICE_RECORDS]
                    got = journal.read_fields(offs, sizes)
                    if array("q", [f[0] for f in got]) != seqs:
                        raise StorageError(f"journal {journal.path}: frames read back hold other records than queued")
                    out += [
                        Rec(seq, prio, f[1], f[3], f[4], f[6], off, size)
                        for seq, off, size, f in zip(seqs, offs, sizes, got, strict=True)
                    ]
        except FileMemError as exc:
            log.warning("collector %s: reading a batch back from the journal failed (retried): %s", self.jid, exc)
            return recs_of_runs(runs)
        return out

    def _wake_applier(self) -> None:
        """Records were handed on: wake the apply thread, unless it waits for its batch to fill and it is not full."""
        if not self._filling or self._ready_count() >= self.config.batch_size:
            self._awake.set()

    def _ready_count(self) -> int:
        return len(self._ready[0]) + len(self._ready[1]) + len(self._ready[2])

    def _apply_loop(self) -> None:
        cfg = self.config
        while True:
            self._awake.wait(IDLE_WAIT_S)
            self._awake.clear()
            n = self._ready_count()
            if n == 0:
                journal_done = not self._incoming and self._jbatch_min == math.inf
                if self._stop.is_set() and (journal_done or self._fatal is not None):
                    return  # (a dead journal thread hands nothing on any more)
                self._fold_retired()
                continue
            if n < cfg.batch_size and cfg.batch_timeout > 0 and not self._stop.is_set() and not self._flushing:
                # Let the batch fill a little: fewer, larger batches. Meanwhile nobody
                # wakes this thread for each group or record that arrives (see _wake_applier):
                # only a full batch, a flush() or close() does.
                deadline = time.monotonic() + cfg.batch_timeout
                self._filling = True
                try:
                    while self._ready_count() < cfg.batch_size and not self._stop.is_set() and not self._flushing:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._awake.wait(left)
                        self._awake.clear()
                finally:
                    self._filling = False
            wait = self.breaker.wait_s()
            if wait > 0 and self._stop.wait(wait):
                return  # closing while the breaker is open: close() accounts for what is left
            with self._lock:
                # Only array slices under the lock: collect() waits for it. The
                # lowest id taken keeps flush() waiting until they are finished.
                runs: list[Run] = []
                room = cfg.batch_size
                for q in self._ready:
                    if room > 0 and q:
                        got = q.take_runs(room)
                        room -= sum(r.n for r in got)
                        runs += got
                self._inflight_lo = min((r.first_seq for r in runs), default=math.inf)
            self._let_callers_in()
            batch = self._recs_of_runs(runs)
            if len(runs) > 1:
                batch.sort(key=_SEQ)  # (one run, the usual batch: in id order already)
            self._inflight = batch
            if not self._apply_with_retries():
                # Closing interrupted the retries: put what is left back in line.
                with self._lock:
                    for r in reversed(self._inflight):
                        self._ready[r.prio].appendleft(r)
                    self._inflight = []
                    self._inflight_lo = math.inf
                return
            self._awake.set()

    def _apply_with_retries(self) -> bool:
        """Apply the in-flight batch; False if closing interrupted the retries."""
        cfg = self.config
        attempt = 0
        while self._inflight:
            started = time.monotonic()
            try:
                self._commit(list(self._inflight))
            except _PERMANENT:
                if self._isolate():
                    continue
                # Their dead letters could not be written: they stay in flight
                # (and in the journal); try again after a delay.
                attempt += 1
            except FileMemError as exc:
                self._note_failure(exc, len(self._inflight))
                attempt += 1
                if attempt > cfg.max_retries:
                    if self._isolate():
                        continue
                    attempt = 0  # the whole store fails: keep waiting behind the breaker
            else:
                self._latency.append(time.monotonic() - started)
                self.breaker.success()
                continue
            self._counts["retried"] += len(self._inflight)
            delay = max(backoff_delay(attempt, cfg.backoff_base, cfg.backoff_max, self._rng), self.breaker.wait_s())
            if self._stop.wait(delay):
                return False
        self._maybe_truncate()
        return True

    def _note_failure(self, exc: BaseException, n: int) -> None:
        self._counts["failed"] += n
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.breaker.failure(self.last_error)

    def _commit(self, batch: list[Rec]) -> None:
        """Apply ``batch``: one atomic engine batch per group of namespaces, each with the marker.

        Each group that commits is finished at once (a retry never applies it again).
        """
        self._load(batch)  # outside the collector's lock: collect() never waits for this read
        # The file engine logs the records' bytes as they are (UNDECODED: no decode here);
        # another engine (PostgreSQL) is given the values.
        # The file engine logs the records' bytes as they are (no decode here), given as tuples
        # (Engine.apply_puts: no Op per record); another engine (PostgreSQL) is given the values.
        cname = self._codec.name
        as_puts = self._undecoded and cname == self._engine.codec.name
        decode = self._codec.decode
        groups: list[list[Rec]] = [batch]
        if len(set(map(_NS, batch))) > _MAX_NAMESPACES_PER_APPLY:  # (the count at C speed: the usual batch fits)
            groups = [[]]
            seen: set[tuple[str, ...]] = set()
            for r in batch:
                if r.ns not in seen and len(seen) >= _MAX_NAMESPACES_PER_APPLY:
                    groups.append([])
                    seen = set()
                seen.add(r.ns)
                groups[-1].append(r)
        for group in groups:
            puts: list[tuple[tuple[str, ...], str, bytes]] = []
            ops: list[Op] = []
            for i in range(0, len(group), SLICE_RECORDS):
                if i:
                    self._yield_gil()
                # The payload is already the codec's bytes (collect() encoded it): the commit logs them
                # as they are; the decoded value is for this process's view of the log.
                if as_puts:
                    puts += [(r.ns, r.key, r.payload) for r in group[i : i + SLICE_RECORDS]]
                elif self._undecoded:
                    # Positional (Op's fields in order, as in _PUT_ARGS): keyword parsing was a sixth of an Op.
                    ops += [
                        Op(r.ns, r.key, "put", UNDECODED, *_PUT_ARGS, (cname, r.payload))
                        for r in group[i : i + SLICE_RECORDS]
                    ]
                else:
                    ops += [
                        Op(r.ns, r.key, "put", decode(r.payload), *_PUT_ARGS, (cname, r.payload))
                        for r in group[i : i + SLICE_RECORDS]
                    ]
            if self._journal is None:
                if puts:
                    self._engine.apply_puts(puts)
                elif ops:
                    self._engine.apply(ops)
                if group:
                    self._finished(group, applied=len(group))
                continue
            with self._lock:
                retired, self._retired = self._retired, RangeSet()
                done = RangeSet(self._applied.ranges)
            for lo, hi in retired.ranges:
                done.add_range(lo, hi)
            if group and group[-1].seq - group[0].seq + 1 == len(group):
                done.add_range(group[0].seq, group[-1].seq)  # ids unique and in order: no gap, one range
            else:
                done.add_many(list(map(_SEQ, group)))
            try:
                if as_puts:
                    self._engine.apply_puts(puts, [marker_op(self.jid, done)])
                else:
                    self._engine.apply([*ops, marker_op(self.jid, done)])
            except BaseException as exc:
                if not (isinstance(exc, FileMemError) and not isinstance(exc, _PERMANENT) and self._marker_is(done)):
                    with self._lock:
                        for lo, hi in retired.ranges:
                            self._retired.add_range(lo, hi)
                    raise
                # The engine raised after its commit point (say a failed
                # directory fsync): the marker, written in the same atomic
                # batch, shows the batch applied. Applying it again could
                # overwrite a newer write of another process.
                log.warning("collector %s: batch applied although the store raised: %s", self.jid, exc)
            with self._lock:
                self._applied = done
                self._done_in_file += len(retired)
            self._let_callers_in()
            if group:
                self._finished(group, applied=len(group))

    def _marker_is(self, done: RangeSet) -> bool:
        """Does the journal's marker on disk name exactly ``done``? (False if it cannot be read.)"""
        try:
            on_disk, _ = read_marker(self._engine, self.jid)
        except FileMemError:
            return False
        return [tuple(r) for r in on_disk.ranges] == [tuple(r) for r in done.ranges]

    def _isolate(self) -> bool:
        """Apply the in-flight records one by one; dead-letter those the store refuses while it takes others.

        Only records the store refuses for good are dead-lettered; one that
        fails with a storage error or a lock timeout (:data:`_TRANSIENT`: a
        full disk that will be freed) stays in flight. Returns False (records
        left in flight, to be retried after a back-off) when any did, when the
        first ``breaker_threshold`` all fail for reasons not their own (the
        store is down, not the records), or when the dead letters cannot be
        written.
        """
        bad: list[Rec] = []
        errors: set[str] = set()
        any_ok = False
        stuck = False
        for i, r in enumerate(list(self._inflight)):
            try:
                self._commit([r])
            except FileMemError as exc:
                if not any_ok and not isinstance(exc, _PERMANENT) and i + 1 >= self.config.breaker_threshold:
                    self._note_failure(exc, 1)
                    return False
                if isinstance(exc, _TRANSIENT):
                    self._note_failure(exc, 1)
                    stuck = True
                    continue
                errors.add(f"{type(exc).__name__}: {exc}")
                bad.append(r)
                continue
            any_ok = True
        if bad:
            try:
                self._dead_letter(bad, "failed", "; ".join(sorted(errors))[:500])
            except FileMemError as exc:
                self._note_failure(exc, len(bad))
                self.last_error = f"dead letters: {self.last_error}"
                return False
            with self._lock:
                if self._journal is not None:
                    for r in bad:
                        self._retired.add_range(r.seq, r.seq)
            # Counted done in the file when the marker retires them (fold).
            self._finished(bad, applied=0, in_file=False)
            self._fold_retired()
        return not stuck

    def _fold_retired(self) -> None:
        """Write the marker for ids retired without an apply (dropped, dead-lettered), when idle."""
        if self._journal is None or not self._retired.ranges or self.breaker.state != "closed":
            self._maybe_truncate()
            return
        try:
            self._commit([])
        except FileMemError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        self._maybe_truncate()

    def _finished(self, recs: list[Rec], *, applied: int, in_file: bool = True) -> None:
        # Outside the lock (collect() takes it): which in-flight records stay.
        inflight = self._inflight
        if len(recs) == len(inflight):
            left: list[Rec] = []  # recs are always in flight: the same number means all of them
        else:
            done = {id(r) for r in recs}
            left = [r for r in inflight if id(r) not in done]
        with self._progress:
            self._inflight = left
            self._inflight_lo = left[0].seq if left else math.inf  # (in flight records stay in id order)
            self._queued -= len(recs)
            self._counts["applied"] += applied
            self._counts["batches"] += 1 if applied else 0
            if self._journal is not None and in_file:
                self._done_in_file += len(recs)
            self._progress.notify_all()
        self._let_callers_in()

    def _maybe_truncate(self) -> None:
        journal = self._journal
        if journal is None or journal.size_since_truncate < _TRUNCATE_BYTES:
            return
        if not self._file_lock.acquire(blocking=False):
            return
        try:
            with self._lock:
                if self._done_in_file != self._in_file or self._retired.ranges:
                    return
                # Everything in the file is applied (the marker says so): start it over.
                journal.truncate()
                self._in_file = self._done_in_file = 0
                self._applied = RangeSet()
        except FileMemError as exc:
            self.last_error = f"journal truncate: {exc}"
        finally:
            self._file_lock.release()

    def _dead_letter(self, recs: list[Rec], reason: str, error: str) -> None:
        self._load(recs)
        letters = [
            letter(self.jid, r.seq, r.ns, r.key, self._codec.name, r.payload, r.prio, r.ts, reason, error) for r in recs
        ]
        try:
            append_dead_letters(self._engine, self.jid, letters)
        except FileMemError as exc:
            log.error("collector %s: could not write %d dead letters: %s", self.jid, len(recs), exc)
            raise
        with self._lock:
            self._counts["dead_letters"] += len(recs)
