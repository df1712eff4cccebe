"""Session changes as a change feed, and stop requests delivered to callbacks (layer L4).

The store's file-system watcher reports shard files only, and a death is no
file event at all (the kernel just drops a lock). So one thread per Store and
process polls ``sessions/``: a ``stat`` of the directory every interval (a
record is replaced by rename, which moves the directory's mtime), a read of
the records that changed, and a shared-lock probe of every session it last saw
alive, which is how a SIGKILLed session is reported ended within one interval.
The same thread checks the stop files of this process's sessions that asked
for an ``on_stop`` callback. It starts on first need and ends when the store
is closed (within one interval).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from .. import _fs
from .._feed import Change, ChangeFeed, ChangeKind
from ._api import SessionRegistry
from ._record import FINAL_STATES, RECORD_SUFFIX, SessionInfo, record_path

__all__ = ["SessionWatcher"]

log = logging.getLogger("filemem.sessions")

_STOP_TIMEOUT_S: Final = 5.0
#: A directory whose mtime is this recent is listed again next round: its
#: mtime comes from a coarse clock, so a rename in the same tick as our last
#: look would not move it ("racily clean", as git calls it).
_RACY_NS: Final = 50_000_000


class SessionFeed(ChangeFeed):
    """The subscriptions of session changes (same Subscription machinery as the shard feed)."""

    def emit(self, change: Change) -> None:
        """Offer ``change`` to every subscriber (on the watcher's thread; never blocks)."""
        self.published += 1
        for sub in self._subs:
            sub.offer(change)


class SessionWatcher:
    """Polls one store's ``sessions/`` directory for starts, changes, ends and stop requests."""

    def __init__(self, registry: SessionRegistry, *, interval_s: float, is_closed: Callable[[], bool]) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._is_closed = is_closed
        self.feed = SessionFeed("")
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._pid = os.getpid()
        self._known: dict[str, tuple[_fs.StatKey, SessionInfo]] = {}
        self._dir_mtime = -1
        self._stop_watch: dict[str, Callable[[], None]] = {}
        self.rounds = 0

    # ------------------------------------------------------------------ control

    def ensure_running(self) -> None:
        """Start the thread if it is not running in this process."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's thread did not come along.
                self._pid = os.getpid()
                self._thread = None
                self._halt = threading.Event()
                self.feed = SessionFeed("")
                self._stop_watch = {}
            if self._thread is not None:
                return
            self._scan(report=False)
            self._thread = threading.Thread(target=self._run, name="filemem-sessions", daemon=True)
            self._thread.start()

    def watch_stop(self, session_id: str, fire: Callable[[], None]) -> None:
        """Call ``fire()`` (once) when a stop is requested for this process's session."""
        with self._lock:
            self._stop_watch[session_id] = fire
        self.ensure_running()

    def unwatch_stop(self, session_id: str) -> None:
        """Stop watching a session that closed."""
        with self._lock:
            self._stop_watch.pop(session_id, None)

    def stop(self) -> None:
        """End the thread and every subscription."""
        self._halt.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_STOP_TIMEOUT_S)
        self.feed.close()

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        while not self._halt.wait(self.interval_s):
            if self._is_closed():
                break
            try:
                self._scan(report=True)
                self._check_stops()
            except Exception:
                # A vanished directory or a transient I/O error must not kill
                # the thread; subscribers are told to re-read.
                log.warning(
                    "session watcher of %s: a scan failed; subscribers are told to re-read",
                    self.registry.dir,
                    exc_info=True,
                )
                self.feed.publish_missed()
        self._halt.set()
        self.feed.close()

    def _check_stops(self) -> None:
        with self._lock:
            watched = list(self._stop_watch.items())
        for session_id, fire in watched:
            if self.registry.stop_requested(session_id):
                with self._lock:
                    self._stop_watch.pop(session_id, None)
                try:
                    fire()
                except Exception:  # a failing callback must not stop the thread
                    log.exception("on_stop callback of session %s raised", session_id)

    def _emit(self, kind: ChangeKind, info: SessionInfo) -> None:
        path = record_path(self.registry.dir, info.id)
        self.feed.emit(Change(info.namespace or (), "", kind, time.time(), (info.id,), path))

    def _scan(self, *, report: bool) -> None:
        self.rounds += 1
        directory = self.registry.dir
        try:
            mtime = os.stat(directory).st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        now = time.time()
        if mtime != self._dir_mtime or time.time_ns() - mtime < _RACY_NS:
            self._dir_mtime = mtime
            names = {
                n[: -len(RECORD_SUFFIX)]
                for n in _fs.listdir(directory)
                if n.endswith(RECORD_SUFFIX) and _fs.TEMP_MARK not in n
            }
            for gone in set(self._known) - names:
                _key, old = self._known.pop(gone)
                if report and old.state not in FINAL_STATES:
                    self._emit("session-ended", old)
            for session_id in names:
                self._refresh(session_id, report=report)
        # A death is no file event: probe whoever we last saw alive.
        for session_id, (_key, info) in list(self._known.items()):
            if info.state not in FINAL_STATES and not self.registry.probe(session_id):
                settled = self.registry.look(session_id, now=now)
                self._refresh(session_id, report=report, settled=settled)

    def _refresh(self, session_id: str, *, report: bool, settled: SessionInfo | None = None) -> None:
        path = record_path(self.registry.dir, session_id)
        try:
            key = _fs.stat_key(os.stat(path))
        except FileNotFoundError:
            old_entry = self._known.pop(session_id, None)
            if report and old_entry is not None and old_entry[1].state not in FINAL_STATES:
                self._emit("session-ended", old_entry[1])
            return
        old = self._known.get(session_id)
        if old is not None and old[0] == key:
            return
        info = settled if settled is not None else self.registry.read(session_id)
        if info is None:
            return  # unreadable: check() reports it
        self._known[session_id] = (key, info)
        if not report:
            return
        final = info.state in FINAL_STATES
        if old is None:
            self._emit("session-ended" if final else "session-started", info)
        elif final and old[1].state not in FINAL_STATES:
            self._emit("session-ended", info)
        elif not final:
            self._emit("session-changed", info)
