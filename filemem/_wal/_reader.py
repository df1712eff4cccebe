"""Reading the log (layer L2): frames from a position, stopping at the first that fails a check.

Invariant: :meth:`LogReader.scan` yields only frames that passed their CRC and
sit exactly where they say they sit, in log order, and never one at or past
``limit``; the first frame that fails any check ends the scan, and the result
says why (``stop``) and where (``end``), so the caller can tell a torn tail
(normal after a crash) from damage inside the synced part (never normal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final

from .._errors import CorruptShardError
from . import _format, _platform

__all__ = ["Frame", "LogReader", "Scan"]

#: Bytes read per system call while scanning.
_CHUNK_BYTES: Final = 1 << 20


def undecodable(wal_dir: str, pos: int, exc: Exception) -> CorruptShardError:
    """The error for a synced BATCH frame whose checks pass but whose payload does not decode (damage, not a tail)."""
    return CorruptShardError(f"write-ahead log in {wal_dir}: frame at {pos:#x} does not decode: {exc}", path=wal_dir)


@dataclass(slots=True)
class Frame:
    """One good frame: where it starts, its type, its payload, where the next one starts."""

    pos: int
    kind: int
    payload: bytes
    end: int


@dataclass(slots=True)
class Scan:
    """What a scan found: the good frames, where they end, and why it stopped.

    ``stop`` is ``"limit"`` (reached the position asked for), ``"end"`` (zeros:
    nothing written past here), ``"torn"`` (a frame failed its checks: a torn
    or damaged tail) or ``"missing"`` (the segment file is gone: folded and
    retired meanwhile, or lost).
    """

    frames: list[Frame] = field(default_factory=list)
    end: int = 0
    stop: str = "limit"
    detail: str = ""


class LogReader:
    """Reads segments of one ``wal/`` directory, keeping their files open.

    An open segment stays readable after the fold retires (unlinks) it, so a
    scan that started never sees a file vanish under it on POSIX.
    """

    def __init__(self, wal_dir: str) -> None:
        self.wal_dir = wal_dir
        self._fds: dict[int, int] = {}

    def _fd(self, segment: int) -> int | None:
        fd = self._fds.get(segment)
        if fd is not None:
            return fd
        try:
            fd = os.open(os.path.join(self.wal_dir, _format.segment_name(segment)), os.O_RDONLY)
        except FileNotFoundError:
            return None
        if _format.decode_segment_header(_platform.pread(fd, _format.SEGMENT_HEADER_BYTES, 0)) != segment:
            os.close(fd)
            return None
        self._fds[segment] = fd
        return fd

    def forget_below(self, segment: int) -> None:
        """Close the files of segments below ``segment`` (retired by a fold)."""
        for s in [s for s in self._fds if s < segment]:
            os.close(self._fds.pop(s))

    def close(self) -> None:
        """Close every open segment."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def scan(self, start: int, limit: int | None = None) -> Scan:
        """Good frames from ``start`` up to ``limit`` (None: as far as the log goes)."""
        out = Scan(end=start)
        pos = start
        buf = b""
        buf_at = pos  # log position of buf[0]
        while limit is None or pos < limit:
            seg = _format.segment_of(pos)
            fd = self._fd(seg)
            if fd is None:
                out.stop, out.detail = "missing", f"segment {_format.segment_name(seg)} is missing"
                return out
            off = pos - buf_at
            if off < 0 or off + _format.FRAME_HEADER_BYTES > len(buf):
                want = _CHUNK_BYTES if limit is None else max(min(_CHUNK_BYTES, limit - pos), 64)
                buf = _platform.pread(fd, want, _format.offset_of(pos))
                buf_at = pos
                off = 0
            head = buf[off : off + _format.FRAME_HEADER_BYTES]
            got = _format.decode_frame_header(head, pos)
            if got is None:
                if len(head) < _format.FRAME_HEADER_BYTES or head == bytes(_format.FRAME_HEADER_BYTES):
                    out.stop, out.detail = "end", ""
                else:
                    out.stop, out.detail = "torn", f"bad frame header at {pos:#x}"
                return out
            crc, length, kind = got
            size = _format.frame_size(length)
            if off + _format.FRAME_HEADER_BYTES + length > len(buf):
                buf = _platform.pread(fd, max(size, _CHUNK_BYTES if limit is None else size), _format.offset_of(pos))
                buf_at = pos
                off = 0
                head = buf[: _format.FRAME_HEADER_BYTES]
            payload = buf[off + _format.FRAME_HEADER_BYTES : off + _format.FRAME_HEADER_BYTES + length]
            if len(payload) != length or not _format.check_frame(head, payload, crc):
                out.stop, out.detail = "torn", f"frame at {pos:#x} fails its checksum"
                return out
            nxt = _format.position(seg + 1, _format.SEGMENT_HEADER_BYTES) if kind == _format.END else pos + size
            out.frames.append(Frame(pos, kind, payload, nxt))
            pos = out.end = nxt
            if kind == _format.END:
                buf, buf_at = b"", pos
        return out
