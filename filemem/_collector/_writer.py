"""The fire-and-forget collector: ``collect()``, flush, close (layer L4).

Path of one record::

    collect()  --validate, encode-->  incoming  (memory; collect returns here)
    journal thread  --pack the frames, append + fsync a group-->  ready[high|normal|low]  ("accepted")
    apply thread  --one engine batch: records + applied-ids marker-->  store  ("applied")

Invariant: ``collect()`` never touches the disk and never waits for a writer
thread's work: it checks the record, encodes the value with the store's codec
(so a bad value fails *now*), and under a lock held for a few array appends
gives it an id and queues its fields in the in-memory inbox (in a burst that
outruns the journal thread, its journal frame, packed before the lock: see
``_spool.Inbox``). Everything the writer threads do under that lock is O(1)
or C-speed array work (see ``_journal_thread`` and ``_apply``). The journal
thread packs the frames of everything that arrived since its last write,
writes them as one group and fsyncs once; only then is a record *accepted*
(it survives a crash of this process) and handed to the apply thread.
Without a journal, records are handed over at once.

The apply thread takes up to ``batch_size`` records, high priority first, and
applies them in id order as one engine batch: all their shards are locked
together, written once each and fsynced once each, atomically, together
with the journal's marker of applied ids (see ``_applied``).

The other roles live beside it: ``_journal_thread`` (the journal thread),
``_apply`` (the apply thread), ``_full`` (``on_full``), ``_stats`` (stats, health).
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from .._engine import JOURNAL_DIR, Engine, _fork_generation, copy_value
from .._engine._ops import _SCALAR_TYPES
from .._errors import FileMemError, FlushTimeoutError, InvalidValueError, ReadOnlyError, StoreClosedError
from .._names import validate_key
from .._types import NamespaceLike
from ._applied import RangeSet, remove_marker
from ._apply import IDLE_WAIT_S
from ._breaker import CircuitBreaker
from ._config import CollectorConfig
from ._full import FullQueue, WouldBlock
from ._journal import JournalFile, TailPacker
from ._journal_thread import Bell, JournalLoop
from ._replay import recover_journals
from ._spool import Hot, Inbox, Rec, Spool, Taken, recs_of_taken
from ._stats import StatsView

__all__ = ["PRIORITIES", "Collector"]

log = logging.getLogger("filemem.collector")

#: Priority names, most urgent first; records are taken into batches in this order.
PRIORITIES: Final = ("high", "normal", "low")
_PRIO: Final = {name: i for i, name in enumerate(PRIORITIES)}
#: Most namespaces collect() keeps checked (past it the cache starts over).
_NAMESPACES_KEPT: Final = 4096


class Collector(FullQueue, JournalLoop, StatsView):
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
        #: Namespaces as callers pass them (a str, a tuple) -> normalized and checked: collect() looks
        #: them up without a call (most callers use a handful). Only hashable ones that passed the check.
        self._namespaces: dict[NamespaceLike, tuple[str, ...]] = {}
        self._codec = engine.codec
        takes = getattr(engine, "takes_undecoded", None)  # the file engine's; a server store's engine decodes
        self._undecoded = bool(takes is not None and takes())
        self.jid = f"j{os.getpid()}-{os.urandom(4).hex()}"
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)  # space freed / records finished
        self._seq = 0
        self._queued = 0  # queued and not yet finished
        # Queued, not yet journaled: their fields, or in a burst their journal frames (see _spool.Inbox).
        self._incoming = Inbox(self._codec.name if config.journal else None)
        # Journaled records wait here as (id, frame offset, size), not as objects (see _spool).
        self._ready: tuple[Spool, Spool, Spool] = (Spool(0), Spool(1), Spool(2))
        self._jbatch_min = math.inf  # lowest id the journal thread holds
        self._jgroup: Taken | None = None  # the group the journal thread holds
        self._inflight: list[Rec] = []  # the batch being applied
        self._inflight_lo: float = math.inf  # the lowest id in flight (set with the lock, as they are taken)
        #: Records being dropped (on_full="drop_oldest") whose letter is not written yet: seq -> journaled.
        self._dropping: dict[int, bool] = {}
        self._jwake = Bell()
        self._jbell = self._jwake.lock  # collect() reads whether it is rung without a call
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
        self._filling = False  # the apply thread waits for its batch to fill (see ApplyLoop._wake_applier)
        self._flushing = 0  # threads waiting in flush() (the apply thread yields less to them: see _apply)
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
        self._packer = TailPacker(self._codec.name)
        self._max_value_bytes = engine.max_value_bytes
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
        return self._collect(namespace, key, value, priority, True)  # (positional: no keyword parsing per call)

    async def acollect(self, namespace: NamespaceLike, key: str, value: Any, priority: str = "normal") -> int:
        """:meth:`collect` for asyncio: never blocks the event loop (with a full queue,
        ``on_full="block"`` waits and ``"drop_oldest"`` writes its dead letter in a worker thread).

        >>> op = await collector.acollect("agent-1/events", "ev-8", {"ok": True})  # doctest: +SKIP
        """
        try:
            return self._collect(namespace, key, value, priority, False)
        except WouldBlock:
            import asyncio  # noqa: PLC0415 - here: a process that never awaits need not load it

            return await asyncio.to_thread(self._collect, namespace, key, value, priority, True)

    def _collect(self, namespace: NamespaceLike, key: str, value: Any, prio_name: str, wait: bool) -> int:
        # The hot path of the package: every line here runs per record, in the
        # caller's thread, and a paced caller runs it with cold caches.
        if self._closed or self._fatal is not None or self._fork != _fork_generation[0]:
            self._check_usable()
        try:
            prio = _PRIO[prio_name]  # (no isinstance first: a try costs nothing until it raises)
        except (KeyError, TypeError):  # (TypeError: not hashable)
            raise InvalidValueError(f"priority must be one of {PRIORITIES}, not {prio_name!r}") from None
        try:
            ns = self._namespaces[namespace]  # checked before (one dict lookup, no call)
        except (KeyError, TypeError):  # (TypeError: a list, not hashable)
            ns = self._new_namespace(namespace)
        validate_key(key)
        t = type(value)
        if not (t is dict and _SCALAR_TYPES.issuperset(map(type, value.values()))) and t not in _SCALAR_TYPES:
            _check_depth(value)  # as put() does (a flat record or a scalar, checked here, needs no call)
        payload = self._codec.encode(value)
        if len(payload) > self._max_value_bytes:
            raise InvalidValueError(f"value encodes to {len(payload)} bytes; the limit is {self._max_value_bytes}")
        self._last_collect = ts = time.time()  # the apply thread yields the GIL only to paced callers
        inbox = self._incoming
        tail: bytes | None = None
        hot: Hot | None = None
        if self._journal is None:
            pass
        elif inbox.framed:
            # A burst outran the journal thread: the record is queued as its journal frame, all of
            # it but the id packed here, outside the lock (~100 bytes a record, not ~300).
            tail = self._packer.pack(ts, prio, ns, key, payload)
        else:
            # Queued as its fields; the journal thread packs the frame (off this path: issue 13).
            # A copy of the bytes: orjson's output object holds a ~4 KB allocation however short.
            hot = (ts, ns, key, bytes(memoryview(payload)))
        lock = self._lock
        while True:
            if not lock.acquire(blocking=False):
                # A writer thread holds it: ask it to hand the GIL over as soon as it lets go
                # (else it may run on for up to CPython's 5 ms switch interval while we wait).
                self._contended = True
                lock.acquire()
            try:
                if self._closed or self._fatal is not None:
                    self._check_usable()
                victim = self._make_room(wait) if self._queued >= self.config.max_queue else None
                if victim is None:
                    self._seq = seq = self._seq + 1
                    self._queued += 1
                    if hot is not None:
                        if not inbox.add_fields(seq, prio, hot):  # the inbox turned to frames since
                            inbox.add_tail(seq, prio, self._packer.pack(ts, prio, ns, key, payload))
                    elif tail is not None:
                        inbox.add_tail(seq, prio, tail)
                    else:
                        self._ready[prio].append(Rec(seq, prio, ts, ns, key, payload))
                    break
            finally:
                lock.release()
            # A record was pushed out to make room: its dead letter must be
            # durable before its id is retired (or a crash in between loses it).
            self._drop_durably(victim)
        if self._journal is not None:
            if self._jbell.locked():  # (else rung already, not yet heard: no call)
                self._jwake.ring()
        elif not self._awake.is_set() and (not self._filling or self._queued >= self.config.batch_size):
            self._awake.set()  # (not for each record while the apply thread waits for its batch to fill)
        return seq

    def _new_namespace(self, namespace: NamespaceLike) -> tuple[str, ...]:
        """``namespace`` normalized and checked (the same errors as every other call), kept for the next collect()."""
        ns = self._normalize(namespace)
        try:
            hash(namespace)
        except TypeError:
            return ns
        if len(self._namespaces) >= _NAMESPACES_KEPT:
            self._namespaces = {}
        self._namespaces[namespace] = ns
        return ns

    def _check_usable(self) -> None:
        if self._closed or self._fork != _fork_generation[0]:
            raise StoreClosedError(
                "collector is closed"
                if self._closed
                else "this collector belongs to the parent process: create a new one in the forked child"
            )
        if self._fatal is not None:
            raise StoreClosedError(f"collector writer stopped: {self._fatal!r}")

    # ------------------------------------------------------------------ flushing

    def _min_outstanding(self) -> float:
        low = min(self._jbatch_min, self._inflight_lo)
        head = self._incoming.head_seq()
        if head is not None:
            low = min(low, head)
        for q in self._ready:
            head = q.head_seq()
            if head is not None:
                low = min(low, head)
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
            self._flushing += 1  # before the wake: the apply thread stops waiting for its batch to fill
            self._awake.set()
            try:
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
            finally:
                self._flushing -= 1

    async def aflush(self, timeout: float | None = None) -> None:
        """:meth:`flush` for asyncio (waits in a worker thread).

        >>> await collector.aflush()  # doctest: +SKIP
        """
        import asyncio  # noqa: PLC0415 - here: a process that never awaits need not load it

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
        self._jwake.ring()
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
        import asyncio  # noqa: PLC0415 - here: a process that never awaits need not load it

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

    def __repr__(self) -> str:
        return f"Collector({self._engine.root!r}, jid={self.jid!r}, closed={self._closed})"


def _check_depth(value: Any) -> None:
    """Raise InvalidValueError for a value nested past MAX_DEPTH, as ``copy_value`` does; a flat one is not copied."""
    t = type(value)
    if t is dict:
        if _SCALAR_TYPES.issuperset(map(type, value.values())):
            return
    elif t is list and _SCALAR_TYPES.issuperset(map(type, value)):
        return
    copy_value(value)
