"""The filemem exception tree (layer L0).

Every error the library raises on purpose is a :class:`FileMemError`; each leaf
also inherits the builtin that matches its meaning, so ``except TimeoutError``
or ``except ValueError`` keep working in code that does not know filemem::

    FileMemError(Exception)
    ├── InvalidKeyError(FileMemError, ValueError)        bad key or namespace
    ├── InvalidValueError(FileMemError, ValueError)      not encodable, or too big
    ├── ConflictError(FileMemError, ValueError)          if_version did not match
    ├── CorruptShardError(FileMemError, ValueError)      checksum / parse failure
    ├── UnsupportedFormatError(FileMemError, ValueError) unknown format version
    ├── InvalidQueryError(FileMemError, ValueError)      bad search query or filter
    ├── LockTimeout(FileMemError, TimeoutError)          lock not had in time
    ├── StoreClosedError(FileMemError, RuntimeError)     use after close()
    ├── ReadOnlyError(FileMemError, PermissionError)     write on a read-only store
    ├── SessionPermissionError(FileMemError, PermissionError)  outside a session's namespaces
    ├── SessionLimitError(FileMemError, TimeoutError)    no session slot in time
    ├── StorageError(FileMemError, OSError)              the disk (or the database server) said no
    ├── UnsupportedFeatureError(FileMemError, NotImplementedError)  not on this backend (yet)
    ├── QueueFullError(FileMemError, BufferError)        collector queue full (on_full="raise")
    └── FlushTimeoutError(FileMemError, TimeoutError)    collector flush/close not done in time

All of them survive pickling (a worker process may raise them to its parent):
each defines ``__reduce__`` from its constructor arguments.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConflictError",
    "CorruptShardError",
    "FileMemError",
    "FlushTimeoutError",
    "InvalidKeyError",
    "InvalidQueryError",
    "InvalidValueError",
    "LockTimeout",
    "QueueFullError",
    "ReadOnlyError",
    "SessionLimitError",
    "SessionPermissionError",
    "StorageError",
    "StoreClosedError",
    "UnsupportedFeatureError",
    "UnsupportedFormatError",
]


class FileMemError(Exception):
    """Root of every error filemem raises on purpose.

    Catch it to handle any filemem failure in one place::

        try:
            store.put("ns", "k", object())
        except filemem.FileMemError as exc:
            log.warning("memory write failed: %s", exc)
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.message,))


class InvalidKeyError(FileMemError, ValueError):
    """A key or namespace is empty, too long, or would escape the store.

    Raised before anything touches the disk. Fix the name: keys may not
    contain ``/`` or NUL, namespace segments may not be empty, ``.`` or
    ``..``.
    """

    def __init__(self, message: str, *, key: str | None = None, namespace: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.namespace = namespace

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.__class__, (self.message,), {"key": self.key, "namespace": self.namespace}))


class InvalidValueError(FileMemError, ValueError):
    """A value cannot be encoded by the store's codec, or is over the size limit.

    Raised before a byte is written: the store is unchanged.
    """


class ConflictError(FileMemError, ValueError):
    """An ``if_version`` precondition failed: the record changed since it was read.

    ``current_version`` is the version on disk (0 when the record is absent).
    Re-read the record and retry, or give up.
    """

    def __init__(
        self,
        message: str,
        *,
        namespace: tuple[str, ...] | None = None,
        key: str | None = None,
        expected: int | None = None,
        current_version: int = 0,
    ) -> None:
        super().__init__(message)
        self.namespace = namespace
        self.key = key
        self.expected = expected
        self.current_version = current_version

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                self.__class__,
                (self.message,),
                {
                    "namespace": self.namespace,
                    "key": self.key,
                    "expected": self.expected,
                    "current_version": self.current_version,
                },
            ),
        )


class CorruptShardError(FileMemError, ValueError):
    """A shard file failed its checksum or could not be parsed.

    The data is never served. Run ``filemem check --fix`` (or
    ``store.check(fix=True)``) to quarantine it; ``path`` names the file.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.__class__, (self.message,), {"path": self.path}))


class UnsupportedFormatError(FileMemError, ValueError):
    """The store or a shard was written in a format version this filemem does not know.

    Upgrade filemem; nothing was changed on disk.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.__class__, (self.message,), {"path": self.path}))


