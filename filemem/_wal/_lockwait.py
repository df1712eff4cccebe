"""Waiting for a busy ``flock`` without polling (layer L2).

A try-lock loop that sleeps between tries (20 us doubling to 2 ms) wakes
late: with four processes taking the append lock for ~100 us each, a waiter
slept on average 600 us after the lock fell free (a profile of four writers
spent 2.3 of 3 seconds in ``time.sleep``). A blocking ``flock`` is woken by
the kernel the moment the holder unlocks, but it cannot time out and cannot
be cancelled, and the append lock must do both (``LockTimeout``; an
``AsyncStore`` caller's abort event).

So the blocking call runs in a helper thread, on a duplicate of the lock's
file descriptor (``flock`` belongs to the open file description, which the
duplicate shares: a lock taken through it is the caller's), while the caller
waits on a condition it can leave at its deadline or when aborted.

Invariant: the lock is held on a caller's behalf only when :meth:`acquire`
returned True; a lock the thread obtains after its caller gave up is released
at once (or handed to the next caller that asks while the thread still waits).

Example::

    waiter = FlockWaiter(fd)
    if _platform.lock(fd, exclusive=True, blocking=False) or waiter.acquire(5.0, lambda: None):
        ...  # held; release with _platform.unlock(fd)
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from . import _platform

__all__ = ["FlockWaiter"]

#: How often a waiting caller looks at its abort callback.
_ABORT_CHECK_S: Final = 0.01


class FlockWaiter:
    """One helper thread that blocks in ``flock(LOCK_EX)`` for one open file description."""

    def __init__(self, fd: int) -> None:
        self._fd = os.dup(fd)  # owned by the thread once it starts, else closed by close()
        self._cv = threading.Condition(threading.Lock())
        self._asked = False  # a caller wants the lock and the thread should (keep) block(ing) for it
        self._blocking = False  # the thread is inside flock
        self._want = False  # a caller is waiting right now
        self._granted = False
        self._error: OSError | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def acquire(self, timeout_s: float, check_abort: Callable[[], None]) -> bool:
        """Wait up to ``timeout_s`` for the lock; False on timeout. ``check_abort`` may raise to give up."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            if self._closed:
                raise RuntimeError("lock waiter is closed")
            self._want = True
            try:
                if not self._blocking:
                    self._asked = True
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._run, name="filemem-flock-wait", daemon=True)
                        self._thread.start()
                    self._cv.notify_all()
                while not self._granted:
                    if self._error is not None:
                        err, self._error = self._error, None
                        raise err
                    check_abort()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cv.wait(min(left, _ABORT_CHECK_S))
                self._granted = False
                return True
            finally:
                self._want = False

    def _run(self) -> None:
        fd = self._fd
        try:
            while True:
                with self._cv:
                    while not self._asked and not self._closed:
                        self._cv.wait()
                    if self._closed:
                        return
                    self._asked = False
                    self._blocking = True
                try:
                    _platform.lock(fd, exclusive=True, blocking=True)
                except OSError as exc:
                    with self._cv:
                        self._blocking = False
                        if self._want:  # told to the caller waiting now, never to a later one
                            self._error = exc
                            self._cv.notify_all()
                    continue
                with self._cv:
                    self._blocking = False
                    if self._want and not self._closed:
                        self._granted = True
                        self._cv.notify_all()
                        continue
                # Nobody waits any more (timed out, aborted, closed): let go at once.
                _platform.unlock(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Stop the thread (a thread still inside ``flock`` ends when it gets the lock, releasing it)."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            started = self._thread is not None
            self._cv.notify_all()
        if not started:
            os.close(self._fd)

    def forget(self) -> None:
        """In a forked child: drop the inherited descriptor without touching the parent's lock.

        The thread does not exist in the child (only the forking thread does),
        so the descriptor is the child's to close; closing one of several
        descriptors of an open file description leaves its ``flock`` alone.
        """
        self._closed = True
        with contextlib.suppress(OSError):
            os.close(self._fd)
