"""A live session: the owner's handle (layer L4)."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from .._errors import InvalidValueError, StoreClosedError
from ._api import Releasable, SessionRegistry
from ._confine import SessionStore
from ._record import SessionInfo, check_progress

__all__ = ["Session"]

#: The record's live figures (operations, bytes written) are rewritten at most this often.
FIGURES_EVERY_S: Final = 0.5
STATUS_MAX_CHARS: Final = 1024


class Session:
    """A registered session that every process can see; made by :meth:`filemem.Store.session`.

    It holds a lock on its own file for as long as it lives, so other
    processes see it alive exactly while this process holds it; if the
    process dies, even by SIGKILL, the next look sees it dead. ``close()``
    (or leaving the ``with`` block) marks it ended and frees its slot.

    Example::

        with store.session(agent="worker-3", priority=5, metadata={"task": "crawl"}) as s:
            s.set_status("running", progress=0.4)
            s.store.put("worker-3", "page-1", {"ok": True})   # counted in s.info().operations
            if s.stop_requested:
                ...  # another process called store.request_stop(s.id)
    """

    def __init__(
        self,
        registry: SessionRegistry,
        info: SessionInfo,
        held: Releasable,
        slots: list[Releasable],
        make_store: Callable[[Session], SessionStore],
        on_stop: Callable[[Session], object] | None,
        unwatch: Callable[[str], None],
    ) -> None:
        self._registry = registry
        self._info = info
        self._held = held
        self._slots = slots
        self._on_stop = on_stop
        self._unwatch = unwatch
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._stop_seen = False
        self._last_flush = time.monotonic()
        self._dirty = False
        self._store = make_store(self)

    # ------------------------------------------------------------------ identity

    @property
    def id(self) -> str:
        """The session id (hex; sorts by start time)."""
        return self._info.id

    @property
    def agent(self) -> str:
        """The agent name given at start."""
        return self._info.agent

    @property
    def closed(self) -> bool:
        """Whether ``close()`` ran."""
        return self._closed

    @property
    def store(self) -> SessionStore:
        """This session's view of the store: confined to its namespaces, counted in its figures."""
        self._own()
        return self._store

    @property
    def operations(self) -> int:
        """Calls made through ``store`` so far (this process's count, ahead of the record)."""
        return self._info.operations

    @property
    def bytes_written(self) -> int:
        """Encoded bytes of the values written through ``store`` so far."""
        return self._info.bytes_written

    def info(self) -> SessionInfo:
        """The session as other processes see it now (read from its record)."""
        self._own()
        got = self._registry.look(self.id)
        return got if got is not None else replace(self._info, alive=False)

    def _hooks(self) -> tuple[Callable[[int], None], Callable[[], None]]:
        """The facade's counter and guard. They hold this session weakly: a
        strong reference (a bound method) would make a cycle, and a session
        dropped without close() would keep its lock and slot until the cyclic
        garbage collector ran, instead of the moment its last reference goes."""
        ref = weakref.ref(self)
        session_id = self.id

        def count(nbytes: int) -> None:
            session = ref()
            if session is not None:
                session._count(nbytes)

        def guard() -> None:
            session = ref()
            if session is None:
                raise StoreClosedError(f"session {session_id} was dropped without close()")
            session._own()

        return count, guard

    def _own(self) -> None:
        if self._pid != os.getpid():
            raise StoreClosedError(f"session {self.id} belongs to process {self._pid}; a forked child does not hold it")
        if self._closed:
            raise StoreClosedError(f"session {self.id} is closed")

    # ------------------------------------------------------------------ updates

    def set_status(self, status: str, progress: float | None = None) -> None:
        """Record what the session is doing; every process sees the new record at once, whole.

        >>> s.set_status("running", progress=0.4)  # doctest: +SKIP
        """
        if not isinstance(status, str) or not status or len(status) > STATUS_MAX_CHARS:
            raise InvalidValueError(f"status must be a non-empty str of at most {STATUS_MAX_CHARS} characters")
        value = check_progress(progress)
        with self._lock:
            self._own()
            self._info = replace(self._info, status=status, progress=value, heartbeat_at=time.time())
            self._registry.write(self._info)
            self._last_flush = time.monotonic()
            self._dirty = False

    def _count(self, nbytes: int) -> None:
        """One operation through ``store`` (called by the facade)."""
        with self._lock:
            self._info = replace(
                self._info, operations=self._info.operations + 1, bytes_written=self._info.bytes_written + nbytes
            )
            self._dirty = True
            if time.monotonic() - self._last_flush >= FIGURES_EVERY_S and not self._closed:
                self._info = replace(self._info, heartbeat_at=time.time())
                # Figures are for display: not worth an fsync per refresh.
                self._registry.write(self._info, sync=False)
                self._last_flush = time.monotonic()
                self._dirty = False

    # ------------------------------------------------------------------ stop

    @property
    def stop_requested(self) -> bool:
        """Whether any process called ``store.request_stop(self.id)`` (one ``stat``; poll it)."""
        if self._stop_seen:
            return True
        if self._closed:
            return False
        self._stop_seen = self._registry.stop_requested(self.id)
        return self._stop_seen

    def _fire_stop(self) -> None:
        """On the session watcher's thread: a stop was requested."""
        self._stop_seen = True
        if self._on_stop is not None and not self._closed:
            self._on_stop(self)

    # ------------------------------------------------------------------ end

    def close(self) -> None:
        """Mark the session ended, free its slot and its lock. Idempotent.

        In a forked child it does nothing: the session is the parent's.
        """
        if self._pid != os.getpid():
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._unwatch(self.id)
            now = time.time()
            self._info = replace(self._info, state="ended", ended_at=now, heartbeat_at=now)
            try:
                self._registry.finish(self._info, self._held)
            finally:
                for slot in self._slots:
                    slot.release()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session({self.id!r}, agent={self.agent!r}, closed={self._closed})"
