"""Fallback backend: poll the tree for changed shard files (layer L3).

Used where inotify is missing or its limits are reached. It costs a ``stat``
per directory per interval, plus a listing and a ``stat`` per file of each
directory whose mtime moved, so it is kept as a fallback, never a default.
"""

from __future__ import annotations

import os
import threading
from typing import Final

from .._fs import TEMP_MARK
from ._api import WatchSink

__all__ = ["PollingWatcher"]

_SHARD_SUFFIX: Final = ".shard"


class PollingWatcher:
    """Every ``interval_s``, find shard files whose (inode, mtime, size) changed, and whether ``signal`` did."""

    backend = "polling"

    def __init__(self, root: str, sink: WatchSink, interval_s: float = 0.05, signal: str | None = None) -> None:
        self.root = root
        self.sink = sink
        self.interval_s = interval_s
        self._signal = signal
        self._signal_key: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dir_keys: dict[str, int] = {}
        self._files: dict[str, tuple[int, int, int]] = {}
        self.events = 0
        self.rounds = 0

    def start(self) -> None:
        """Take a first snapshot, then poll in a thread."""
        self._scan(report=False)
        self._thread = threading.Thread(target=self._run, name="filemem-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._scan(report=True)
            except OSError:
                self.sink.events_lost()

    def _scan(self, *, report: bool) -> None:
        self.rounds += 1
        if self._signal is not None:
            # A writer touches the signal after each commit to the log.
            try:
                st = os.stat(self._signal)
                key: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            except FileNotFoundError:
                key = None
            if key != self._signal_key:
                self._signal_key = key
                if report:
                    self.sink.log_changed()
        seen_dirs = set()
        for dirpath, _dirs, _files in os.walk(self.root):
            seen_dirs.add(dirpath)
            try:
                mtime = os.stat(dirpath).st_mtime_ns
            except FileNotFoundError:
                continue
            # Renames and unlinks change the directory's mtime; a rewrite in
            # place does not, so files of quiet directories are still checked,
            # but only every few rounds.
            if self._dir_keys.get(dirpath) == mtime and report and self.rounds % 8:
                continue
            self._dir_keys[dirpath] = mtime
            self._scan_dir(dirpath, report=report)
        for gone in set(self._dir_keys) - seen_dirs:
            del self._dir_keys[gone]

    def _scan_dir(self, dirpath: str, *, report: bool) -> None:
        try:
            names = [n for n in os.listdir(dirpath) if n.endswith(_SHARD_SUFFIX) and TEMP_MARK not in n]
        except FileNotFoundError:
            return
        present = set()
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            present.add(path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._files.get(path) != key:
                self._files[path] = key
                if report:
                    self.events += 1
                    self.sink.shard_changed(dirpath, name, "written")
        prefix = dirpath + os.sep
        for path in [p for p in self._files if p.startswith(prefix) and os.sep not in p[len(prefix) :]]:
            if path not in present:
                del self._files[path]
                if report:
                    self.events += 1
                    self.sink.shard_changed(dirpath, os.path.basename(path), "deleted")
