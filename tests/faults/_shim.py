"""A Python-level shim over the file layer: record what a workload does to a directory, or make one call fail.

Every write path of filemem (``filemem/_fs.py``, the locks, the collector's
journals and dead letters, the batch intents, the search indexes, splits and
merges) reaches the file system through functions of the ``os`` module, looked
up at call time (``os.open(...)``), plus one ctypes function, ``syncfs``, that
``_fs`` loads once. The shim replaces exactly these (:data:`HOOKED`) for the
duration of a ``with`` block:

=====================  ===================================================
hooked                 why
=====================  ===================================================
``os.open``            creation of a file (a new inode), fd -> path
``os.write``/``pwrite`` data (faults only; data is captured at fsync)
``os.ftruncate``       data (faults only)
``os.posix_fallocate`` reserving log segment space (faults only: ENOSPC lands here)
``os.read``/``pread``  (faults only; the log's reader uses ``pread``)
``os.fsync``           durability of a file's data, or of a directory's entries
``os.fdatasync``       same
``os.replace``/``rename``/``link``/``unlink``/``remove``/``mkdir``/``rmdir``
                       directory entries (logged; durable at the next fsync
                       of the directory, see tests/faults/_crash.py)
``os.stat``/``lstat``  (faults only)
``os.listdir``/``scandir``  (faults only)
``filemem._fs._SYNCFS`` syncfs: everything becomes durable
=====================  ===================================================

Only calls that touch a path under the watched root (or a descriptor opened
under it) are recorded or counted; the rest of the process (pytest, the
interpreter importing modules) is left alone. ``os.close`` is wrapped only to
forget descriptors. A new write path plugs in by doing its I/O through these
functions (or ``filemem._fs``); one that needs another primitive adds it to
:data:`HOOKED` and to ``_wrap`` below (tests/faults/README.md).

Linux only: a descriptor's path comes from ``/proc/self/fd``.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from filemem import _fs

#: Every function the shim replaces (module ``os`` unless dotted).
HOOKED: tuple[str, ...] = (
    "open",
    "write",
    "pwrite",
    "ftruncate",
    "posix_fallocate",
    "read",
    "pread",
    "fsync",
    "fdatasync",
    "replace",
    "rename",
    "link",
    "unlink",
    "remove",
    "mkdir",
    "rmdir",
    "stat",
    "lstat",
    "listdir",
    "scandir",
    "filemem._fs._SYNCFS",
)
#: Calls a fault can be injected into (every hooked call but none of the pure bookkeeping).
FAULTABLE: frozenset[str] = frozenset(HOOKED)

_REAL: dict[str, Any] = {name: getattr(os, name) for name in HOOKED if "." not in name}
_REAL["close"] = os.close
_REAL_SYNCFS = _fs._SYNCFS


def real_os(name: str) -> Any:
    """The unhooked ``os`` function (for the harness itself)."""
    return _REAL[name]


@dataclass
class Event:
    """One recorded call: ``kind`` is the hooked name, ``path`` relative to the root."""

    index: int
    kind: str
    path: str
    path2: str = ""
    #: For fsync events: ("file", identity, content) or ("dir", entries).
    payload: Any = None


@dataclass
class Fault:
    """Fail the ``at``-th faultable call (0-based, counted under the root) with ``err``."""

    at: int
    err: int = errno.EIO
    kinds: frozenset[str] = FAULTABLE
    fired: str = ""


@dataclass
class Recorder:
    """What the shim saw. ``calls`` counts faultable calls under the root."""

    root: str
    record: bool = True
    fault: Fault | None = None
    events: list[Event] = field(default_factory=list)
    calls: int = 0
    call_kinds: dict[str, int] = field(default_factory=dict)
    fds: dict[int, str] = field(default_factory=dict)
    #: st_ino -> generation, bumped when a new file with that inode number is created.
    gens: dict[int, int] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    # ------------------------------------------------------------ helpers

    def rel(self, path: Any, dir_fd: int | None = None) -> str | None:
        """``path`` relative to the root, or None if it is not under it."""
        if isinstance(path, int):
            return self.fds.get(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, (str, os.PathLike)):
            return None
        p = os.fspath(path)
        if dir_fd is not None and not os.path.isabs(p):
            base = self.fd_path(dir_fd)
            if base is None:
                return None
            p = os.path.join(base, p)
        p = os.path.abspath(p)
        if p == self.root:
            return "."
        if p.startswith(self.root + os.sep):
            return os.path.relpath(p, self.root)
        return None

    def fd_path(self, fd: int) -> str | None:
        try:
            return str(_REAL["__readlink"](f"/proc/self/fd/{fd}"))
        except OSError:
            return None

    def identity(self, st: os.stat_result) -> tuple[int, int]:
        return (st.st_ino, self.gens.get(st.st_ino, 0))

    def count(self, kind: str) -> None:
        """Count a faultable call under the root; raise if it is the one to fail."""
        with self.lock:
            n = self.calls
            self.calls += 1
            self.call_kinds[kind] = self.call_kinds.get(kind, 0) + 1
            f = self.fault
            if f is not None and not f.fired and kind in f.kinds and n >= f.at:
                f.fired = kind
                raise OSError(f.err, os.strerror(f.err))

    def log(self, kind: str, path: str, path2: str = "", payload: Any = None) -> None:
        if self.record:
            with self.lock:
                self.events.append(Event(len(self.events), kind, path, path2, payload))

    # ------------------------------------------------------------ durability capture

    def read_inode(self, fd: int) -> bytes:
        """The whole current content of the file behind ``fd`` (opened anew: fd may be write-only)."""
        path = f"/proc/self/fd/{fd}"
        rfd = _REAL["open"](path, os.O_RDONLY)
        try:
            chunks = []
            while True:
                b = _REAL["read"](rfd, 1 << 20)
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks)
        finally:
            _REAL["close"](rfd)

    def dir_entries(self, rel: str) -> dict[str, Any]:
        """A directory's entries now: name -> ("dir",) or ("file", identity, content now)."""
        absdir = os.path.join(self.root, rel)
        out: dict[str, Any] = {}
        try:
            names = _REAL["listdir"](absdir)
        except OSError:
            return out
        for name in names:
            p = os.path.join(absdir, name)
            try:
                st = _REAL["lstat"](p)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                out[name] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                try:
                    with open(p, "rb") as fh:
                        content = fh.read()
                except OSError:
                    content = b""
                out[name] = ("file", self.identity(st), content)
        return out

    def changed(self, rel: str | None) -> None:
        """After an entry of ``rel``'s directory changed: log the directory's entries as a "meta" event."""
        if not rel or rel == "." or not self.record:
            return
        parent = os.path.normpath(os.path.dirname(rel)) if os.path.dirname(rel) else "."
        self.log("meta", parent, payload=self.dir_entries(parent))

    def synced(self, fd: int) -> None:
        rel = self.fds.get(fd)
        if rel is None or not self.record:
            return
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            self.log("fsync-dir", rel, payload=self.dir_entries(rel))
        elif stat.S_ISREG(st.st_mode):
            self.log("fsync-file", rel, payload=(self.identity(st), self.read_inode(fd)))

    def synced_all(self) -> None:
        """syncfs: every directory's entries and every file's data under the root are durable."""
        if not self.record:
            return
        snap: dict[str, dict[str, Any]] = {}
        pending = ["."]
        while pending:  # not os.walk: it would call the hooked scandir
            rel = pending.pop()
            snap[rel] = entries = self.dir_entries(rel)
            pending += [os.path.normpath(os.path.join(rel, n)) for n, e in entries.items() if e[0] == "dir"]
        self.log("syncfs", ".", payload=snap)


