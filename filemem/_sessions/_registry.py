"""The session registry: records every process can see, and liveness without heartbeats (layer L4).

**Liveness.** A session holds the exclusive lock of its own ``<id>.lock`` for
as long as it lives. Anyone may *probe* a session by taking a **shared**,
non-blocking lock on that file: it succeeds only if no process holds the
exclusive lock, i.e. the owner is gone. The kernel drops a dead process's
locks at once, SIGKILL included, so death is seen on the next look, with no
heartbeat and no timeout. Probes are shared so that two processes probing at
the same instant never mistake each other for the owner (two exclusive probes
would). The lock file is created already locked under a temp name and renamed
into place, so nobody can ever probe a live session's lock before it is held.

**Who writes a record.** Only the owner while it lives (its threads are
serialised by a ``threading.Lock``), and, once the owner is dead, whoever
probes it: the cleaner re-reads the record and, unless the owner had already
marked it ``ended``, rewrites it as ``crashed``, then unlinks the lock and any
stop request. Several cleaners may do this at once; they all write the same
verdict. Records are replaced by atomic rename, so a reader never sees a torn
one.

**Retention.** Records of ended and crashed sessions stay (so ``sessions(
alive=False)`` shows recent history) and are removed by the next listing once
they have been over for ``ENDED_KEEP_S`` seconds.

**Fork.** A forked child inherits the lock descriptor; ``filemem._locks``
closes the child's copy without unlocking it (unlocking would release the
parent's flock). So the child never holds the parent's session, and the
parent's death is seen at once even while the child lives.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from typing import Final

from .. import _fs, _locks
from .._errors import StorageError
from ._api import Releasable
from ._record import (
    FINAL_STATES,
    QUEUE_DIR,
    RECORD_SUFFIX,
    SessionInfo,
    decode_record,
    encode_record,
    lock_path,
    record_path,
    stop_path,
    validate_id,
)

__all__ = ["ENDED_KEEP_S", "Registry"]

#: Records of sessions that ended (or crashed) longer ago than this are removed by the next listing.
ENDED_KEEP_S: Final = 3600.0
HOST: Final = socket.gethostname()


class Registry:
    """The ``sessions/`` directory of one store."""

    def __init__(self, directory: str, *, sync: bool, readonly: bool = False) -> None:
        self.dir = directory
        self.sync = sync
        #: A read-only store reports dead sessions but never rewrites or removes their files.
        self.readonly = readonly

    # ------------------------------------------------------------------ owner side

    def create(self, info: SessionInfo) -> _locks.Held:
        """Register a new session: take its liveness lock, then write its first record.

        The lock exists (and is held) before the record, so a record is never
        seen without a lock its owner holds.
        """
        _fs.ensure_dir(self.dir)
        final = lock_path(self.dir, info.id)
        tmp = _fs.temp_path(final)
        held = _locks.create_locked(tmp)
        try:
            _fs.replace(tmp, final)
            held.path = final
            self.write(info)
        except BaseException:
            _fs.remove_quietly(tmp)
            _fs.remove_quietly(final)
            held.release()
            raise
        return held

    def write(self, info: SessionInfo, *, sync: bool | None = None) -> None:
        """Replace the record of ``info.id`` atomically."""
        _fs.atomic_write(record_path(self.dir, info.id), encode_record(info), sync=self.sync if sync is None else sync)

    def finish(self, info: SessionInfo, held: Releasable) -> None:
        """The owner's last act: record ``info`` (already marked ended), drop the stop file and the lock."""
        try:
            self.write(info)
        finally:
            _fs.remove_quietly(stop_path(self.dir, info.id))
            # Unlink before releasing: a prober that opened the file meanwhile
            # sees it unlinked (st_nlink 0) and treats the session as gone.
            _fs.remove_quietly(lock_path(self.dir, info.id))
            held.release()

    def discard(self, session_id: str, held: Releasable) -> None:
        """Remove every file of a session that never started (its slot wait failed)."""
        for path in (record_path(self.dir, session_id), stop_path(self.dir, session_id)):
            _fs.remove_quietly(path)
        _fs.remove_quietly(lock_path(self.dir, session_id))
        held.release()

    def stop_requested(self, session_id: str) -> bool:
        """Whether someone asked this session to stop (one ``stat``)."""
        return os.path.exists(stop_path(self.dir, session_id))

    # ------------------------------------------------------------------ anyone

    def read(self, session_id: str) -> SessionInfo | None:
        """The record as on disk (None: absent or unreadable); ``alive`` not probed."""
        got = _fs.read_file(record_path(self.dir, session_id))
        if got is None:
            return None
        try:
            return decode_record(got[0])
        except ValueError:
            return None

    def probe(self, session_id: str) -> bool:
        """Whether the owner of ``session_id`` holds its lock right now."""
        got = _locks.try_shared_existing(lock_path(self.dir, session_id))
        if got is None:
            return True
        if not isinstance(got, bool):
            got.release()
        return False

    def look(self, session_id: str, *, now: float | None = None) -> SessionInfo | None:
        """Read one session, probe its owner, and clean it up if the owner died."""
        info = self.read(session_id)
        if info is None:
            return None
        return self._settle(info, time.time() if now is None else now)

    def _settle(self, info: SessionInfo, now: float) -> SessionInfo | None:
        if info.state in FINAL_STATES:
            if self.readonly:
                return replace(info, alive=False)
            self._tidy_final(info, now)
            if info.ended_at is not None and info.ended_at < now - ENDED_KEEP_S:
                _fs.remove_quietly(record_path(self.dir, info.id))
                return None
            return replace(info, alive=False)
        got = _locks.try_shared_existing(lock_path(self.dir, info.id))
        if got is None:
            return replace(info, alive=True, stop_requested=self.stop_requested(info.id))
        try:
            return self._bury(info.id, now)
        finally:
            if not isinstance(got, bool):
                got.release()

    def _bury(self, session_id: str, now: float) -> SessionInfo | None:
        """Mark a session whose owner died as crashed (we hold a shared probe, or its lock is gone)."""
        # Re-read: the owner may have marked itself ended just before it died.
        info = self.read(session_id)
        if info is None:
            return None
        if info.state not in FINAL_STATES:
            info = replace(info, state="crashed", ended_at=now)
            if self.readonly:
                return replace(info, alive=False)
            try:
                self.write(info)
            except StorageError:
                # A read-only store directory (an offline inspector): report
                # the verdict without recording it.
                return replace(info, alive=False)
            if info.started_at is None:  # it died in the waiting room
                remove_tickets(os.path.join(self.dir, QUEUE_DIR), info.id)
        self._tidy_final(info, now)
        return replace(info, alive=False)

    def _tidy_final(self, info: SessionInfo, now: float) -> None:
        # Leftovers of an owner that died after writing "ended" (its lock), or
        # of a stop request that arrived after the end: harmless, but check()
        # would flag them.
        _fs.remove_quietly(stop_path(self.dir, info.id))
        lock = lock_path(self.dir, info.id)
        if os.path.exists(lock) and not self.probe(info.id):
            _fs.remove_quietly(lock)

    def ids(self) -> list[str]:
        """Ids of every record in the directory, oldest first (ids start with the start time)."""
        return sorted(
            n[: -len(RECORD_SUFFIX)]
            for n in _fs.listdir(self.dir)
            if n.endswith(RECORD_SUFFIX) and _fs.TEMP_MARK not in n
        )

    def list(self, *, alive: bool | None) -> list[SessionInfo]:
        """Every session (cleaning up dead ones), filtered by liveness."""
        now = time.time()
        out = []
        for session_id in self.ids():
            info = self.look(session_id, now=now)
            if info is not None and (alive is None or info.alive == alive):
                out.append(info)
        return out

    def request_stop(self, session_id: str) -> bool:
        """Ask a live session to stop; False if it is not alive (or unknown)."""
        validate_id(session_id)
        info = self.look(session_id)
        if info is None or not info.alive:
            return False
        path = stop_path(self.dir, session_id)
        try:
            _fs.write_new_file(path, f"{time.time()} {os.getpid()}\n".encode(), sync=self.sync)
        except StorageError:
            if not os.path.exists(path):
                raise
        return True


def remove_tickets(queue_dir: str, session_id: str) -> None:
    """Remove the waiting-room tickets of a session that died while waiting."""
    suffix = f"_{session_id}.ticket"
    for dirpath, _dirs, files in os.walk(queue_dir):
        for name in files:
            if name.endswith(suffix):
                _fs.remove_quietly(os.path.join(dirpath, name))
