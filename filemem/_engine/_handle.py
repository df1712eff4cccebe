"""The per-process handle: the state every room of the engine shares (layer L2).

Invariant: one handle belongs to one process. A forked child notices (an
at-fork hook bumps a counter; no system call on the fast path) and starts
over with no views, no cache and no fold thread of its parent's; a closed
handle raises StoreClosedError on every use. The attributes are declared here
once, for the type checker; ``Engine.__init__`` (in ``_core``) sets them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from .._errors import FileMemError, InvalidValueError, StoreClosedError
from .._shard import Shard
from .._types import Durability
from .._view import View
from .._wal import Log
from ..codecs import Codec
from ._ops import Op

if TYPE_CHECKING:
    from ._log import _Folder


#: More than the metadata of any record adds to its value's encoding (the
#: field names, a version, three timestamps), without the key.
_RECORD_OVERHEAD_BYTES: Final = 160
#: A timestamp whose JSON form is as long as any (17 significant digits).
_WIDEST_TIME: Final = 1795458108.1234567


#: Bumped in every forked child (see Engine.check_open).
_fork_generation = [0]


def _after_fork_in_child() -> None:
    _fork_generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class CacheEntryLike(Protocol):
    """What the engine reads from a cache entry."""

    shard: Shard | None
    fresh_until: float
    used: bool


class ShardCacheLike(Protocol):
    """The per-process shard cache the engine is given (filemem._cache.ShardCache).

    The engine sits below the cache layer, so it names only this shape.
    """

    def fresh(self, path: str) -> CacheEntryLike | None:
        """The entry if it may be used without a stat."""
        ...

    def peek(self, path: str) -> CacheEntryLike | None:
        """The entry, fresh or not."""
        ...

    def store(self, path: str, shard: Shard | None, size: int, *, as_of: float | None = None) -> None:
        """Remember a shard (or its absence) as current at ``as_of`` (default now)."""
        ...

    def revalidated(self, path: str, entry: Any, *, as_of: float | None = None) -> None:
        """An entry was found current by a stat."""
        ...

    def forget(self, path: str) -> None:
        """Drop an entry."""
        ...

    def forget_covering(self, directory: str, bits: list[str], deepest: int) -> int:
        """Drop the shard entries of ``directory`` whose prefix (at most ``deepest`` bits) starts some of ``bits``."""
        ...

    def clear(self) -> None:
        """Drop everything."""
        ...


class Handle:
    """State of one engine in one process, and the checks every entry point makes first."""

    root: str
    durability: Durability
    sync: bool
    lock_timeout_s: float
    shard_max_bytes: int
    max_value_bytes: int
    readonly: bool
    ns_root: str
    batch_dir: str
    _codecs: dict[str, Codec]
    codec: Codec
    #: The store's format (the marker's ``filemem``): 1 shards only, 2 the log in front.
    store_version: int
    _views: dict[tuple[str, ...], View]
    _views_by_dir: dict[str, View]
    cache: ShardCacheLike
    #: Read-only stores only: shards owed by a dead writer's batch (see recover_batches).
    _overlay: dict[str, str]
    _pid: int
    _fork_generation: int
    after_fork: Callable[[], None] | None
    after_apply: Callable[[list[Op]], None] | None
    closed: bool
    counters: dict[str, int]
    log: Log | None
    _announce_fd: int | None
    _folder: _Folder | None
    _folder_lock: threading.Lock
    _pins: int
    _fold_error: FileMemError | None

    def check_value(self, value: Any, key: str | None = None) -> bytes:
        """Raise InvalidValueError now, before any lock or file, if ``value`` cannot be stored; return its encoding.

        The bytes are ``self.codec``'s encoding of ``value``: a caller hands
        them on in ``Op.encoded`` so the commit does not encode the value twice.

        With ``key``, the limit is applied as the commit applies it, to the
        whole record (value plus its metadata), with the widest metadata a
        record can have: a record that passes here never fails the commit's
        check, so nothing (no directory, no lock file) is created for it.
        """
        data = self.codec.encode(value)
        size = len(data)
        if size > self.max_value_bytes:
            raise InvalidValueError(f"value encodes to {size} bytes; the limit is {self.max_value_bytes}")
        if key is not None and size + _RECORD_OVERHEAD_BYTES + 6 * len(key) > self.max_value_bytes:
            widest = {"value": value, "version": 1 << 53}
            widest.update(dict.fromkeys(("created_at", "updated_at", "expires_at"), _WIDEST_TIME))
            pair = len(self.codec.encode_pair(key, widest))
            if pair > self.max_value_bytes:
                raise InvalidValueError(
                    f"record {key!r} encodes to up to {pair} bytes with its metadata; "
                    f"the limit is {self.max_value_bytes}"
                )
        return data

    def check_open(self) -> None:
        """Raise if closed; reset per-process state after a fork."""
        if self.closed:
            raise StoreClosedError(f"store {self.root} is closed")
        # A counter bumped by an at-fork hook, not os.getpid(): getpid is a
        # system call on current glibc, and a fresh cached read makes none.
        if self._fork_generation != _fork_generation[0]:
            self._fork_generation = _fork_generation[0]
            # A forked child shares nothing mutable with its parent but files.
            self._pid = os.getpid()
            self._views = {}
            self._views_by_dir = {}
            if self.log is not None:
                self.log.after_fork()
                self._folder = None  # the parent's thread did not come along
                self._folder_lock = threading.Lock()
            if self.after_fork is not None:
                self.after_fork()
            else:
                self.cache.clear()
