"""Atomic file I/O (layer L1). The only module that turns OSError into StorageError.

The write sequence, and why each step is there:

1. create a temp file *in the same directory* (``os.replace`` is only atomic
   within one file system), mode 0600, ``O_EXCL`` so two writers never share
   one;
2. write everything, then ``fsync`` it: the data must be on disk before the
   name points at it, or a power cut leaves a named but empty file;
3. stamp the mtime strictly above the old file's (see :func:`atomic_write`);
4. ``os.replace`` over the target: readers see the old inode or the new one,
   never a mix;
5. ``fsync`` the directory: without it the rename itself can be lost on power
   failure even though the data blocks are safe.

With ``durability="flush"`` steps 2 and 5 skip the fsyncs: the data survives a
crash of the process (it is in the kernel's page cache) but not a power cut.

**Nothing inside a store is followed or waited on.** Every existing file is
opened with ``O_NOFOLLOW | O_NONBLOCK`` and refused unless ``fstat`` says it is
a regular file (:func:`open_regular`), and directories are judged by ``lstat``
(:func:`dir_exists`, :func:`check_tree`): a planted symlink cannot lead a write
out of the store, and a FIFO cannot hang a process. Both are refused at once
with :class:`~filemem.StorageError`, and ``check()`` reports them.

**Existence is never guessed.** :func:`lexists` answers False only for
ENOENT/ENOTDIR; any other error (EIO, EACCES, ...) raises, because recovery
decides what to roll forward from the answer (``os.path.exists`` turns an I/O
error into False, which once split a committed batch for good).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import stat as _stat
import sys
import time
from collections.abc import Callable
from typing import Final

from ._errors import StorageError

__all__ = [
    "TEMP_MARK",
    "StatKey",
    "TempFile",
    "atomic_write",
    "can_sync_filesystem",
    "check_tree",
    "dir_exists",
    "ensure_dir",
    "foreign_kind_error",
    "fsync_dir",
    "lexists",
    "listdir",
    "lstat",
    "open_regular",
    "read_fd",
    "read_file",
    "remove",
    "remove_quietly",
    "replace",
    "stat_key",
    "storage_error",
    "sync_filesystem",
    "temp_path",
    "trust_root",
    "write_fd",
    "write_new_file",
]

#: Every temp file's name contains this; ``check`` removes leftovers by it.
TEMP_MARK: Final = ".tmp-"
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700
#: Errnos that mean "the disk cannot take it", reported as such.
_SPACE_ERRNOS: Final = frozenset({_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG})

#: Never follow a symlink at the last component, never block opening a FIFO.
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_BINARY: Final = getattr(os, "O_BINARY", 0)
_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)
#: What O_NOFOLLOW reports for a symlink (FreeBSD says EMLINK, NetBSD EFTYPE).
_LINK_ERRNOS: Final = frozenset({_errno.ELOOP, _errno.EMLINK, getattr(_errno, "EFTYPE", _errno.ELOOP)})

#: What identifies one version of a file: (inode, mtime in ns, size).
StatKey = tuple[int, int, int]


def _kind(mode: int) -> str:
    if _stat.S_ISLNK(mode):
        return "a symbolic link"
    if _stat.S_ISFIFO(mode):
        return "a FIFO"
    if _stat.S_ISSOCK(mode):
        return "a socket"
    if _stat.S_ISCHR(mode) or _stat.S_ISBLK(mode):
        return "a device"
    if _stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def foreign_kind_error(path: str, mode: int, wanted: str = "regular file") -> StorageError:
    """The error for a store path that holds the wrong kind of file (never followed, never opened)."""
    return StorageError(
        f"{path} is {_kind(mode)}, not a {wanted}: filemem never follows links or opens special files "
        "inside a store (run `filemem check` to see them)",
        path=path,
    )


def lstat(path: str) -> os.stat_result | None:
    """``os.lstat`` (never follows a link); None only if the name does not exist."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise storage_error(exc, "stat", path) from exc


def lexists(path: str) -> bool:
    """Whether a name exists (a link counts, unfollowed). Raises StorageError when it cannot tell."""
    return lstat(path) is not None


#: Store roots in use by this process. A root and its ancestors may be links
#: (where a store lives is its user's choice); nothing *inside* a root may be.
_ROOTS: set[str] = set()


def trust_root(root: str) -> None:
    """Declare ``root`` a store root: it and the directories above it may be symlinks."""
    _ROOTS.add(os.path.abspath(root))


def _above_or_at_root(path: str) -> bool:
    p = os.path.abspath(path).rstrip(os.sep) or os.sep
    return any(r == p or r.startswith(p if p.endswith(os.sep) else p + os.sep) for r in _ROOTS)


def dir_exists(path: str) -> bool:
    """Whether ``path`` is a directory; False if absent; StorageError if it is anything else.

    A link counts as "anything else" inside a store; a store root (see
    :func:`trust_root`) and its ancestors are followed.
    """
    st = lstat(path)
    if st is None:
        return False
    if _stat.S_ISLNK(st.st_mode) and _above_or_at_root(path):
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise storage_error(exc, "stat", path) from exc
    if not _stat.S_ISDIR(st.st_mode):
        raise foreign_kind_error(path, st.st_mode, "directory")
    return True


