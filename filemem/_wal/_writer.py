"""Appending to the log (layer L2): one frame at the end, then a sync outside the lock.

The caller holds the append lock while it calls :meth:`LogWriter.append` and
publishes the new end; :meth:`LogWriter.sync` runs after the lock is released,
so many writers' syncs overlap (the kernel merges concurrent ``fdatasync``
calls on one file: user-space group commit measured no better on ext4).

Rules, and why:

* A frame goes exactly at the published end, never past it: frames are
  contiguous, so a reader's first bad frame is the end of the log.
* A segment is closed by an ``END`` frame and **synced before the next segment
  is used**: otherwise a power cut could keep an acknowledged frame in the new
  segment while losing the tail (and the ``END``) of the old one, and a reader
  stopping at that torn tail would never reach it.
* New segments appear whole: header written and synced in a temp file, then
  renamed into place and the directory synced.
* Space is reserved ahead of the writes (``preallocate``), a step at a time:
  appends into reserved blocks change no size, so ``fdatasync`` has no inode
  to write.

Invariant: when :meth:`sync` returns for ``end``, every frame below ``end`` in
that segment, and every earlier segment, is durable.
"""

from __future__ import annotations

import os
from typing import Final

from .. import _fs
from . import _format, _platform

__all__ = ["LogWriter"]

#: Space reserved per step in a segment.
PREALLOCATE_STEP_BYTES: Final = 1 << 20


class LogWriter:
    """Writes frames into the segments of one ``wal/`` directory."""

    def __init__(self, wal_dir: str, *, segment_bytes: int, sync: bool) -> None:
        self.wal_dir = wal_dir
        self.segment_bytes = segment_bytes
        self.sync_on = sync
        self._fds: dict[int, int] = {}
        self._allocated: dict[int, int] = {}

    def path(self, segment: int) -> str:
        """Path of a segment file."""
        return os.path.join(self.wal_dir, _format.segment_name(segment))

    def _fd(self, segment: int) -> int:
        fd = self._fds.get(segment)
        if fd is None:
            fd = self._open(segment, create=True)
            assert fd is not None
        return fd

    def _open(self, segment: int, *, create: bool) -> int | None:
        """Open ``segment`` for appends and remember it; create it first if missing and ``create`` (append lock held).

        None if it is missing and ``create`` is off: only a holder of the
        append lock may create a segment (a second creator's rename would
        replace a file the first may have appended to already).
        """
        path = self.path(segment)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            if not create:
                return None
            self.create_segment(segment)
            fd = os.open(path, os.O_RDWR)
        try:
            self._allocated[segment] = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        self._fds[segment] = fd
        for old in [s for s in self._fds if s < segment - 1]:
            os.close(self._fds.pop(old))
            self._allocated.pop(old, None)
        return fd

    def prepare(self, segment: int, *, create: bool) -> bool:
        """Open ``segment`` ahead of the first append to it; False if it is missing and ``create`` is off.

        With ``create`` (append lock held) a missing segment is created: a
        read-write open does this, so the first put of a new store does not
        pay a segment's creation (a temp file, space reserved, a synced
        header, a rename, a directory sync) under the append lock while
        every other writer waits (issue 13).
        """
        return segment in self._fds or self._open(segment, create=create) is not None

    def create_segment(self, segment: int) -> None:
        """Create segment ``segment`` (header only, space reserved) unless it exists. Append lock held."""
        path = self.path(segment)
        if os.path.exists(path):
            return
        tmp = _fs.temp_path(path)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _platform.preallocate(fd, min(PREALLOCATE_STEP_BYTES, self.segment_bytes))
            _platform.pwrite(fd, _format.encode_segment_header(segment), 0)
            if self.sync_on:
                _platform.datasync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(tmp, path)
        except BaseException:
            _fs.remove_quietly(tmp)
            raise
        if self.sync_on:
            _fs.fsync_dir(self.wal_dir)

    def append(self, at: int, kind: int, payload: bytes) -> tuple[int, int]:
        """Write one frame at the log end ``at``; return (where it starts, the new end). Append lock held.

        Rolls to the next segment when the frame does not fit the current one
        (a frame bigger than a whole segment gets a segment of its own, which
        grows past the usual size).
        """
        size = _format.frame_size(len(payload))
        seg, off = _format.segment_of(at), _format.offset_of(at)
        if off + size > self.segment_bytes and off > _format.SEGMENT_HEADER_BYTES:
            fd = self._fd(seg)
            _platform.pwrite(fd, _format.encode_frame(_format.END, at, b""), off)
            if self.sync_on:
                _platform.datasync(fd)  # see the module docstring: before the next segment is used
            seg += 1
            self.create_segment(seg)
            at = _format.position(seg, _format.SEGMENT_HEADER_BYTES)
            off = _format.SEGMENT_HEADER_BYTES
        fd = self._fd(seg)
        end_off = off + size
        if end_off + _format.FRAME_HEADER_BYTES > self._allocated.get(seg, 0):
            want = max(end_off + _format.FRAME_HEADER_BYTES, self._allocated.get(seg, 0) + PREALLOCATE_STEP_BYTES)
            _platform.preallocate(fd, want)
            self._allocated[seg] = os.fstat(fd).st_size
        _platform.pwrite(fd, _format.encode_frame(kind, at, payload), off)
        return at, at + size

    def sync(self, end: int) -> None:
        """Make every frame below ``end`` durable (``fdatasync`` of its segment). Lock not held."""
        if not self.sync_on:
            return
        seg = _format.segment_of(end - 1)
        _platform.datasync(self._fd(seg))

    def close(self) -> None:
        """Close every open segment."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._allocated.clear()
