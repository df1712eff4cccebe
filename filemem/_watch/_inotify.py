"""Linux backend: inotify through watchdog's ``InotifyFD`` (layer L3).

We use watchdog's inotify wrapper directly rather than its ``Observer``:
the observer in watchdog 7 shares one process-wide inotify thread that
outlives every observer (a leaked thread after ``Store.close()``), hides
queue overflows from handlers, and adds a dispatch hop. A private
``InotifyFD`` per store gives raw events in tens of microseconds, an
``on_queue_overflow`` callback, and a thread we stop and join.
"""

from __future__ import annotations

import os
import threading
from typing import Final

from watchdog.observers.inotify_c import CallbackId, InotifyConstants, InotifyEvent, InotifyFD, Mask

from .._fs import TEMP_MARK
from ._api import WatchSink

__all__ = ["InotifyWatcher", "WatchLimitError"]

_SHARD_SUFFIX: Final = ".shard"
_MASK: Final = Mask(
    InotifyConstants.IN_MOVED_TO
    | InotifyConstants.IN_MOVED_FROM
    | InotifyConstants.IN_CREATE
    | InotifyConstants.IN_DELETE
    | InotifyConstants.IN_CLOSE_WRITE
    | InotifyConstants.IN_DELETE_SELF
    | InotifyConstants.IN_ATTRIB  # the commit signal (see InotifyWatcher)
    | InotifyConstants.IN_ONLYDIR
)
_STOP_TIMEOUT_S: Final = 5.0


def _release_after_exit(fd: InotifyFD) -> None:
    """Close the inotify descriptor that watchdog left open when its thread exited.

    watchdog's ``close()`` (7.1.0 and 7.1.1) leaves the closing to the reader
    thread whenever it believes that thread is reading (``_is_reading``, true
    from construction); a thread stopped between two reads, or before its
    first, leaves its loop without reading again, so the descriptor and its
    wake-up pipe stay open: one leaked inotify instance per stopped store,
    until the per-user limit (128 by default) refuses new ones. Once the
    thread has exited nothing else will close them, so we do, under watchdog's
    own lock, exactly when ``close()`` deferred to a reader that never came.
    """
    if fd.is_alive():
        return  # still running: it closes them itself when it wakes
    lock = getattr(fd, "_lock", None)
    if lock is None or not hasattr(fd, "_is_reading") or not hasattr(fd, "_close_resources"):
        return  # a watchdog we do not know the insides of
    with lock:
        if fd._is_reading:
            fd._is_reading = False
            fd._close_resources()


class WatchLimitError(OSError):
    """inotify could not add a watch (watch or instance limit reached)."""


class InotifyWatcher:
    """Watches ``root`` and every directory below it; reports shard files to ``sink``.

    ``signal``: a file whose timestamps a writer touches after each commit to
    the write-ahead log (an IN_ATTRIB event); reported as ``log_changed``.
    """

    backend = "inotify"

    def __init__(self, root: str, sink: WatchSink, signal: str | None = None) -> None:
        self.root = root
        self.sink = sink
        self._signal = os.path.split(signal) if signal is not None else None
        self._fd: InotifyFD | None = None
        self._dirs: dict[int, str] = {}
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self.events = 0
        self.overflows = 0

    def start(self) -> None:
        """Create the inotify instance, watch the tree, start its thread."""
        try:
            self._fd = InotifyFD()
        except OSError as exc:
            raise WatchLimitError(exc.errno, f"inotify unavailable: {exc}") from exc
        self._fd.start()
        try:
            self._watch_tree(self.root)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the thread and release the inotify instance."""
        fd, self._fd = self._fd, None
        if fd is not None:
            fd.stop()
            fd.join(_STOP_TIMEOUT_S)
            _release_after_exit(fd)

    def _watch_tree(self, top: str) -> None:
        # Watch a directory *before* listing it: a subdirectory created after
        # the listing then produces an event (which watches it), and one
        # created before is in the listing. Listing first would lose the gap.
        pending = [top]
        while pending:
            directory = pending.pop()
            self._watch(directory)
            try:
                entries = list(os.scandir(directory))
            except OSError:
                # Gone, or unreadable now (EIO): its changes go unseen, which
                # the cache TTL and the stat check already cover.
                continue
            pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))

    def _watch(self, directory: str) -> None:
        fd = self._fd
        if fd is None:
            return
        with self._lock:
            if directory in self._watched:
                return  # a create event for a directory our scan already found
            self._watched.add(directory)
        try:
            wd = fd.add_callback(os.fsencode(directory), _MASK, self, CallbackId(id(self)))
        except FileNotFoundError:
            with self._lock:
                self._watched.discard(directory)
            return
        except OSError as exc:
            with self._lock:
                self._watched.discard(directory)
            raise WatchLimitError(exc.errno, f"cannot watch {directory}: {exc}") from exc
        with self._lock:
            self._dirs[wd] = directory

    # --- watchdog's WatchCallback protocol, called on the inotify thread ---

    def on_event(self, event: InotifyEvent) -> None:
        """Translate one raw event; never lets an error kill the inotify thread."""
        try:
            self._on_event(event)
        except Exception:
            # Whatever went wrong, the cache must not trust what it holds.
            self.sink.events_lost()

    def _on_event(self, event: InotifyEvent) -> None:
        self.events += 1
        with self._lock:
            directory = self._dirs.get(event.wd)
        if directory is None or not event.name:
            return
        name = os.fsdecode(event.name)
        if self._signal is not None and name == self._signal[1] and directory == self._signal[0]:
            self.sink.log_changed()
            return
        if event.is_directory:
            if event.is_create or event.is_moved_to:
                # A new namespace directory: watch it, and catch up on what was
                # created in it before the watch existed.
                path = os.path.join(directory, name)
                try:
                    self._watch_tree(path)
                except WatchLimitError:
                    self.sink.events_lost()
                    return
                for dirpath, _dirs, files in os.walk(path):
                    for f in files:
                        if f.endswith(_SHARD_SUFFIX) and TEMP_MARK not in f:
                            self.sink.shard_changed(dirpath, f, "written")
            return
        if not name.endswith(_SHARD_SUFFIX) or TEMP_MARK in name or event.is_attrib:
            return
        if event.is_moved_to or event.is_close_write or event.is_create:
            self.sink.shard_changed(directory, name, "written")
        elif event.is_delete or event.is_moved_from:
            self.sink.shard_changed(directory, name, "deleted")

    def on_watch_deleted(self, wd: int) -> None:
        """A watched directory went away."""
        with self._lock:
            gone = self._dirs.pop(wd, None)
            if gone is not None:
                self._watched.discard(gone)

    def on_queue_overflow(self) -> None:
        """The kernel dropped events (watchdog calls on_events_lost next)."""
        self.overflows += 1

    def on_events_lost(self) -> None:
        """Every watch has recovered from an overflow: distrust the cache now.

        watchdog (7.1+) calls this after on_queue_overflow has returned for
        every callback, so a rescan the sink starts sees repaired watches.
        """
        self.sink.events_lost()
