"""Platform calls of the write-ahead log, with portable fallbacks (layer L2).

The log needs five things from the operating system: write at an offset,
read at an offset, make a file's data durable, reserve space for a segment,
and map the control page shared between processes. Each has a fast native
form and a portable one, chosen here and nowhere else:

========================  ===============================  ==============================
need                      native                           portable fallback
========================  ===============================  ==============================
write at an offset        ``os.pwrite``                     ``lseek`` + ``write`` (a lock
                                                           serialises users of one fd)
read at an offset         ``os.pread``                      ``lseek`` + ``read``
durable data              ``fdatasync``; ``F_FULLFSYNC``    ``os.fsync`` (``FlushFileBuffers``
                          on macOS (fsync there does not    on Windows)
                          reach the platter)
reserve segment space     ``posix_fallocate``               write zeros
shared control page       ``mmap`` (MAP_SHARED)             ``pread``/``pwrite`` of the file
cross-process lock        ``fcntl.flock``                   portalocker (LockFileEx)
========================  ===============================  ==============================

Setting ``FILEMEM_PORTABLE_IO=1`` in the environment forces every fallback
on any platform, so the portable paths are tested on Linux too (CI runs the
suite that way).

Invariant: every function either does what it says or raises ``OSError``;
none reports success for a write or sync that did not happen (a failed sync
is the caller's to make fatal, see ``_writer``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Final

__all__ = [
    "PORTABLE",
    "datasync",
    "lock",
    "pread",
    "preallocate",
    "pwrite",
    "unlock",
    "yield_cpu",
]

#: Force the portable fallbacks (tests set it to cover them on Linux).
PORTABLE: Final = os.environ.get("FILEMEM_PORTABLE_IO", "") not in ("", "0")

_HAVE_PWRITE: Final = hasattr(os, "pwrite") and not PORTABLE
_HAVE_FALLOCATE: Final = hasattr(os, "posix_fallocate") and not PORTABLE
_ZERO_CHUNK: Final = 1 << 20

# The seek+write fallback moves the fd's shared offset: one lock for all of
# them in this process keeps two threads from interleaving seek and write.
_seek_lock = threading.Lock()

_yield: Final = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


def yield_cpu() -> None:
    """Let another runnable thread or process have this core (``sched_yield``; ``sleep(0)`` where missing)."""
    _yield()


try:  # POSIX
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None  # type: ignore[assignment]


def pwrite(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (short writes are continued)."""
    view = memoryview(data)
    while view:
        if _HAVE_PWRITE:
            n = os.pwrite(fd, view, offset)
        else:
            with _seek_lock:
                os.lseek(fd, offset, os.SEEK_SET)
                n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - a regular file never does this
            raise OSError(5, "short write")
        view = view[n:]
        offset += n


def pread(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    if _HAVE_PWRITE:
        out = os.pread(fd, size, offset)
        if len(out) == size or not out:
            return out
        parts = [out]
        got = len(out)
        while got < size:
            more = os.pread(fd, size - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)
    with _seek_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        got = 0
        while got < size:
            more = os.read(fd, size - got)
            if not more:
                break
            chunks.append(more)
            got += len(more)
        return b"".join(chunks)


def datasync(fd: int) -> None:
    """Make the file's data (and what is needed to read it back) durable."""
    if not PORTABLE and sys.platform == "darwin" and _fcntl is not None and hasattr(_fcntl, "F_FULLFSYNC"):
        # macOS fsync only reaches the drive's cache; F_FULLFSYNC flushes it.
        _fcntl.fcntl(fd, _fcntl.F_FULLFSYNC)
        return
    if not PORTABLE and hasattr(os, "fdatasync"):
        os.fdatasync(fd)
        return
    os.fsync(fd)  # Windows: FlushFileBuffers


def preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of zeros for the file (blocks allocated now, not per append).

    Appends into reserved blocks change no file size, so ``fdatasync`` need not
    write the inode: that is most of what makes the log's syncs cheap.
    """
    if _HAVE_FALLOCATE:
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            # Some file systems (tmpfs on old kernels, some FUSE) cannot: zeros.
            if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL
                raise
    # Extend with zeros past the current end only: what is written stays.
    offset = os.fstat(fd).st_size
    zeros = bytes(_ZERO_CHUNK)
    while offset < size:
        n = min(_ZERO_CHUNK, size - offset)
        pwrite(fd, zeros[:n], offset)
        offset += n


def lock(fd: int, *, exclusive: bool, blocking: bool) -> bool:
    """Lock the whole of the open file ``fd``; False if ``blocking`` is off and it is busy."""
    if _fcntl is not None and not PORTABLE:
        flags = (_fcntl.LOCK_EX if exclusive else _fcntl.LOCK_SH) | (0 if blocking else _fcntl.LOCK_NB)
        try:
            _fcntl.flock(fd, flags)
        except BlockingIOError:
            return False
        return True
    import portalocker  # noqa: PLC0415 - only on the portable path

    pflags = portalocker.LockFlags.EXCLUSIVE if exclusive else portalocker.LockFlags.SHARED
    if not blocking:
        pflags |= portalocker.LockFlags.NON_BLOCKING
    try:
        portalocker.lock(fd, pflags)
    except portalocker.AlreadyLocked:
        return False
    except portalocker.LockException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError) and cause.errno in (11, 13, 35):  # EAGAIN, EACCES, EWOULDBLOCK
            return False
        raise OSError(5, str(exc)) from exc
    return True


def unlock(fd: int) -> None:
    """Release a lock taken by :func:`lock`."""
    if _fcntl is not None and not PORTABLE:
        _fcntl.flock(fd, _fcntl.LOCK_UN)
        return
    import portalocker  # noqa: PLC0415

    portalocker.unlock(fd)
