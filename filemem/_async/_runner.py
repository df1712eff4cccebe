"""Running store calls off the event loop, bounded and cancellation-safe (layer L5).

Every call of the sync store runs whole, as one job, in a worker thread: the
lock wait, the read-modify-write, the fsyncs and the rename. That is the only
way to keep the guarantees of the sync store: the write sequence is a critical
section under a file lock, and a file lock held across ``await`` points would
be held by a coroutine that may never be resumed.

**Cancellation.** A thread cannot be killed, so a job is either never started
or run to its end. When the awaiting coroutine is cancelled:

* while it waits for a slot (the semaphore) or before its job started: the job
  is withdrawn and never runs; the coroutine raises ``CancelledError`` at once;
* once the job runs: its lock waits are aborted (``_locks.set_abort``): a job
  still waiting for a lock gives up holding nothing, having written nothing
  (a write takes every lock it needs before it writes a byte); a job past its
  waits runs to its end. The coroutine waits for that (shielded, absorbing
  further cancellations), then raises ``CancelledError``. So when a cancelled
  coroutine finishes, its thread holds no lock, has left no temp file (the
  engine removes its temps on every exit path) and will change nothing more:
  the store is in the old state or the new one, for good.

Jobs that release resources (closing a snapshot, shutting down) are never
withdrawn, only waited for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final, TypeVar

from .. import _locks
from .._errors import InvalidValueError, StoreClosedError

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "Runner", "finish"]

T = TypeVar("T")

#: Default limit on store operations in flight per AsyncStore. Each one holds a
#: worker thread (mostly asleep in fsync or a lock wait); past a few dozen,
#: more threads only add GIL contention on a small machine.
DEFAULT_MAX_IN_FLIGHT: Final = 16
#: Idle snapshot threads kept for reuse per store.
_SPARE_SNAPSHOT_POOLS: Final = 8
#: Snapshot threads started with the store, before any loop needs one.
_WARM_SNAPSHOT_POOLS: Final = 2


async def finish(
    pool: concurrent.futures.Executor,
    fn: Callable[..., T],
    *args: Any,
    withdraw: bool = True,
    **kwargs: Any,
) -> T:
    """Run ``fn(*args, **kwargs)`` in ``pool`` and await it without ever abandoning a running job.

    ``withdraw=False``: the job is never cancelled, even before it starts (for
    jobs that release what a cancelled task held).
    """
    abort = threading.Event()

    def job() -> T:
        _locks.set_abort(abort if withdraw else None)
        try:
            return fn(*args, **kwargs)
        finally:
            _locks.set_abort(None)

    try:
        cf = pool.submit(job)
    except RuntimeError as exc:  # the pool was shut down: the store closed meanwhile (another loop)
        raise StoreClosedError("async store is closed") from exc
    fut = asyncio.wrap_future(cf)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if withdraw:
            if cf.cancel():
                raise  # never started, never will: nothing happened
            abort.set()  # a lock wait gives up; past the waits, the job completes
        # Running (or must run): a thread cannot be stopped. Wait for the end,
        # whatever further cancellations arrive, so nothing stays held.
        while not fut.done():
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                continue
            except BaseException:
                break
        if not fut.cancelled():
            fut.exception()  # mark it retrieved: the caller asked to cancel, not for the outcome
        raise


class Runner:
    """The worker threads, the in-flight limit and the queue figures of one AsyncStore."""

    def __init__(self, max_in_flight: int) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise InvalidValueError(f"max_in_flight must be a positive int, not {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        # One worker per slot: a job never queues behind the pool, only behind
        # the semaphore, where it can still be withdrawn.
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="filemem-aio")
        # Start every worker now. Started lazily, they would be started by the
        # loop thread in the first burst of calls, and Thread.start() waits
        # until the new thread runs: under GIL contention that is a stall of
        # the loop per thread (measured: ~100 ms for 16 threads, 4 processes
        # on 2 cores).
        gate = threading.Barrier(max_in_flight + 1)
        for _ in range(max_in_flight):
            self.pool.submit(gate.wait)
        gate.wait()
        # Idle threads reserved for snapshots (see AsyncSnapshot), reused
        # for the same reason.
        self.spare_snapshot_pools: list[concurrent.futures.ThreadPoolExecutor] = []
        for _ in range(_WARM_SNAPSHOT_POOLS):
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="filemem-aio-snap")
            pool.submit(int).result()
            self.spare_snapshot_pools.append(pool)
        # asyncio primitives belong to one loop; a store may be used from
        # several (asyncio.run twice, or loops in several threads).
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = threading.Lock()  # counters may be touched from several loops' threads
        self.closed = False
        self.waiting = 0
        self.in_flight = 0
        self.peak_depth = 0
        self.ops = 0
        self.withdrawn = 0
        self.cancelled_running = 0
        self.snapshots_open = 0

    def _sem(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            with self._guard:
                sem = self._sems.get(loop)
                if sem is None:
                    sem = self._sems[loop] = asyncio.Semaphore(self.max_in_flight)
        return sem

    def _count(self, waiting: int = 0, in_flight: int = 0) -> None:
        with self._guard:
            self.waiting += waiting
            self.in_flight += in_flight
            depth = self.waiting + self.in_flight
            self.peak_depth = max(self.peak_depth, depth)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one store call in a worker thread once a slot is free."""
        if self.closed:
            raise StoreClosedError("async store is closed")
        sem = self._sem()
        self._count(waiting=1)
        try:
            await sem.acquire()
        except asyncio.CancelledError:
            with self._guard:
                self.withdrawn += 1
            raise
        finally:
            self._count(waiting=-1)
        try:
            if self.closed:
                raise StoreClosedError("async store is closed")
            self._count(in_flight=1)
            try:
                with self._guard:
                    self.ops += 1
                return await finish(self.pool, fn, *args, **kwargs)
            except asyncio.CancelledError:
                with self._guard:
                    self.cancelled_running += 1
                raise
            finally:
                self._count(in_flight=-1)
        finally:
            sem.release()

    async def run_owned(self, fn: Callable[..., T], close: Callable[[T], object], *args: Any, **kwargs: Any) -> T:
        """:meth:`run` for a call that creates something to close (a collector, a subscription).

        A thread cannot be stopped, so a call cancelled while running still
        completes; its result is then nobody's. Close it (never withdrawn)
        before the caller sees ``CancelledError``, or it would keep threads,
        locks and files alive for good.
        """
        made: list[T] = []

        def job() -> T:
            got = fn(*args, **kwargs)
            made.append(got)
            return got

        try:
            return await self.run(job)
        except asyncio.CancelledError:
            if made:
                await finish(self.pool, close, made[0], withdraw=False)
            raise

    def snapshot_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """A one-thread pool reserved for one snapshot (an idle one if any)."""
        with self._guard:
            self.snapshots_open += 1
            if self.spare_snapshot_pools:
                return self.spare_snapshot_pools.pop()
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="filemem-aio-snap")

    def return_snapshot_pool(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        """Keep an idle snapshot pool for the next snapshot, or stop it."""
        with self._guard:
            self.snapshots_open -= 1
            if not self.closed and len(self.spare_snapshot_pools) < _SPARE_SNAPSHOT_POOLS:
                self.spare_snapshot_pools.append(pool)
                return
        pool.shutdown(wait=False)

    def stats(self) -> dict[str, int]:
        """Queue figures: ``queue_depth`` is waiting plus in flight, right now."""
        with self._guard:
            return {
                "max_in_flight": self.max_in_flight,
                "in_flight": self.in_flight,
                "waiting": self.waiting,
                "queue_depth": self.in_flight + self.waiting,
                "peak_queue_depth": self.peak_depth,
                "ops": self.ops,
                "cancelled_before_start": self.withdrawn,
                "cancelled_while_running": self.cancelled_running,
                "snapshots_open": self.snapshots_open,
            }

    def stop_now(self) -> None:
        """Stop the idle threads of a runner whose store failed to open."""
        self.closed = True
        self.pool.shutdown(wait=False)
        spare, self.spare_snapshot_pools = self.spare_snapshot_pools, []
        for pool in spare:
            pool.shutdown(wait=False)

    async def close(self, last: Callable[[], None]) -> None:
        """Refuse new jobs, wait for the running ones, run ``last`` (closing the store), stop the threads."""
        if self.closed:
            return
        self.closed = True

        def drain_and_close() -> None:
            # Waiting for the pool from a thread of its own: the loop keeps running.
            self.pool.shutdown(wait=True)
            spare, self.spare_snapshot_pools = self.spare_snapshot_pools, []
            for pool in spare:
                pool.shutdown(wait=True)
            last()

        closer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="filemem-aio-close")
        try:
            await finish(closer, drain_and_close, withdraw=False)
        finally:
            closer.shutdown(wait=False)
