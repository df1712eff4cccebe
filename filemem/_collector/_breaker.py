"""Retry delays and the circuit breaker of the collector's writer (layer L4).

The breaker stops the writer hammering a store that keeps failing::

    closed --(breaker_threshold failures in a row)--> open
    open   --(breaker_reset seconds)----------------> half-open (one trial batch)
    half-open --(trial succeeds)--> closed      --(trial fails)--> open

While open, no batch is attempted; records wait in the queue (and journal).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker", "backoff_delay"]

BreakerState = Literal["closed", "open", "half-open"]


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``.

    Full jitter keeps many collectors that failed together from retrying in step.
    """
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 32))))


class CircuitBreaker:
    """Closed / open / half-open, with counts for health reports. Thread-safe."""

    def __init__(self, threshold: int, reset_s: float) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self.opened_count = 0
        self.last_error = ""

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose time is up reads as half-open)."""
        with self._lock:
            if self._state == "open" and time.monotonic() - self._opened_at >= self.reset_s:
                self._state = "half-open"
            return self._state

    def state_nolock(self) -> BreakerState:
        """The state last set, read without the lock (for a forked child, where
        a parent thread may have held the lock at fork time)."""
        return self._state

    def wait_s(self) -> float:
        """Seconds until a batch may be tried (0: now)."""
        with self._lock:
            if self._state != "open":
                return 0.0
            return max(0.0, self.reset_s - (time.monotonic() - self._opened_at))

    def success(self) -> None:
        """A batch applied: close."""
        with self._lock:
            self._state = "closed"
            self._failures = 0

    def failure(self, error: str) -> None:
        """A batch failed: open after ``threshold`` in a row, or at once from half-open."""
        with self._lock:
            self.last_error = error
            self._failures += 1
            if self._state == "half-open" or self._failures >= self.threshold:
                if self._state != "open":
                    self.opened_count += 1
                self._state = "open"
                self._opened_at = time.monotonic()
