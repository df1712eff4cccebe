"""The fire-and-forget collector: queue, journal thread, apply thread (layer L4).

Path of one record::

    collect()  --validate, encode, seq-->  incoming  (memory; collect returns here)
    journal thread  --append + fsync a group-->  ready[high|normal|low]  ("accepted")
    apply thread  --one engine batch: records + applied-ids marker-->  store  ("applied")

``collect`` never touches the disk: it checks the record, encodes the value
with the store's codec (so a bad value fails *now*), gives it an id and
appends it to an in-memory deque. The journal thread writes everything that
arrived since its last write as one group and fsyncs once; only then is a
record *accepted* (it survives a crash of this process) and handed to the
apply thread. Without a journal, records are handed over at once.

The apply thread takes up to ``batch_size`` records, high priority first, and
applies them in id order as one engine batch: all their shards are locked
together, written once each and fsynced once each, atomically, together
with the journal's marker of applied ids (see ``_applied``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import secrets
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from .._engine import JOURNAL_DIR, Engine, _fork_generation, copy_value
from .._errors import (
    FileMemError,
    FlushTimeoutError,
    InvalidValueError,
    QueueFullError,
    ReadOnlyError,
    StoreClosedError,
)
from .._names import validate_key
from .._types import NamespaceLike
from ._applied import RangeSet, remove_marker
from ._apply import IDLE_WAIT_S, ApplyLoop
from ._breaker import CircuitBreaker, backoff_delay
from ._config import CollectorConfig
from ._journal import JournalFile, decode_frame, encode_frame, frame_tail, frame_with_seq
from ._replay import recover_journals
from ._spool import Inbox, Rec, Spool, Taken, rec_of_frame, recs_of_taken

__all__ = ["PRIORITIES", "Collector"]

log = logging.getLogger("filemem.collector")

#: Priority names, most urgent first; records are taken into batches in this order.
PRIORITIES: Final = ("high", "normal", "low")
_PRIO: Final = {name: i for i, name in enumerate(PRIORITIES)}


class Collector(ApplyLoop):
    """Queue records now, store them in the background, lose none: ``store.collector()``.

    Example::

        with store.collector(batch_size=500) as c:
            op = c.collect(("agent-1", "events"), "ev-1", {"step": "login", "ok": True})
            c.collect(("agent-1", "errors"), "err-1", {"trace": "..."}, priority="high")
            c.flush()                      # both are now durable in the store
            print(c.stats()["applied"])

    ``collect()`` returning means *queued* (in memory, checked, with an id).
    The record is *accepted* once the journal thread has written and fsynced
    it (``stats()["accepted"]``): from then on it survives a crash of this
    process. ``flush()`` returns once everything queued before it is applied
    to the store (or, if the store refused it for good, in a dead-letter file).
    """

    def __init__(
        self,
        engine: Engine,
        config: CollectorConfig,
        *,
        normalize: Callable[[NamespaceLike], tuple[str, ...]],
    ) -> None:
        engine.check_open()
        if engine.readonly:
            raise ReadOnlyError(f"store {engine.root} was opened read-only; a collector needs to write")
        self.config = config
        self._engine = engine
        self._normalize = normalize
        self._codec = engine.codec
        self.jid = f"j{os.getpid()}-{secrets.token_hex(4)}"
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)  # space freed / records finished
        self._seq = 0
        self._queued = 0  # queued and not yet finished
        # Queued, not yet journaled: the journal frames themselves, in one buffer (see _spool).
        self._incoming = Inbox()
        # Journaled records wait here as (id, frame offset, size), not as objects (see _spool).
        self._ready: tuple[Spool, Spool, Spool] = (Spool(0), Spool(1), Spool(2))
        self._jbatch_min = math.inf  # lowest id the journal thread holds
        self._jgroup: Taken | None = None  # the group the journal thread holds
        self._inflight: list[Rec] = []  # the batch being applied
        #: Records being dropped (on_full="drop_oldest") whose letter is not written yet: seq -> journaled.
        self._dropping: dict[int, bool] = {}
        self._jwake = threading.Event()
        self._awake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._fork = _fork_generation[0]  # a forked child has none of our threads
        self._fatal: BaseException | None = None
        self._rng = random.Random()  # noqa: S311 - retry jitter, not crypto
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_reset)
        self._counts = {
            "accepted": 0,
            "applied": 0,
            "retried": 0,
            "failed": 0,
            "dropped": 0,
            "dead_letters": 0,
            "batches": 0,
            "journal_errors": 0,
            "recovered": 0,
        }
        self._latency: deque[float] = deque(maxlen=2048)
        self._last_collect = 0.0
        self._contended = False  # a collect() waited for the lock: see ApplyLoop._let_callers_in
        self.last_error = ""
        # Journal bookkeeping (journal mode only).
        self._applied = RangeSet()  # ids of this journal applied or retired since its last truncation
        self._retired = RangeSet()  # dropped journaled ids still to be folded into the marker
        self._in_file = 0  # records in the journal file since its last truncation
        self._done_in_file = 0  # of those, applied or retired
        self._file_lock = threading.Lock()
        #: Ids handed on without a journal write (the journal kept failing while closing).
        self._unjournaled: set[int] = set()
        # A starting collector recovers the journals of dead ones first, so
        # their records land before anything this one collects.
        try:
            self._counts["recovered"] = recover_journals(engine)["applied"]
        except FileMemError as exc:
            log.warning("could not replay dead collectors' journals yet (they stay for later): %s", exc)
        self._journal = (
            JournalFile(os.path.join(engine.root, JOURNAL_DIR), self.jid, sync=engine.sync) if config.journal else None
        )
        self._threads = [threading.Thread(target=self._guard(self._apply_loop), name="filemem-collector", daemon=True)]
        if self._journal is not None:
            self._threads.append(
                threading.Thread(target=self._guard(self._journal_loop), name="filemem-journal", daemon=True)
            )
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ collecting

    def collect(self, namespace: NamespaceLike, key: str, value: Any, priority: str = "normal") -> int:
        """Queue ``value`` for ``namespace``/``key``; return the record's id at once.

        ``priority``: ``"high"`` (errors, bugs: applied first), ``"normal"`` or
        ``"low"``. Bad input raises now (InvalidKeyError, InvalidValueError);
        a full queue follows ``on_full``.

        >>> op = collector.collect("agent-1/events", "ev-7", {"ok": True})  # doctest: +SKIP
        """
        return self._collect(namespace, key, value, priority, wait=True)

    async def acollect(self, namespace: NamespaceLike, key: str, value: Any, priority: str = "normal") -> int:
        """:meth:`collect` for asyncio: never blocks the event loop (with a full queue,
        ``on_full="block"`` waits and ``"drop_oldest"`` writes its dead letter in a worker thread).

        >>> op = await collector.acollect("agent-1/events", "ev-8", {"ok": True})  # doctest: +SKIP
        """
        try:
            return self._collect(namespace, key, value, priority, wait=False)
        except _WouldBlock:
            return await asyncio.to_thread(self._collect, namespace, key, value, priority, wait=True)

    def _collect(self, namespace: NamespaceLike, key: str, value: Any, prio_name: str, *, wait: bool) -> int:
        self._check_usable()
        prio = _PRIO.get(prio_name) if isinstance(prio_name, str) else None
        if prio is None:
            raise InvalidValueError(f"priority must be one of {PRIORITIES}, not {prio_name!r}")
        ns = self._normalize(namespace)
        validate_key(key)
        copy_value(value)  # checks nesting depth, as put() does
        payload = self._codec.encode(value)
        if len(payload) > self._engine.max_value_bytes:
            raise InvalidValueError(
                f"value encodes to {len(payload)} bytes; the limit is {self._engine.max_value_bytes}"
            )
        ts = time.time()
        self._last_collect = time.monotonic()  # the apply thread yields the GIL only to paced callers
        journaled = self._journal is not None
        # In journal mode the record is queued as its journal frame; all of it but the id is packed here,
        # outside the lock.
        tail = frame_tail(ts, prio, ns, key, self._codec.name, payload) if journaled else b""
        while True:
            if not self._lock.acquire(blocking=False):
                # A writer thread holds it: ask it to hand the GIL over as soon as it lets go
                # (else it may run on for up to CPython's 5 ms switch interval while we wait).
                self._contended = True
                self._lock.acquire()
            with _Release(self._lock):
                self._check_usable()
                victim = self._make_room(wait) if self._queued >= self.config.max_queue else None
                if victim is None:
                    self._seq += 1
                    seq = self._seq
                    self._queued += 1
                    if journaled:
                        self._incoming.add(seq, prio, frame_with_seq(seq, tail))
                    else:
                        self._ready[prio].append(Rec(seq, prio, ts, ns, key, payload))
                    break
            # A record was pushed out to make room: its dead letter must be
            # durable before its id is retired (or a crash in between loses it).
            self._drop_durably(victim)
        if self._journal is not None:
            if not self._jwake.is_set():
                self._jwake.set()
        elif not self._awake.is_set():
            self._awake.set()
        return seq

    def _check_usable(self) -> None:
        if self._closed or self._fork != _fork_generation[0]:
            raise StoreClosedError(
                "collector is closed"
                if self._closed
                else "this collector belongs to the parent process: create a new one in the forked child"
            )
        if self._fatal is not None:
            raise StoreClosedError(f"collector writer stopped: {self._fatal!r}")

    def _drop_durably(self, victim: Rec) -> None:
        """Write the dead letter of a record ``_drop_one`` took out of line, then retire it.

        The victim still counts as queued (and flush waits for it) until its
        letter is fsynced. If the letter cannot be written, the victim goes back
        in line (nothing is lost) and QueueFullError says why.
        """
        try:
            self._dead_letter([victim], "dropped", "queue full (on_full='drop_oldest')")
        except FileMemError as exc:
            with self._progress:
                journaled = self._dropping.pop(victim.seq)
                if journaled:
                    self._ready[victim.prio].appendleft(victim)
                else:
                    frame = encode_frame(
                        victim.seq, victim.ts, victim.prio, victim.ns, victim.key, self._codec.name, victim.payload
                    )
                    self._incoming.appendleft(victim.seq, victim.prio, frame)
                self._progress.notify_all()
            self.last_error = f"dead letter for dropped record {victim.seq}: {exc}"
            if journaled:
                self._awake.set()
            else:
                self._jwake.set()
            raise QueueFullError(
                f"collector queue is full ({self.config.max_queue} records) and the dead letter of the record "
                f"to drop could not be written ({exc}); it stays queued"
            ) from exc
        with self._progress:
            journaled = self._dropping.pop(victim.seq)
            if journaled and self._journal is not None:
                # It is in the journal: retire it there, or a replay would
                # bring back what we report as dropped. Only now, with its
                # letter durable, may the marker name it.
                self._retired.add_range(victim.seq, victim.seq)
            self._queued -= 1
            self._counts["dropped"] += 1
            self._progress.notify_all()

    def _make_room(self, wait: bool) -> Rec | None:
        """With the lock held and the queue full: apply ``on_full``. Returns a dropped record."""
        policy = self.config.on_full
        if policy == "raise":
            raise QueueFullError(f"collector queue is full ({self.config.max_queue} records waiting)")
        if not wait:
            # acollect: dropping costs an fsync (the dead letter) and blocking
            # waits; both belong in a worker thread, not on the event loop.
            raise _WouldBlock
        deadline = None if self.config.block_timeout is None else time.monotonic() + self.config.block_timeout
        while self._queued >= self.config.max_queue:
            if policy == "drop_oldest":
                victim = self._drop_one()
                if victim is not None:
                    return victim
                # Everything waiting is in the writers' hands (the group being
                # journaled, the batch in flight): wait until some is droppable.
            self._check_usable()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise QueueFullError(
                    f"collector queue stayed full ({self.config.max_queue} records) for {self.config.block_timeout}s"
                )
            self._progress.wait(IDLE_WAIT_S / 10 if remaining is None else min(remaining, IDLE_WAIT_S / 10))
        return None

    def _drop_one(self) -> Rec | None:
        """With the lock held: take the oldest queued record of the lowest priority out of line.

        It stays counted as queued, in ``_dropping``, until ``_drop_durably`` has written its letter.
        """
        for q in reversed(self._ready):  # lowest priority first; oldest of it
            if q:
                victim = q.popleft()
                try:
                    self._load([victim])  # its letter needs the record, which waits in the journal
                except FileMemError:
                    q.appendleft(victim)
                    raise
                self._dropping[victim.seq] = True  # journaled: to retire once its letter is durable
                return victim
        if self._incoming:
            victim = rec_of_frame(*self._incoming.popleft())  # not journaled yet: nothing to retire
            self._dropping[victim.seq] = False
            return victim
        return None

    # ------------------------------------------------------------------ flushing

    def _min_outstanding(self) -> float:
        low = self._jbatch_min
        head = self._incoming.head_seq()
        if head is not None:
            low = min(low, head)
        for q in self._ready:
            head = q.head_seq()
            if head is not None:
                low = min(low, head)
        if self._inflight:
            low = min(low, self._inflight[0].seq)
        if self._dropping:
            low = min(low, *self._dropping)  # a drop whose letter is not durable yet
        return low

    def flush(self, timeout: float | None = None) -> None:
        """Return once every record collected before this call is durable in the store.

        (Or, for a record the store refused for good, in the dead-letter file.)
        Raises FlushTimeoutError after ``timeout`` seconds; nothing is lost then.

        >>> collector.flush()  # doctest: +SKIP
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            target = self._seq
            self._awake.set()
            while self._min_outstanding() <= target:
                if self._fatal is not None:
                    raise StoreClosedError(f"collector writer stopped: {self._fatal!r}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise FlushTimeoutError(
                        f"flush not done after {timeout}s: {self._queued} records waiting "
                        f"(breaker {self.breaker.state}; last error: {self.last_error or 'none'})"
                    )
                self._progress.wait(IDLE_WAIT_S if remaining is None else min(remaining, IDLE_WAIT_S))

    async def aflush(self, timeout: float | None = None) -> None:
        """:meth:`flush` for asyncio (waits in a worker thread).

        >>> await collector.aflush()  # doctest: +SKIP
        """
        await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking records, drain the queue (up to ``timeout``, default ``close_timeout``), stop the threads.

        If the queue drained, the journal is retired (removed). If not (the
        store kept failing), the journal stays and the next process to open
        the store replays it; without a journal, what is left goes to the
        dead-letter file. Idempotent.
        """
        if self._closed:
            return
        if self._fork != _fork_generation[0]:
            # A forked child: the threads, the queue and the journal are the
            # parent's. Touch nothing (retiring would delete the parent's journal).
            self._closed = True
            return
        limit = self.config.close_timeout if timeout is None else timeout
        drained = True
        try:
            self.flush(limit)
        except (FlushTimeoutError, StoreClosedError) as exc:
            drained = False
            log.warning("collector %s closed with records still queued: %s", self.jid, exc)
        with self._progress:
            self._closed = True
            self._progress.notify_all()
        self._stop.set()
        self._jwake.set()
        self._awake.set()
        for t in self._threads:
            t.join()
        if self._journal is not None:
            if drained and self._queued == 0:
                self._journal.retire()
                remove_marker(self._engine, self.jid)
            else:
                self._journal.release()  # its records wait for replay
        left = [r for q in self._ready for r in q.in_memory()] + self._inflight
        if self._journal is not None:
            left = [r for r in left if r.seq in self._unjournaled]  # the journal holds the others
            # A journal thread that died leaves records it never handed on:
            # the group it held and what arrived since. (The group may have
            # reached the journal too: then a replay finds it twice, and the
            # letter's replay skips it as superseded. Better than losing it.)
            with self._lock:
                if self._jgroup is not None:
                    left += recs_of_taken(self._jgroup)
                left += recs_of_taken(self._incoming.take_all())
                self._jgroup = None
        if left:
            self._dead_letter(left, "unfinished", "collector closed before the store took it")

    async def aclose(self, timeout: float | None = None) -> None:
        """:meth:`close` for asyncio: the drain waits in a worker thread.

        >>> await collector.aclose()  # doctest: +SKIP
        """
        await asyncio.to_thread(self.close, timeout)

    async def __aenter__(self) -> Collector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether close() ran."""
        return self._closed

    # ------------------------------------------------------------------ threads

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as exc:
                self._fatal = exc
                log.exception("collector %s: writer thread died", self.jid)
                with self._progress:
                    self._progress.notify_all()

        return run

    def _journal_loop(self) -> None:
        journal = self._journal
        assert journal is not None
        attempt = 0
        while True:
            self._jwake.wait(IDLE_WAIT_S)
            self._jwake.clear()
            if self.config.journal_group_delay:
                time.sleep(self.config.journal_group_delay)
            with self._lock:
                group = self._incoming.take_all() if self._incoming else None
                if group is not None:
                    self._jbatch_min = group.seqs[0]
                    self._jgroup = group
            self._let_callers_in()
            if group is None:
                if self._stop.is_set():
                    return
                continue
            data = group.data
            journaled = False
            while True:
                try:
                    with self._file_lock:
                        base = journal.offset
                        journal.append(data)
                        journal.flush()
                        self._in_file += len(group.seqs)
                    attempt = 0
                    journaled = True
                    break
                except FileMemError as exc:
                    self._counts["journal_errors"] += 1
                    self.last_error = f"journal: {exc}"
                    attempt += 1
                    if self._stop.wait(
                        backoff_delay(attempt, self.config.backoff_base, self.config.backoff_max, self._rng)
                    ):
                        # Closing with the journal failing: hand the group on
                        # unjournaled rather than lose it.
                        break
            spools = self._ready
            # Worked out outside the lock, which collect() waits for.
            recs = [] if journaled else recs_of_taken(group)
            offs = array("q")
            if journaled:
                for size in group.sizes:
                    offs.append(base)
                    base += size
            one_prio = group.prios[0] if group.prios.count(group.prios[0]) == len(group.prios) else None
            with self._lock:
                if journaled and one_prio is not None:
                    # From now on the journal holds each record: the line keeps only where its frame is.
                    spools[one_prio].extend_packed(group.seqs, offs, group.sizes)
                elif journaled:
                    for seq, prio, off, size in zip(group.seqs, group.prios, offs, group.sizes, strict=True):
                        spools[prio].append_packed(seq, off, size)
                else:
                    for r in recs:
                        spools[r.prio].append(r)
                self._jbatch_min = math.inf
                self._jgroup = None
                if journaled:
                    self._counts["accepted"] += len(group.seqs)
                else:
                    self._unjournaled.update(group.seqs)
            self._let_callers_in()
            self._awake.set()

    # ------------------------------------------------------------------ health

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
                heads += [self._inflight[0].ts] if self._inflight and self._inflight[0].loaded else []
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

    def __repr__(self) -> str:
        return f"Collector({self._engine.root!r}, jid={self.jid!r}, closed={self._closed})"


class _Release:
    """``with _Release(lock):`` releases an already acquired lock on the way out."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _WouldBlock(Exception):  # noqa: N818 - internal signal, never escapes acollect
    """collect(wait=False) found the queue full under on_full="block"."""


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
