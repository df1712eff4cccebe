"""Watching a store for changes made by other processes (layer L3).

One file per mechanism: ``_api`` (the contract), ``_inotify`` (Linux, through
watchdog's inotify wrapper), ``_polling`` (everywhere else, and the
fallback). :func:`start_watcher` chooses, and falls back to polling with a
warning when native watching is impossible; it never raises for that.
"""

from __future__ import annotations

import errno
import sys
import warnings

from ._api import ShardEventKind, Watcher, WatchSink
from ._polling import PollingWatcher

__all__ = ["FileMemWatchWarning", "ShardEventKind", "WatchSink", "Watcher", "start_watcher"]


class FileMemWatchWarning(RuntimeWarning):
    """Native file-system events are unavailable; filemem polls instead."""


def start_watcher(
    root: str, sink: WatchSink, *, mode: str = "auto", poll_interval_s: float = 0.05, signal: str | None = None
) -> Watcher:
    """Start the best available watcher for ``root`` (``mode``: "auto", "native", "polling").

    ``signal``: a file under ``root`` touched after each commit to the
    write-ahead log; its changes are reported as ``sink.log_changed()``.
    """
    if mode in ("auto", "native") and sys.platform.startswith("linux"):
        try:
            from ._inotify import InotifyWatcher, WatchLimitError  # noqa: PLC0415 - Linux only
        except ImportError as exc:  # pragma: no cover - watchdog without inotify support
            reason = f"watchdog's inotify support is unavailable ({exc})"
        else:
            watcher = InotifyWatcher(root, sink, signal)
            try:
                watcher.start()
            except WatchLimitError as exc:
                # EMFILE: too many inotify instances for this user (one per
                # open store with a watcher); ENOSPC: too many watches.
                knob = "max_user_instances" if exc.errno == errno.EMFILE else "max_user_watches"
                reason = f"{exc} (raise fs.inotify.{knob})"
            else:
                return watcher
    else:
        reason = "native events are implemented for Linux (inotify) only" if mode != "polling" else ""
    if reason:
        warnings.warn(
            f"filemem: cannot watch {root} natively: {reason}; polling every {poll_interval_s * 1000:.0f} ms",
            FileMemWatchWarning,
            stacklevel=3,
        )
    poller = PollingWatcher(root, sink, poll_interval_s, signal)
    poller.start()
    return poller
