"""Finding locks that writers cannot get: a cheap, honest probe (layer L5).

A file lock carries no timestamp, so "held for how long" cannot be read from
it. What can be measured is what a writer would experience: **whether the
lock can be taken within a short window**. The probe:

1. lists every shard lock file and tries each once without waiting (one
   system call each, as ``filemem stats`` does) — almost always every lock
   is free, and the probe ends here;
2. polls the locks that were busy, all together, every few milliseconds for
   ``window_s`` (0.5 s by default), releasing each at once when it is had;
3. reports each lock it never had in that window. A writer of that shard is
   waiting at least as long, whether one holder is stuck (a slow ``update``
   function, a hung process, a long snapshot) or writers are queueing.
   On Linux the holders' pids are read from ``/proc/locks`` at both ends of
   the window; the same pid at both ends points at one long holder.

The probe takes each lock exclusively for an instant when it is free, which
delays a writer arriving in that instant by the same instant; it never waits
in a way that could hold a writer up for longer than one poll.
"""

from __future__ import annotations

import os
import time
from typing import Final

from .. import _fs, _locks
from .._engine import Engine
from .._shard import LOCK_SUFFIX
from ._types import HealthFinding

__all__ = ["LOCK_WINDOW_S", "free_now", "holders", "lock_findings"]

#: How long a busy lock is polled before it counts as held unusually long.
LOCK_WINDOW_S: Final = 0.5
_POLL_S: Final = 0.005
#: At most this many busy locks are watched through the window (a store under
#: load has many held for an instant at any moment; each costs a poll).
_MAX_WATCHED: Final = 64
_PROC_LOCKS: Final = "/proc/locks"


def _shard_locks(engine: Engine) -> list[str]:
    out: list[str] = []
    for directory, _namespace in engine.namespace_dirs():
        for name in _fs.listdir(directory):
            if name.startswith("s") and name.endswith(LOCK_SUFFIX):
                out.append(os.path.join(directory, name))
    return out


def free_now(path: str) -> bool:
    """Take and release ``path`` if nobody holds it (a missing file is free)."""
    got = _locks.try_exclusive_existing(path)
    if isinstance(got, _locks.Held):
        got.release()
        return True
    return got is False


def holders(paths: list[str]) -> dict[str, list[int]]:
    """Pids holding a lock on each path, from ``/proc/locks`` (empty where it is not available)."""
    ids: dict[tuple[int, int, int], str] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        ids[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = p
    out: dict[str, list[int]] = {}
    try:
        with open(_PROC_LOCKS, encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->":  # "->": a waiter, not a holder
            continue
        try:
            pid = int(parts[4])
            major, minor, ino = parts[5].split(":")
            key = (int(major, 16), int(minor, 16), int(ino))
        except ValueError:
            continue
        path = ids.get(key)
        if path is not None and pid not in out.setdefault(path, []):
            out[path].append(pid)
    return out


def lock_findings(engine: Engine, window_s: float = LOCK_WINDOW_S) -> list[HealthFinding]:
    """A ``lock-held-long`` finding for each shard lock not had within ``window_s`` (see the module docstring)."""
    busy = [p for p in _shard_locks(engine) if not free_now(p)][:_MAX_WATCHED]
    if not busy or window_s <= 0:
        return []
    before = holders(busy)
    deadline = time.monotonic() + window_s
    while busy and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        busy = [p for p in busy if not free_now(p)]
    if not busy:
        return []
    after = holders(busy)
    out: list[HealthFinding] = []
    root = engine.root
    for path in busy:
        same = sorted(set(before.get(path, [])) & set(after.get(path, [])))
        who = f"; pid {', '.join(map(str, same))} held it at both ends of the wait" if same else ""
        out.append(
            HealthFinding(
                "lock-held-long",
                "warning",
                f"the lock {os.path.relpath(path, root)} could not be had for {window_s:g} s: writers of that shard "
                f"wait at least as long{who}",
                "find what holds it (a long update() function, a long snapshot, a hung process"
                + (f": pid {', '.join(map(str, same))}" if same else "")
                + "); a lock of a process that dies is released at once. maintain() never ends processes",
                {"lock": path, "window_s": window_s, "pids": same},
            )
        )
    return out
