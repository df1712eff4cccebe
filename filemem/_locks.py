"""Cross-process reader-writer locks over ``flock`` (portalocker where there is none) (layer L1).

The rules this module keeps, and why:

* **Lock a separate, never-replaced lock file**, not the data file: a shard is
  replaced by rename, which gives it a new inode, and a lock on the old inode
  would guard nothing. Lock files are never deleted while the store lives.
* **flock locks belong to an open file description.** Two threads that open
  the lock file separately exclude each other exactly like two processes, so
  correctness needs nothing more. An in-process ``threading.Lock`` per path
  sits above the file lock for exclusive holders anyway, so that N threads of
  one process waiting for the same shard sleep on a condition instead of
  each polling ``flock`` with system calls.
* **flock is not fair**, and a stream of overlapping shared holders can keep
  an exclusive waiter out for ever. A *turnstile* (a second lock file, one per
  namespace) fixes that: a writer that finds its shard busy holds the turnstile
  while it waits; readers pass through the turnstile before taking their shared
  lock, so once a writer waits, new readers queue behind it and the old ones
  drain. Writers only ever *try* the turnstile (never wait on it) and readers
  pass it only while they hold no other lock, so it cannot take part in a
  deadlock.
* **Waits are polls with capped exponential backoff**: flock has no timeout,
  and a blocking flock cannot be interrupted safely from Python.
* **Aborting a wait** (for the async twin): a thread cannot be killed, but a
  thread that installed an abort event (``set_abort``) leaves a lock wait
  with ``WaitAborted`` once the event is set, holding nothing. Waits are the
  only place a write can be abandoned cleanly: nothing is written before
  every lock it needs is held.
* **Forks**: a child inherits its parent's open lock descriptors; unlocking
  one from the child would release the *parent's* lock. A handle remembers the
  pid that took it and, in any other process, only closes its descriptor.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import random
import stat
import threading
import time
import weakref
from typing import Final, Literal

from ._errors import LockTimeout, StorageError

# flock(2) directly where there is one: portalocker only wraps it there, and
# importing portalocker loads importlib.metadata, email, zipfile and more,
# several MB of RSS in every process (issue 13). Its flag values are
# flock's, so one set of numbers serves both paths.
try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None  # type: ignore[assignment]

_PORTABLE: Final = os.environ.get("FILEMEM_PORTABLE_IO", "") not in ("", "0")
_NATIVE: Final = _fcntl is not None and not _PORTABLE
_EXCLUSIVE: Final = 2  # LOCK_EX == _EXCLUSIVE
_SHARED: Final = 1  # LOCK_SH == _SHARED
_NON_BLOCKING: Final = 4  # LOCK_NB == portalocker.LockFlags.NON_BLOCKING


class _BusyError(Exception):
    """The lock is held elsewhere (non-blocking attempt)."""


def _lock_nb(fd: int, flags: int) -> None:
    """Try to lock ``fd`` without waiting: _BusyError when it is held, OSError when locking failed."""
    if _NATIVE:
        try:
            _fcntl.flock(fd, flags | _NON_BLOCKING)
        except OSError as exc:
            if exc.errno in _CONTENTION_ERRNOS:
                raise _BusyError from exc
            raise
        return
    import portalocker  # noqa: PLC0415 - only where there is no flock (or FILEMEM_PORTABLE_IO is set)

    try:
        portalocker.lock(fd, portalocker.LockFlags(flags | _NON_BLOCKING))
    except portalocker.AlreadyLocked as exc:
        raise _BusyError from exc
    except portalocker.LockException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError) and cause.errno in _CONTENTION_ERRNOS:
            raise _BusyError from exc
        raise OSError(_errno.EIO, str(exc)) from exc


def _unlock(fd: int) -> None:
    if _NATIVE:
        _fcntl.flock(fd, _fcntl.LOCK_UN)
        return
    import portalocker  # noqa: PLC0415 - see _lock_nb

    try:
        portalocker.unlock(fd)
    except portalocker.LockException as exc:
        raise OSError(_errno.EIO, str(exc)) from exc


__all__ = [
    "Held",
    "WaitAborted",
    "check_abort",
    "create_locked",
    "exclusive",
    "set_abort",
    "shared",
    "try_exclusive",
    "try_exclusive_existing",
    "try_shared_existing",
    "wait_exclusive_fd",
]

#: How long create_locked waits for a prober to release a file it just created.
_CREATE_LOCK_WAIT_S: Final = 5.0
_FIRST_SLEEP_S: Final = 0.00005
_MAX_SLEEP_S: Final = 0.002
_FILE_MODE: Final = 0o600
#: Waiting longer than this for the in-process lock counts as contention.
_CONTENDED_S: Final = 0.0002
_CONTENTION_ERRNOS: Final = frozenset({_errno.EAGAIN, _errno.EACCES, _errno.EWOULDBLOCK})

_registry_guard = threading.Lock()
#: How often a thread that may be aborted looks at its abort event while it
#: waits for another thread's in-process lock.
_ABORT_CHECK_S: Final = 0.01


class WaitAborted(BaseException):
    """A lock wait was abandoned because the thread's abort event was set (see set_abort).

    A BaseException, so that no ``except Exception`` on the way up swallows it:
    every cleanup path (``finally``, ``except BaseException``) still runs.
    """


_abort = threading.local()


def set_abort(event: threading.Event | None) -> None:
    """Make this thread's lock waits raise WaitAborted once ``event`` is set (None: never)."""
    _abort.event = event


