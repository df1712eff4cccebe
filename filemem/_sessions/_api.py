"""What the session machinery needs of where sessions live: a registry and slots (layer L4).

Invariant: ``SessionHub``, ``Session`` and ``SessionWatcher`` reach session
storage only through these Protocols, so the same code runs sessions in a
store directory (``_registry``/``_slots``: files and flock) and on a
PostgreSQL server (``filemem._backends.postgres._sessions``: tables and
advisory locks). Whatever implements them keeps the same promises: a
session is alive exactly while its owner holds its liveness lock; a record
is never seen before that lock is held; a dead owner's record is marked
``crashed`` by whoever looks next; slots are taken all at once or not at
all, under a per-scope gate, in priority order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ._record import SessionInfo

__all__ = ["Releasable", "SessionRegistry", "SessionSlots"]

Scope = tuple[str, ...]


class Releasable(Protocol):
    """A lock a session holds (its liveness lock, a slot): ``release()`` is idempotent."""

    def release(self) -> None: ...


class SessionRegistry(Protocol):
    """Session records and liveness (see ``_registry.Registry`` for the file form)."""

    #: Where the sessions live, for messages (a directory, or a server location).
    dir: str
    readonly: bool

    def create(self, info: SessionInfo) -> Releasable: ...
    def write(self, info: SessionInfo, *, sync: bool | None = None) -> None: ...
    def finish(self, info: SessionInfo, held: Releasable) -> None: ...
    def discard(self, session_id: str, held: Releasable) -> None: ...
    def stop_requested(self, session_id: str) -> bool: ...
    def read(self, session_id: str) -> SessionInfo | None: ...
    def probe(self, session_id: str) -> bool: ...
    def look(self, session_id: str, *, now: float | None = None) -> SessionInfo | None: ...
    def list(self, *, alive: bool | None) -> list[SessionInfo]: ...
    def request_stop(self, session_id: str) -> bool: ...


class SessionSlots(Protocol):
    """Limits, slots and the waiting room (see ``_slots.Slots`` for the file form)."""

    def limits(self) -> dict[Scope, int]: ...
    def set_limit(self, scope: Scope, max_sessions: int | None) -> None: ...
    def scopes_for(self, namespace: Scope | None) -> list[tuple[Scope, int]]: ...
    def acquire(
        self,
        session_id: str,
        priority: int,
        namespace: Scope | None,
        *,
        wait: bool,
        timeout: float | None,
        alive: Callable[[str], bool],
        is_closed: Callable[[], bool] = ...,
    ) -> tuple[list[Releasable], float]: ...