def check_tree(root: str, path: str) -> None:
    """Raise StorageError if any component of ``path`` below ``root`` is a link or no directory.

    Components that do not exist yet are fine (they will be created as real
    directories). ``O_NOFOLLOW`` guards only a path's last component; this
    guards the ones in between (``ns/secret -> ../outside``).
    """
    rel = os.path.relpath(path, root)
    if rel == os.curdir:
        return
    here = root
    for part in rel.split(os.sep):
        here = os.path.join(here, part)
        if not dir_exists(here):
            return


def open_regular(path: str, flags: int, mode: int = _FILE_MODE, *, action: str = "open") -> int | None:
    """Open a file of the store: None if absent; StorageError if it is a link or not a regular file.

    ``O_NOFOLLOW`` refuses a symlink at the name and ``O_NONBLOCK`` makes a
    FIFO open return at once (it would otherwise wait for a peer for ever);
    ``fstat`` then refuses anything that is not a regular file. O_NONBLOCK has
    no effect on a regular file's reads and writes.
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _BINARY, mode)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        st = lstat(path) if exc.errno in _LINK_ERRNOS or exc.errno == _errno.ENXIO else None
        if st is not None and not _stat.S_ISREG(st.st_mode):
            raise foreign_kind_error(path, st.st_mode) from exc
        raise storage_error(exc, action, path) from exc
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise storage_error(exc, "stat", path) from exc
    if not _stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise foreign_kind_error(path, st.st_mode)
    return fd


def read_fd(fd: int, path: str) -> bytes:
    """The whole content of an open file (from its current offset)."""
    chunks: list[bytes] = []
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise storage_error(exc, "read", path) from exc
    return b"".join(chunks)


def storage_error(exc: OSError, action: str, path: str) -> StorageError:
    """Translate an OSError at the boundary, keeping errno and path."""
    what = "disk full or quota reached" if exc.errno in _SPACE_ERRNOS else (exc.strerror or str(exc))
    return StorageError(f"could not {action} {path}: {what}", errno=exc.errno, path=path)


def stat_key(st: os.stat_result) -> StatKey:
    """The version key of a stat result."""
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def temp_path(target: str, tag: str = "") -> str:
    """A fresh temp name beside ``target`` (pid and randomness keep writers apart)."""
    return f"{target}{TEMP_MARK}{tag}{os.getpid()}-{os.urandom(4).hex()}"


def ensure_dir(path: str) -> None:
    """Create ``path`` and missing parents with mode 0700, fsyncing each new entry's parent.

    A link or file where a directory should be raises StorageError (never followed).
    """
    if dir_exists(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        ensure_dir(parent)
    try:
        os.mkdir(path, _DIR_MODE)
    except FileExistsError:
        dir_exists(path)  # raises if what won the race is a link or a file
        return
    except OSError as exc:
        raise storage_error(exc, "create directory", path) from exc
    # A new directory entry is itself metadata of the parent: sync it so a
    # shard renamed into ``path`` later cannot outlive its own directory.
    fsync_dir(parent or ".")


def fsync_dir(path: str, *, missing_ok: bool = False) -> bool:
    """fsync a directory so renames and unlinks in it are durable.

    ``missing_ok``: a directory that certainly does not exist (ENOENT) is
    skipped and False returned; any other failure still raises.
    """
    nofollow = 0 if _above_or_at_root(path) else _NOFOLLOW
    try:
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | nofollow)
    except (FileNotFoundError, NotADirectoryError) as exc:
        if missing_ok and lstat(path) is None:
            return False
        raise storage_error(exc, "open directory", path) from exc
    except OSError as exc:
        raise storage_error(exc, "open directory", path) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (and Windows) cannot fsync a directory; EINVAL
        # there means "not supported", not "failed".
        if exc.errno not in (_errno.EINVAL, _errno.EBADF):
            raise storage_error(exc, "fsync directory", path) from exc
    finally:
        os.close(fd)
    return True


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS: Final = _load_syncfs()


def can_sync_filesystem() -> bool:
    """Whether :func:`sync_filesystem` is available (Linux's syncfs)."""
    return _SYNCFS is not None


def sync_filesystem(path: str) -> None:
    """Make every write to the file system holding ``path`` durable, in one journal commit.

    For a batch that wrote many files, one ``syncfs`` costs one commit where
    an ``fsync`` per file costs one each. Linux only (see
    :func:`can_sync_filesystem`); it reports write-back errors since Linux 5.8.
    """
    if _SYNCFS is None:
        raise StorageError("syncfs is not available on this platform", path=path)
    try:
        fd = os.open(path, os.O_RDONLY | _DIRECTORY)
    except OSError as exc:
        raise storage_error(exc, "open directory", path) from exc
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise storage_error(OSError(err, os.strerror(err)), "sync the file system of", path)
    finally:
        os.close(fd)


def _datasync(fd: int) -> None:
    # fdatasync flushes the data and what is needed to read it back (size,
    # blocks) and skips pure timestamps: enough for a file that is about to be
    # renamed into place. macOS has no fdatasync.
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


class TempFile:
    """A temp file beside a target, created now and filled later.

    Creating an inode is one of the slower steps of an atomic write on a
    journalling file system; a writer creates its temp *before* it takes the
    shard lock, so other writers do not wait behind that step.
    """

    __slots__ = ("directory", "fd", "path")

    def __init__(self, target: str, tag: str = "") -> None:
        self.path = temp_path(target, tag)
        self.directory = os.path.dirname(target) or "."
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), _FILE_MODE)
        except OSError as exc:
            raise storage_error(exc, "create", self.path) from exc

    def fill(self, data: bytes, *, sync: bool, mtime_ns: int | None) -> StatKey:
        """Write ``data``, stamp the mtime, sync if asked, close. Returns the version key."""
        fd, self.fd = self.fd, -1
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            if sync:
                _datasync(fd)
            key = stat_key(os.fstat(fd))
        except OSError as exc:
            os.close(fd)
            remove_quietly(self.path)
            raise storage_error(exc, "write and sync" if sync else "write", self.path) from exc
        except BaseException:
            os.close(fd)
            remove_quietly(self.path)
            raise
        os.close(fd)
        return key

    def commit(self, target: str, data: bytes, *, sync: bool, min_mtime_ns: int = 0, sync_dir: bool = True) -> StatKey:
        """Fill the temp and rename it over ``target`` (see :func:`atomic_write`)."""
        if os.path.dirname(target) != os.path.dirname(self.path):
            raise ValueError("a temp file can only replace a file in its own directory")
        key = self.fill(data, sync=sync, mtime_ns=max(time.time_ns(), min_mtime_ns))
        try:
            os.replace(self.path, target)
        except OSError as exc:
            remove_quietly(self.path)
            raise storage_error(exc, "rename into", target) from exc
        if sync and sync_dir:
            fsync_dir(self.directory)
        return key

    def discard(self) -> None:
        """Close and remove an unused temp."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        remove_quietly(self.path)


def write_new_file(path: str, data: bytes, *, sync: bool, mtime_ns: int | None = None) -> StatKey:
    """Write ``data`` to a new file at ``path`` (``O_EXCL``), synced if asked.

    Returns the new file's version key (it survives a rename). On any failure
    the partial file is removed and StorageError raised.
    """
    tmp = TempFile.__new__(TempFile)
    tmp.path = path
    tmp.directory = os.path.dirname(path) or "."
    try:
        tmp.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), _FILE_MODE)
    except OSError as exc:
        raise storage_error(exc, "create", path) from exc
    return tmp.fill(data, sync=sync, mtime_ns=mtime_ns)


def write_fd(fd: int, data: bytes, *, sync: bool, path: str) -> None:
    """Write all of ``data`` to an open descriptor, then fsync it if asked."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    except OSError as exc:
        raise storage_error(exc, "write", path) from exc