def _check_abort(path: str) -> None:
    event: threading.Event | None = getattr(_abort, "event", None)
    if event is not None and event.is_set():
        raise WaitAborted(path)


def check_abort(path: str) -> None:
    """Raise WaitAborted if this thread's abort event is set: for waits built on try-locks (session slots)."""
    _check_abort(path)


class _InProc:
    """One path's in-process exclusive lock and how many threads use it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


# Every handle currently held by this process (see _reset_after_fork).
_live: weakref.WeakSet[Held] = weakref.WeakSet()

# Entries are dropped when unused so the registry does not grow with the
# number of shards a process has ever touched.
_inproc: dict[str, _InProc] = {}


def _reset_after_fork() -> None:
    # Locks held by other threads of the parent were not copied with them:
    # start the child with fresh primitives. Close the child's copies of the
    # parent's lock descriptors (never unlock them: that would release the
    # parent's lock): otherwise a long-lived child would keep the parent's
    # locks alive after the parent died, and wedge every writer.
    global _registry_guard
    _registry_guard = threading.Lock()
    _inproc.clear()
    for held in list(_live):
        fd, held.fd = held.fd, -1
        held._inproc_lock = None
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class Held:
    """A lock this process holds. ``release()`` is idempotent; also a context manager."""

    __slots__ = ("__weakref__", "_inproc_lock", "_pid", "contended", "fd", "mode", "path")

    def __init__(self, path: str, fd: int, mode: str, inproc_lock: _InProc | None) -> None:
        self.path = path
        self.fd = fd
        self.mode = mode
        #: Whether we had to wait for it (another thread or process held it).
        self.contended = False
        self._inproc_lock = inproc_lock
        self._pid = os.getpid()
        _live.add(self)

    def release(self) -> None:
        """Release the lock (in a forked child: only close our copy of the descriptor)."""
        fd = self.fd
        if fd < 0:
            return
        self.fd = -1
        _live.discard(self)
        try:
            if self._pid == os.getpid():
                # If unlocking fails, closing the descriptor below releases it anyway.
                with contextlib.suppress(OSError):
                    _unlock(fd)
            os.close(fd)
        finally:
            if self._inproc_lock is not None and self._pid == os.getpid():
                _inproc_release(self.path, self._inproc_lock)
            self._inproc_lock = None

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        # A handle dropped without release (an exception path we missed) must
        # not keep a shard locked until the process exits.
        if self.fd >= 0:
            with contextlib.suppress(Exception):
                self.release()


def _inproc_acquire(path: str, deadline: float) -> _InProc:
    with _registry_guard:
        entry = _inproc.get(path)
        if entry is None:
            entry = _inproc[path] = _InProc()
        entry.users += 1
    if entry.lock.acquire(blocking=False):
        return entry
    remaining = deadline - time.monotonic()
    if getattr(_abort, "event", None) is not None:
        # Abortable: wait in slices, looking at the abort event between them.
        got = False
        try:
            while not got and (left := deadline - time.monotonic()) > 0:
                _check_abort(path)
                got = entry.lock.acquire(timeout=min(left, _ABORT_CHECK_S))
        except BaseException:
            _inproc_forget(path, entry)
            raise
    else:
        got = entry.lock.acquire(timeout=max(remaining, 0.0))
    if not got:
        _inproc_forget(path, entry)
        raise LockTimeout(
            f"timed out after {max(remaining, 0):.3f}s waiting for lock {path} (held by another thread)",
            path=path,
            waited_s=max(remaining, 0.0),
        )
    return entry


def _inproc_forget(path: str, entry: _InProc) -> None:
    with _registry_guard:
        entry.users -= 1
        if entry.users == 0 and _inproc.get(path) is entry:
            del _inproc[path]


def _inproc_release(path: str, entry: _InProc) -> None:
    entry.lock.release()
    _inproc_forget(path, entry)


#: A lock file is never followed if it is a link and never waited on if it is a
#: FIFO (the same rule as ``_fs.open_regular``; this layer cannot import _fs).
_SAFE_FLAGS: Final = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def _open_safe(path: str, flags: int, what: str) -> int | None:
    """Open a lock file: None if absent (only without O_CREAT); StorageError if it is no regular file."""
    try:
        fd = os.open(path, flags | _SAFE_FLAGS, _FILE_MODE)
    except FileNotFoundError:
        if flags & os.O_CREAT:
            raise StorageError(f"could not open {what} {path}: its directory is gone", path=path) from None
        return None
    except OSError as exc:
        if exc.errno in (_errno.ELOOP, _errno.EMLINK, _errno.ENXIO):
            raise StorageError(
                f"{what} {path} is a symbolic link or special file: filemem never follows or opens those "
                "inside a store (run `filemem check`)",
                errno=exc.errno,
                path=path,
            ) from exc
        raise StorageError(f"could not open {what} {path}: {exc.strerror}", errno=exc.errno, path=path) from exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"could not stat {what} {path}: {exc.strerror}", errno=exc.errno, path=path) from exc
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise StorageError(
            f"{what} {path} is not a regular file: filemem never opens special files inside a store "
            "(run `filemem check`)",
            path=path,
        )
    return fd


def _open(path: str) -> int:
    fd = _open_safe(path, os.O_RDWR | os.O_CREAT, "lock file")
    assert fd is not None
    return fd


def _try(fd: int, flags: int, path: str) -> bool:
    try:
        _lock_nb(fd, flags)
        return True
    except _BusyError:
        return False
    except OSError as exc:
        raise StorageError(f"could not lock {path}: {exc}", path=path) from exc


def _poll(fd: int, flags: int, path: str, deadline: float, started: float) -> None:
    sleep = _FIRST_SLEEP_S
    while not _try(fd, flags, path):
        now = time.monotonic()
        if now >= deadline:
            raise LockTimeout(
                f"timed out after {now - started:.3f}s waiting for "
                f"{'an exclusive' if flags & _EXCLUSIVE else 'a shared'} lock on {path}",
                path=path,
                waited_s=now - started,
            )
        _check_abort(path)
        # Jitter keeps processes that collided once from colliding in lockstep.
        time.sleep(min(sleep * (0.5 + random.random()), deadline - now))  # noqa: S311 - not crypto
        sleep = min(sleep * 2, _MAX_SLEEP_S)


def exclusive(path: str, timeout_s: float, *, turnstile: str | None = None) -> Held:
    """Take the exclusive lock on ``path`` within ``timeout_s`` or raise LockTimeout.

    ``turnstile``: a lock file to hold while we have to wait, so that readers
    arriving meanwhile queue behind us (writer preference).
    """
    started = time.monotonic()
    deadline = started + timeout_s
    inproc = _inproc_acquire(path, deadline)
    contended = time.monotonic() - started > _CONTENDED_S
    try:
        fd = _open(path)
    except BaseException:
        _inproc_release(path, inproc)
        raise
    try:
        flags = _EXCLUSIVE
        if not _try(fd, flags, path):
            contended = True
            gate = -1
            if turnstile is not None:
                gate = _open(turnstile)
                if not _try(gate, flags, turnstile):
                    # Another writer already holds the gate shut: readers are
                    # queued anyway, and we must never wait on the gate.
                    os.close(gate)
                    gate = -1
            try:
                _poll(fd, flags, path, deadline, started)
            finally:
                if gate >= 0:
                    _unlock(gate)
                    os.close(gate)
    except BaseException:
        os.close(fd)
        _inproc_release(path, inproc)
        raise
    held = Held(path, fd, "exclusive", inproc)
    held.contended = contended
    return held


def try_exclusive(path: str) -> Held | None:
    """Take the exclusive lock on ``path`` if it is free right now, else None.

    Used to ask "is the owner of this file alive?": a live owner holds the lock.
    """
    fd = _open(path)
    try:
        if _try(fd, _EXCLUSIVE, path):
            return Held(path, fd, "exclusive", None)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def shared(path: str, timeout_s: float, *, turnstile: str | None = None) -> Held:
    """Take a shared lock on ``path`` within ``timeout_s`` or raise LockTimeout.

    ``turnstile``: pass it only when the caller holds no other lock (see the
    module docstring); we wait there while a writer is queued.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    if turnstile is not None:
        gate = _open(turnstile)
        try:
            _poll(gate, _EXCLUSIVE, turnstile, deadline, started)
            _unlock(gate)
        finally:
            os.close(gate)
    fd = _open(path)
    try:
        _poll(fd, _SHARED, path, deadline, started)
    except BaseException:
        os.close(fd)
        raise
    return Held(path, fd, "shared", None)