_ACTIVE: list[Recorder] = []
#: Calls that change directory entries: each is followed by a "meta" event
#: holding the affected directory's entries (the crash model's journal order).
_ENTRY_CHANGES = frozenset({"replace", "rename", "link", "unlink", "remove", "mkdir", "rmdir"})
#: Calls logged as events (for the record; the crash model needs only syncs and creations).
_LOGGED = frozenset({"replace", "rename", "link", "unlink", "remove", "mkdir", "rmdir", "write", "pwrite", "ftruncate"})


def _wrap(name: str) -> Callable[..., Any]:
    real = _REAL[name]

    def hooked(*args: Any, **kwargs: Any) -> Any:
        rec = _ACTIVE[-1] if _ACTIVE else None
        if rec is None:
            return real(*args, **kwargs)
        dir_fd = kwargs.get("dir_fd")
        target = args[0] if args else kwargs.get("path", kwargs.get("src"))
        rel = rec.rel(target, dir_fd) if target is not None else None
        rel2 = None
        if name in ("replace", "rename", "link") and len(args) > 1:
            rel2 = rec.rel(args[1], kwargs.get("dst_dir_fd"))
        if rel is None and rel2 is None:
            return real(*args, **kwargs)
        rec.count(name)
        if name == "open":
            flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
            created = False
            if flags & os.O_CREAT:
                try:
                    _REAL["lstat"](args[0], dir_fd=dir_fd)
                except OSError:
                    created = True
            fd = real(*args, **kwargs)
            with rec.lock:
                rec.fds[fd] = rel if rel is not None else ""
                if created:
                    st = os.fstat(fd)
                    rec.gens[st.st_ino] = rec.gens.get(st.st_ino, 0) + 1
                    rec.log("create", rel or "")
                    rec.changed(rel)
            return fd
        result = real(*args, **kwargs)
        if name in ("fsync", "fdatasync"):
            rec.synced(args[0])
        elif name in _LOGGED:
            rec.log(name, rel or "", rel2 or "")
            if name in _ENTRY_CHANGES:
                rec.changed(rel)
                rec.changed(rel2)
        return result

    hooked.__name__ = name
    return hooked


def _hooked_close(fd: int) -> None:
    rec = _ACTIVE[-1] if _ACTIVE else None
    if rec is not None:
        with rec.lock:
            rec.fds.pop(fd, None)
    _REAL["close"](fd)


def _hooked_syncfs(fd: int) -> int:
    rec = _ACTIVE[-1] if _ACTIVE else None
    if rec is not None:
        try:
            rec.count("filemem._fs._SYNCFS")
        except OSError as exc:
            import ctypes

            ctypes.set_errno(exc.errno or errno.EIO)
            return -1
    assert _REAL_SYNCFS is not None
    got = _REAL_SYNCFS(fd)
    if rec is not None and got == 0:
        rec.synced_all()
    return int(got)


_REAL["__readlink"] = os.readlink


@contextmanager
def shim(root: str, *, record: bool = True, fault: Fault | None = None) -> Iterator[Recorder]:
    """Hook :data:`HOOKED` for calls under ``root`` while the block runs; yield the recorder."""
    rec = Recorder(os.path.abspath(root), record=record, fault=fault)
    patched = {name: _wrap(name) for name in _REAL if name not in ("close", "__readlink")}
    _ACTIVE.append(rec)
    for name, fn in patched.items():
        setattr(os, name, fn)
    os.close = _hooked_close
    if _REAL_SYNCFS is not None:
        _fs._SYNCFS = _hooked_syncfs  # type: ignore[misc]
    try:
        yield rec
    finally:
        for name in patched:
            setattr(os, name, _REAL[name])
        os.close = _REAL["close"]
        _fs._SYNCFS = _REAL_SYNCFS  # type: ignore[misc]
        _ACTIVE.remove(rec)