def replace(src: str, dst: str) -> None:
    """``os.replace`` with our error."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise storage_error(exc, "rename into", dst) from exc


def listdir(path: str) -> list[str]:
    """Names in ``path``; empty if it does not exist."""
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        return []
    except OSError as exc:
        raise storage_error(exc, "list", path) from exc


def atomic_write(target: str, data: bytes, *, sync: bool, min_mtime_ns: int = 0) -> StatKey:
    """Replace ``target`` with ``data`` atomically (see the module docstring).

    ``min_mtime_ns``: the new file's mtime is stamped at least this (pass the
    old file's mtime + 1) so that (inode, mtime_ns, size) never repeats for a
    path even when the clock is coarse and an inode number is reused; readers
    rely on that key to know a cached parse is current.
    """
    return TempFile(target).commit(target, data, sync=sync, min_mtime_ns=min_mtime_ns)


def read_file(path: str) -> tuple[bytes, StatKey] | None:
    """Read a whole file and the version key of *the inode read*; None if absent.

    The key comes from ``fstat`` of the open descriptor, not a separate
    ``stat`` of the name, so it always describes the bytes returned even if
    the name is replaced in between.
    """
    fd = open_regular(path, os.O_RDONLY)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        chunks: list[bytes] = []
        remaining = st.st_size
        while True:
            chunk = os.read(fd, max(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as exc:
        raise storage_error(exc, "read", path) from exc
    finally:
        os.close(fd)
    return data, stat_key(st)


def remove(path: str) -> bool:
    """Unlink ``path``; True if it was there, False if it certainly was not; StorageError otherwise."""
    try:
        os.unlink(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise storage_error(exc, "remove", path) from exc


def remove_quietly(path: str) -> bool:
    """Unlink ``path``; True if it was there. Only for garbage (temp files)."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return False