def create_locked(path: str) -> Held:
    """Create ``path`` (it must not exist) and hold its exclusive lock; write through ``held.fd``.

    The file is locked before anyone can open it by its final name, which is
    what lets a reader treat "I could lock it" as "its owner is dead".
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    except OSError as exc:
        raise StorageError(f"could not create {path}: {exc.strerror}", errno=exc.errno, path=path) from exc
    try:
        # Only a prober can hold the lock of a file we just created (a checker
        # asking "is its owner alive?" by trying the lock for a moment): wait
        # for it to let go rather than fail the caller.
        started = time.monotonic()
        _poll(fd, _EXCLUSIVE, path, started + _CREATE_LOCK_WAIT_S, started)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)  # ours, never used: leave no garbage behind
        raise
    return Held(path, fd, "exclusive", None)


def wait_exclusive_fd(fd: int, path: str, timeout_s: float) -> Held:
    """Wait up to ``timeout_s`` for the exclusive lock on an already open descriptor."""
    started = time.monotonic()
    _poll(fd, _EXCLUSIVE, path, started + timeout_s, started)
    return Held(path, fd, "exclusive", None)


def try_exclusive_existing(path: str) -> Held | bool | None:
    """Like :func:`try_exclusive` for a file that must already exist (never creates it).

    Returns the handle, None if another process holds the lock, or False if
    the file is gone (or was removed while we locked it).
    """
    return _try_existing(path, "exclusive")


def try_shared_existing(path: str) -> Held | bool | None:
    """Take a *shared* lock on an existing ``path`` if nobody holds it exclusively right now.

    Returns the handle, None if another process holds the exclusive lock, or
    False if the file is gone (or was removed while we locked it). Used to
    probe "is the owner of this file alive?" when several processes may probe
    at once: shared probes never mistake each other for the owner, as two
    exclusive probes would.
    """
    return _try_existing(path, "shared")


def _try_existing(path: str, mode: Literal["exclusive", "shared"]) -> Held | bool | None:
    try:
        # Read-only is enough for flock, and works for a read-only user.
        got = _open_safe(path, os.O_RDONLY, "file")
    except StorageError as exc:
        if isinstance(exc.__cause__, NotADirectoryError):
            return False
        raise
    if got is None:
        return False
    fd = got
    flag = _EXCLUSIVE if mode == "exclusive" else _SHARED
    try:
        if not _try(fd, flag, path):
            os.close(fd)
            return None
        if os.fstat(fd).st_nlink == 0:
            _unlock(fd)
            os.close(fd)
            return False
    except BaseException:
        os.close(fd)
        raise
    return Held(path, fd, mode, None)
