"""Compare-and-set retry for the adapters (layer L7): re-run a read-decide-commit until no conflict.

The invariant: ``attempt`` reads what it needs, decides, and commits with
``if_version`` on everything it read; a ``ConflictError`` means another
process committed first, so the whole attempt runs again on fresh reads.
Backoff is random, so processes that collided do not collide again in step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final, TypeVar

import filemem

__all__ = ["retry_conflicts"]

#: An attempt that keeps meeting conflicts for this long gives up (the last ConflictError is raised).
RETRY_DEADLINE_S: Final = 60.0
_FIRST_PAUSE_S: Final = 0.0005
_MAX_PAUSE_S: Final = 0.05

_T = TypeVar("_T")


def retry_conflicts(attempt: Callable[[], _T]) -> _T:
    """``attempt()``, run again after each ``ConflictError`` until it commits or the deadline passes.

    Example::

        def attempt() -> None:
            item = store.get_item(ns, "head", consistency="strict")
            store.put(ns, "head", bump(item), if_version=item.version if item else 0)

        retry_conflicts(attempt)
    """
    deadline = time.monotonic() + RETRY_DEADLINE_S
    pause = _FIRST_PAUSE_S
    while True:
        try:
            return attempt()
        except filemem.ConflictError:
            if time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not security
            pause = min(pause * 2, _MAX_PAUSE_S)