class InvalidQueryError(FileMemError, ValueError):
    """A search was given a filter, query, vector or paging argument it cannot use.

    Raised before anything is read: an unknown ``$operator``, a ``$in`` without
    a list, a negative ``limit``, a vector of the wrong dimension. Fix the
    call; ``field`` names the filter path at fault when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.__class__, (self.message,), {"field": self.field}))


class LockTimeout(FileMemError, TimeoutError):  # noqa: N818 - the name the design and users know
    """A lock could not be had within the timeout.

    ``path`` is the lock file and ``waited_s`` how long we waited. Another
    process holds the lock (a long batch, a snapshot); retry, or raise
    ``lock_timeout_s`` on the store.
    """

    def __init__(self, message: str, *, path: str | None = None, waited_s: float = 0.0) -> None:
        super().__init__(message)
        self.path = path
        self.waited_s = waited_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.__class__, (self.message,), {"path": self.path, "waited_s": self.waited_s}))


class StoreClosedError(FileMemError, RuntimeError):
    """The store (or a batch or snapshot) was used after it was closed."""


class ReadOnlyError(FileMemError, PermissionError):
    """A write was attempted on a store opened with ``readonly=True``."""


class SessionPermissionError(FileMemError, PermissionError):
    """A confined session touched a namespace it may not (see ``Store.session(namespace=..., shared=...)``).

    ``operation`` is what was refused (``"put"``, ``"get"``, ...), ``namespace``
    the namespace asked for, ``session_id`` the session. Nothing was read or
    written. The confinement guards against mistakes between cooperating
    agents, not against a hostile process that can open the files itself.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        namespace: tuple[str, ...] | None = None,
        session_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.namespace = namespace
        self.session_id = session_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                self.__class__,
                (self.message,),
                {"operation": self.operation, "namespace": self.namespace, "session_id": self.session_id},
            ),
        )


class SessionLimitError(FileMemError, TimeoutError):
    """A session could not start: ``max_sessions`` live sessions already hold every slot.

    Raised at once with ``wait=False``, else after ``timeout`` seconds.
    ``scope`` names the limit (``()`` for the whole store, else a namespace),
    ``limit`` its value and ``waited_s`` how long we waited. Nothing of the
    session is left behind. Retry later, or raise the limit
    (``Store.limit_sessions``).
    """

    def __init__(
        self, message: str, *, scope: tuple[str, ...] | None = None, limit: int = 0, waited_s: float = 0.0
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.limit = limit
        self.waited_s = waited_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (self.__class__, (self.message,), {"scope": self.scope, "limit": self.limit, "waited_s": self.waited_s}),
        )


class StorageError(FileMemError, OSError):
    """The operating system refused a write or a sync (disk full, I/O error, fsync failure).

    The operation did not take effect; ``errno`` and ``path`` say what failed.
    A failed fsync is never retried into a false success.
    """

    def __init__(self, message: str, *, errno: int | None = None, path: str | None = None) -> None:
        # OSError's own constructor interprets (errno, strerror) pairs; keep
        # the message whole and set the attributes ourselves.
        FileMemError.__init__(self, message)
        self.errno = errno
        self.path = path

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.__class__, (self.message,), {"errno": self.errno, "path": self.path}))


class UnsupportedFeatureError(FileMemError, NotImplementedError):
    """The store's backend does not offer this feature (yet).

    ``feature`` names it (``"search"``, ``"sessions"``, ...) and ``backend``
    the backend (``"postgres"``). Nothing was read or written. Use a file
    store for the feature, or see docs/scale-out.md for what the server
    backend offers.
    """

    def __init__(self, message: str, *, feature: str | None = None, backend: str | None = None) -> None:
        super().__init__(message)
        self.feature = feature
        self.backend = backend

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.__class__, (self.message,), {"feature": self.feature, "backend": self.backend}))


class QueueFullError(FileMemError, BufferError):
    """A collector's queue is full and its ``on_full`` policy is ``"raise"``.

    Nothing was queued for this call. Slow down, call ``flush()``, or choose
    ``on_full="block"`` (wait for room) or ``"drop_oldest"``.
    """


class FlushTimeoutError(FileMemError, TimeoutError):
    """A collector's ``flush()`` or ``close()`` did not finish within its timeout.

    Nothing is lost: queued records stay queued (and journaled, with the
    journal on); ``collector.health()`` says why the writer is behind.
    """


def _rebuild(cls: type[FileMemError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> FileMemError:
    """Unpickle helper: keyword-only attributes cannot travel in ``args``."""
    return cls(*args, **kwargs)
