"""The sessions of one store in one process: registry, slots and watcher together (layer L4)."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Final

from .._engine import SESSION_DIR
from .._errors import InvalidValueError, ReadOnlyError, StoreClosedError
from .._feed import Subscription
from .._types import Finding
from ._api import Releasable, SessionRegistry, SessionSlots
from ._checker import check_sessions
from ._confine import SessionStore, StoreLike, _Rules
from ._events import SessionWatcher
from ._record import SessionInfo, check_metadata
from ._registry import HOST, Registry
from ._session import Session
from ._slots import Slots, check_limit

__all__ = ["SessionHub"]

AGENT_MAX_CHARS: Final = 256
_PRIORITY_MAX: Final = 10**9
#: How long close() waits for threads waiting for a slot to give up (each looks every 10 ms).
_CLOSE_WAIT_S: Final = 5.0


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise InvalidValueError(f"timeout must be a number of seconds >= 0, or None, not {timeout!r}")
    return float(timeout)


class SessionHub:
    """Everything about sessions for one Store object."""

    def __init__(
        self,
        registry: SessionRegistry,
        slots: SessionSlots,
        *,
        readonly: bool,
        poll_interval_s: float,
        is_closed: Callable[[], bool],
        checker: Callable[[bool], list[Finding]],
        watcher_type: type[SessionWatcher] = SessionWatcher,
    ) -> None:
        self.readonly = readonly
        self.registry = registry
        self.slots = slots
        self._checker = checker
        self._watcher_type = watcher_type
        self._poll_interval_s = poll_interval_s
        self._is_closed = is_closed
        self._watcher: SessionWatcher | None = None
        #: Sessions this Store object started and that are still referenced; closed with the store.
        self._open: weakref.WeakSet[Session] = weakref.WeakSet()
        #: Set by close(): waiters give up and no session is handed over any more.
        self._closed = False
        #: Guards _closed, _open and _waiters (close() and a waiter taking its slot may race).
        self._cond = threading.Condition()
        self._waiters = 0

    @classmethod
    def on_files(
        cls,
        root: str,
        *,
        sync: bool,
        readonly: bool,
        lock_timeout_s: float,
        poll_interval_s: float,
        is_closed: Callable[[], bool],
    ) -> SessionHub:
        """The sessions of a store directory: ``<root>/sessions/`` (files and flock)."""
        directory = os.path.join(root, SESSION_DIR)
        registry = Registry(directory, sync=sync, readonly=readonly)
        return cls(
            registry,
            Slots(directory, sync=sync, lock_timeout_s=lock_timeout_s),
            readonly=readonly,
            poll_interval_s=poll_interval_s,
            is_closed=is_closed,
            checker=lambda fix: check_sessions(registry, fix=fix),
        )

    def check(self, fix: bool) -> list[Finding]:
        """Findings about the sessions' storage (see ``_checker`` for the file codes)."""
        return self._checker(fix)

    @property
    def watcher(self) -> SessionWatcher:
        """The session watcher (created on first use, started by its users)."""
        if self._watcher is None:
            self._watcher = self._watcher_type(
                self.registry, interval_s=self._poll_interval_s, is_closed=self._is_closed
            )
        return self._watcher

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyError(f"{what} needs a store opened read-write")

    def start(
        self,
        store: StoreLike,
        size_of: Callable[[Any], int],
        *,
        agent: str,
        priority: int,
        metadata: dict[str, Any] | None,
        namespace: tuple[str, ...] | None,
        shared: tuple[tuple[str, ...], ...],
        wait: bool,
        timeout: float | None,
        on_stop: Callable[[Session], object] | None,
    ) -> Session:
        """Register a session, wait for its slots, and hand it over running."""
        if not isinstance(agent, str) or not agent or len(agent) > AGENT_MAX_CHARS:
            raise InvalidValueError(f"agent must be a non-empty str of at most {AGENT_MAX_CHARS} characters")
        if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > _PRIORITY_MAX:
            raise InvalidValueError(f"priority must be an int within ±{_PRIORITY_MAX}, not {priority!r}")
        meta = check_metadata(metadata)
        wait_s = _check_timeout(timeout)
        if on_stop is not None and not callable(on_stop):
            raise InvalidValueError("on_stop must be callable")
        self._writable("store.session()")
        limited = bool(self.slots.scopes_for(namespace))
        now = time.time()
        info = SessionInfo(
            id=f"{time.time_ns():016x}{os.urandom(4).hex()}",
            agent=agent,
            pid=os.getpid(),
            host=HOST,
            registered_at=now,
            started_at=None if limited else now,
            state="waiting" if limited else "running",
            status="waiting" if limited else "started",
            progress=None,
            priority=priority,
            metadata=meta,
            namespace=namespace,
            shared=shared,
            heartbeat_at=now,
        )
        with self._cond:
            self._check_open()
            self._waiters += 1
        try:
            held = self.registry.create(info)
            slots: list[Releasable] = []
            if limited:
                try:
                    # The limits are re-read on every pass of the wait, and a
                    # close() of the store ends the wait (StoreClosedError).
                    slots, had_at = self.slots.acquire(
                        info.id,
                        priority,
                        namespace,
                        wait=wait,
                        timeout=wait_s,
                        alive=self.registry.probe,
                        is_closed=self._closing,
                    )
                    info = replace(info, state="running", status="started", started_at=had_at, heartbeat_at=time.time())
                    self.registry.write(info)
                except BaseException:
                    for slot in slots:
                        slot.release()
                    self.registry.discard(info.id, held)
                    raise
        finally:
            with self._cond:
                self._waiters -= 1
                self._cond.notify_all()
        rules = _Rules(info.id, namespace, shared)

        def make_store(s: Session) -> SessionStore:
            count, guard = s._hooks()
            return SessionStore(store, rules, count, size_of, guard)

        session = Session(
            self.registry,
            info,
            held,
            slots,
            make_store,
            on_stop,
            self._unwatch,
        )
        with self._cond:
            closed = self._closed
            if not closed:
                self._open.add(session)
        if closed:
            # close() ran while we took our slot: it could not end this session.
            session.close()
            self._check_open()
        if on_stop is not None:
            # Weakly: the watcher must not keep a dropped session (and its lock) alive.
            fire_ref = weakref.WeakMethod(session._fire_stop)

            def fire() -> None:
                method = fire_ref()
                if method is not None:
                    method()

            self.watcher.watch_stop(info.id, fire)
            # A session dropped without close() stops being watched when it goes.
            weakref.finalize(session, self._unwatch, info.id).atexit = False
        return session

    def _closing(self) -> bool:
        return self._closed or self._is_closed()

    def _check_open(self) -> None:
        if self._closing():
            raise StoreClosedError("the store is closed")

    def _unwatch(self, session_id: str) -> None:
        if self._watcher is not None:
            self._watcher.unwatch_stop(session_id)

    def sessions(self, alive: bool | None) -> list[SessionInfo]:
        """See Store.sessions."""
        return self.registry.list(alive=alive)

    def request_stop(self, session_id: str) -> bool:
        """See Store.request_stop."""
        self._writable("request_stop()")
        return self.registry.request_stop(session_id)

    def limit(self, scope: tuple[str, ...], max_sessions: int | None) -> None:
        """See Store.limit_sessions."""
        self._writable("limit_sessions()")
        self.slots.set_limit(scope, check_limit(max_sessions))

    def subscribe(
        self, callback: Callable[[Any], object] | None, max_queue: int, *, asynchronous: bool = False
    ) -> Subscription:
        """A subscription to session changes (callback or async iterator)."""
        watcher = self.watcher
        watcher.ensure_running()
        feed = watcher.feed
        if asynchronous:
            sub: Subscription = feed.subscribe_async((), max_queue)
        else:
            assert callback is not None
            sub = feed.subscribe(callback, (), max_queue)
        return sub

    def close(self) -> None:
        """End this store's open sessions and its waiting ones, stop the watcher (and its subscriptions).

        A thread waiting for a slot gives up (StoreClosedError) within one
        pass of its wait, leaving nothing behind; close() waits for that.
        """
        with self._cond:
            self._closed = True
            sessions = list(self._open)
        for session in sessions:
            session.close()
        with self._cond:
            self._cond.wait_for(lambda: self._waiters == 0, timeout=_CLOSE_WAIT_S)
        if self._watcher is not None:
            self._watcher.stop()


def normalize_shared(
    shared: Iterable[Any] | str | None, normalize: Callable[[Any], tuple[str, ...]]
) -> tuple[tuple[str, ...], ...]:
    """The read-only namespaces of a session, normalized (a single str is one namespace)."""
    if shared is None:
        return ()
    if isinstance(shared, str):
        return (normalize(shared),)
    return tuple(normalize(s) for s in shared)
