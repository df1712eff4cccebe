"""Reads: views of namespaces, the shard cache, lock-free gets and listings (layer L2).

**Which shard holds a key.** A key's 64-bit hash is a string of bits; the
shard for it is the *deepest existing* ``s<prefix>.shard`` whose prefix starts
that string (or, when none exists, the first prefix that is no ancestor of an
existing shard: a new region). Shards split in two when they pass
``shard_max_bytes``, so a write rewrites a bounded file however big the store.
Readers that meet a flagged or missing shard re-list the directory and
resolve again (see ``_split``).

**Plain gets take no lock.** Files are only ever replaced by rename, so a
reader holds a whole old or whole new inode; one ``stat`` tells whether the
parsed copy in the process cache is current. The (inode, mtime_ns, size) key
cannot repeat for a path because writers stamp each new file's mtime above
the old one's. On a format-2 store the log's unfolded records sit above the
shards: a read asks the log first (one 8-byte read of its commit counter).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from typing import Final, Protocol

from .. import _fs, _locks
from .._errors import StorageError
from .._names import escape_segment, hash_bits, legacy_segment, unescape_segment
from .._shard import SHARD_SUFFIX, Record, Shard, decode_shard, lacks_key
from .._view import View
from .._wal import Log
from .._walk import ShardWalk
from ._handle import CacheEntryLike
from ._marker import INTERNAL_DIR, INTERNAL_NS, Marker

#: Held shared (in ``wal/``) by whoever waits to hold the folds off: folds back off meanwhile.
FOLD_WAIT_LOCK: Final = "foldwait.lock"


class Reads(Marker):
    """Views, the cache, and every read that needs no lock."""

    def ns_dir(self, namespace: tuple[str, ...]) -> str:
        """Directory of a (validated) namespace; an internal one (see INTERNAL_NS) lives under internal/."""
        if namespace and namespace[0] == INTERNAL_NS:
            return os.path.join(self.root, INTERNAL_DIR, *(escape_segment(s) for s in namespace[1:]))
        path = self.ns_root
        for s in namespace:
            old = legacy_segment(s)
            # A directory an older filemem named the old way stays in use (see _names.legacy_segment).
            path = os.path.join(
                path, old if old is not None and _fs.lexists(os.path.join(path, old)) else escape_segment(s)
            )
        return path

    def view(self, namespace: tuple[str, ...]) -> View:
        """This process's view of ``namespace`` (created on first use)."""
        v = self._views.get(namespace)
        if v is None:
            v = View(namespace, self.ns_dir(namespace))
            # Never follow a link inside the store (ns/secret -> ../outside):
            # every file of a view is opened by a path through these directories.
            _fs.check_tree(self.root, v.dir)
            if len(self._views) > 65536:
                self._views.clear()
                self._views_by_dir.clear()
            self._views[namespace] = v
            self._views_by_dir[v.dir] = v
        return v

    def namespace_exists(self, namespace: tuple[str, ...]) -> bool:
        """Whether the namespace's directory exists (one lstat; raises StorageError when it cannot tell)."""
        return _fs.lexists(self.ns_dir(namespace))

    def view_of_dir(self, directory: str) -> View | None:
        """The view of the namespace stored in ``directory``, if this process has one."""
        return self._views_by_dir.get(directory)

    # ------------------------------------------------------------------ cache

    def lacks(self, path: str, prefix: str, key: str) -> bool:
        """Whether the shard at ``path`` surely holds no record of ``key`` (False: maybe, or no file: ask :meth:`load`).

        A cached parse answers through :meth:`load`; otherwise the file is
        read and checked (header, checksum) but its records are not decoded
        (:func:`filemem._shard.lacks_key`), and nothing is cached.
        """
        if self._overlay:
            return False  # a dead writer's batch may owe this shard: load knows where to read
        entry = self.cache.peek(path)
        if entry is not None and entry.shard is not None:
            return False
        got = _fs.read_file(path)
        if got is None:
            return False
        return lacks_key(got[0], path, key, prefix)

    def load(self, path: str, prefix: str | None, *, fresh_ok: bool = False, keep: bool = True) -> Shard | None:
        """The current parse of the shard at ``path``, or None if absent.

        ``fresh_ok``: a cache entry that is still fresh (TTL, no change event)
        is used with no system call. Otherwise one ``stat`` when the cached
        parse is current, a read and parse when not. ``keep=False``: a new
        parse is not added to the cache (the fold's: it rewrites the shard at
        once and reads nothing of it). Raises CorruptShardError for a damaged
        file.
        """
        cache = self.cache
        if fresh_ok:
            hit = cache.fresh(path)
            if hit is not None:
                return hit.shard
        if self._overlay:
            pending = self._overlay.get(path)
            if pending is not None:
                got = _fs.read_file(pending)
                if got is not None:  # else recovered meanwhile: read the target
                    return decode_shard(got[0], path, self._codecs, prefix)
        # Whatever we find is current as of *before* we looked: a slow read
        # must not stretch the entry's freshness past the TTL.
        started = time.monotonic()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if keep:
                cache.store(path, None, 0, as_of=started)
            else:
                cache.forget(path)
            return None
        except OSError as exc:
            raise _fs.storage_error(exc, "stat", path) from exc
        entry = cache.peek(path)
        if (
            entry is not None
            and entry.shard is not None
            and entry.shard.statkey == (st.st_ino, st.st_mtime_ns, st.st_size)
        ):
            cache.revalidated(path, entry, as_of=started)
            return entry.shard
        got = _fs.read_file(path)
        if got is None:
            if keep:
                cache.store(path, None, 0, as_of=started)
            else:
                cache.forget(path)
            return None
        data, key = got
        # With a log, shards are written only by folds, splits and compaction,
        # a few times per shard where reads parse it in every process: the
        # encoded copies of its records (a quarter of a cached shard's memory)
        # are not kept in the cache (issue 13). A parse that is not kept is the
        # fold's, which rewrites the shard at once: it keeps them, or every
        # record of every shard it touches was encoded again (8 encodes per
        # folded record folding 30k keys into one namespace).
        shard = decode_shard(data, path, self._codecs, prefix, keep_pairs=self.log is None or not keep)
        shard.statkey = key
        self.counters["shard_parses"] += 1
        if keep:
            cache.store(path, shard, len(data), as_of=started)
        elif entry is not None:
            cache.forget(path)  # stale: a later reader must not revalidate against it
        return shard

    # ------------------------------------------------------------------ reads

    def read(self, namespace: tuple[str, ...], key: str, *, fresh_ok: bool = False) -> Record | None:
        """The live record for ``key``, lock-free; None if absent or expired.

        ``fresh_ok``: serve from a fresh cache entry without any system call
        (the "cached" consistency level); otherwise revalidate ("strict").
        """
        return self.read_entry(namespace, key, fresh_ok=fresh_ok)[0]

    def read_entry(
        self, namespace: tuple[str, ...], key: str, *, fresh_ok: bool = False
    ) -> tuple[Record | None, CacheEntryLike | None]:
        """Like :meth:`read`, plus the cache entry the record came from when it was a fresh hit."""
        log = self.log
        if log is not None:
            # One 8-byte read of the shared commit counter; new synced records
            # (if any) go into the overlay, which is above the shards.
            log.refresh()
            entry = log.get(namespace, key)
            if entry is not None:
                rec = entry.record
                if rec is None:
                    return None, None
                x = rec.get("expires_at")
                if x is not None and x <= time.time():
                    return None, None
                # Current until the commit counter moves (Store's hot path checks
                # changed() first): a cached get of it needs no system call.
                return rec, (_LOG_HIT if fresh_ok else None)
        return self._read_shards(namespace, key, fresh_ok=fresh_ok)

    def hot_probe(self) -> tuple[object, Callable[[], int], HasGeneration]:
        """What a cache of records above the engine checks before serving one (no system call).

        ``(log, commits, overlay)``: a record read when ``commits()`` returned
        ``n`` and ``overlay.generation`` was ``g`` (both taken *before* the
        read) is still this process's answer while both are unchanged and its
        shard's cache entry is fresh. ``log`` is the log object the two belong
        to: when :attr:`log` is another one (a store upgraded meanwhile), ask
        again. Without a log, nothing but the shard cache can move: the
        counter and generation stay 0.
        """
        log = self.log
        if log is None:
            return None, _no_commits, _NO_OVERLAY
        return log, log.commits_reader(), log.overlay

    def _read_shards(
        self, namespace: tuple[str, ...], key: str, *, fresh_ok: bool = False
    ) -> tuple[Record | None, CacheEntryLike | None]:
        view = self.view(namespace)
        if view.stale and fresh_ok:
            view.refresh()
        bits = hash_bits(key)
        for attempt in range(8):
            prefix = view.resolve(bits)
            path = view.shard_path(prefix)
            if fresh_ok and attempt == 0:
                # Only the first look may trust the cache: a retry means the
                # cached picture was wrong somewhere, so revalidate everything.
                hit = self.cache.fresh(path)
                if hit is not None and hit.shard is None:
                    # Known absent and still fresh, but only trustworthy if the
                    # current listing also puts the key in a range no file
                    # covers: a shard split away is "absent" too, and a reader
                    # that resolved through an older listing must look again.
                    if prefix not in view.existing and view.resolve(bits) == prefix:
                        return None, None
                    hit = None
                    continue
                shard: Shard | None = hit.shard if hit is not None else self.load(path, prefix)
            else:
                hit = None
                shard = self.load(path, prefix)
            if shard is None or shard.splitting:
                if view.recheck(prefix, bits, missing=shard is None):
                    continue
                if shard is None:
                    return None, None
            rec = shard.records.get(key)
            if rec is None:
                return None, None
            x = rec.get("expires_at")
            if x is not None and x <= time.time():
                return None, None
            return rec, hit
        raise StorageError(f"namespace {view.dir} kept changing while reading {key!r}; retry", path=view.dir)

    def walk(self, namespace: tuple[str, ...], doing: str, *, settle: bool = False) -> ShardWalk:
        """A shard-by-shard listing of ``namespace`` (:mod:`filemem._walk`); ``doing`` names it in errors.

        On a format-2 store a walk that keeps meeting splits holds the folds
        off to finish (:meth:`folds_held`), so a listing ends whatever the
        write rate; a format-1 store's writers split the shards themselves,
        and nothing holds them.
        """
        hold = self.folds_held if self.log is not None else None
        return ShardWalk(self.view(namespace), doing, settle=settle, hold=hold)

    @contextlib.contextmanager
    def folds_held(self) -> Iterator[None]:
        """Every process's folds wait while the block runs (the fold lock, shared, as a snapshot's pin).

        The fold is the only writer of shard files on a format-2 store
        (check and compact aside), so the set of files stands still; writes
        go on into the log. Waits for a fold in progress to finish its step
        (:func:`pinned`; LockTimeout after the lock timeout).
        """
        log = self.log
        if log is None:
            yield
            return
        with pinned(log, self.lock_timeout_s):
            # Like a snapshot's pin: this process's settle() must not wait for it.
            self._pins += 1
            try:
                yield
            finally:
                self._pins -= 1

    def iter_shards(self, namespace: tuple[str, ...]) -> Iterator[tuple[str, Shard, Callable[[str], bool]]]:
        """Each live shard of a namespace with a filter saying which of its keys to take.

        Splits and merges may run meanwhile (see :mod:`filemem._walk`): a
        flagged shard shares its range with leaves, a shard back from a merge
        holds records already taken from its leaves; the filter keeps each
        record that exists throughout exactly once.
        """
        walk = self.walk(namespace, "listed")
        for prefix in walk:
            shard = self.load(walk.view.shard_path(prefix), prefix)
            if shard is None:
                walk.gone(prefix)  # split or merged away meanwhile: the next listing has its range
                continue
            kept = walk.take(prefix, shard.statkey, shard.splitting, shard.records)
            yield prefix, shard, (_all if kept is None else kept.__contains__)

    def _installed(self, path: str, shard: Shard, key: _fs.StatKey) -> None:
        # Our own write is current by construction: a process reads its own
        # writes at once, whatever the cache's TTL.
        shard.statkey = key
        if self.log is not None and self.cache.peek(path) is None:
            # On a logged store shards are written by folds, splits and
            # compaction, which read nothing back: caching every shard they
            # write kept the whole store decoded in the folding process (the
            # cache's bound counts file bytes, a parse takes 3-5x that; issue
            # 13: the folder's peak RSS). A shard this process had cached is
            # replaced by the new one, so its readers still skip a parse.
            return
        if self.log is not None and shard.pairs:
            # As in load(): on a logged store the cache keeps records only. A
            # copy, since the writer may still use the encoded pairs it made
            # (a split sizes its leaves by them); the fold process rewrites
            # hundreds of shards and kept every record twice (issue 13).
            cached = shard.copy()
            cached.pairs = {}
            cached.statkey = key
            cached.touched = shard.touched
            shard = cached
        self.cache.store(path, shard, key[2])

    def snapshot_lock(self, view: View, prefix: str, first: bool) -> _locks.Held:
        """A shared lock on one shard for a snapshot (turnstile only for the first)."""
        return _locks.shared(view.lock_path(prefix), self.lock_timeout_s, turnstile=view.turnstile if first else None)

    # ------------------------------------------------------------------ namespaces
    def list_namespaces(self, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Namespaces at or under ``prefix`` that hold at least one shard file."""
        start = self.ns_dir(prefix) if prefix else self.ns_root
        found: list[tuple[str, ...]] = []
        # The log before the directories: a fold between the two moves a
        # namespace into directories not yet walked, never out of sight.
        logged: list[tuple[str, ...]] = []
        log = self.log
        if log is not None:
            log.refresh()
            n = len(prefix)
            for ns in log.namespaces():
                if (
                    ns[:n] == prefix
                    and ns
                    and ns[0] != INTERNAL_NS
                    and any(e.record is not None for e in log.entries(ns).values())
                ):
                    logged.append(ns)

        def walk(directory: str, segments: tuple[str, ...]) -> None:
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:
                raise _fs.storage_error(exc, "list", directory) from exc
            if segments and any(e.name.endswith(SHARD_SUFFIX) for e in entries):
                found.append(segments)
            for e in sorted(entries, key=lambda e: e.name):
                if "." in e.name or not e.is_dir(follow_symlinks=False):
                    continue
                seg = unescape_segment(e.name)
                if seg is not None:
                    walk(e.path, (*segments, seg))

        walk(start, prefix)
        return sorted(set(found + logged))  # a legacy and a current directory may name the same namespace

    def namespace_dirs(self) -> Iterator[tuple[str, tuple[str, ...] | None]]:
        """Every directory under ns/ with its namespace (None: not a valid escaped name)."""

        def walk(directory: str, segments: tuple[str, ...] | None) -> Iterator[tuple[str, tuple[str, ...] | None]]:
            yield directory, segments
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:
                raise _fs.storage_error(exc, "list", directory) from exc
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    seg = unescape_segment(e.name)
                    child = (*segments, seg) if segments is not None and seg is not None else None
                    yield from walk(e.path, child)

        st = _fs.lstat(self.ns_root)
        if st is not None and stat.S_ISDIR(st.st_mode):  # a link there is check's finding, never followed
            yield from walk(self.ns_root, ())


# ---------------------------------------------------------------------- helpers


def _all(_key: str) -> bool:
    return True


@contextlib.contextmanager
def pinned(log: Log, timeout_s: float) -> Iterator[None]:
    """Hold every process's folds off (``wal/fold.lock`` shared) while the block runs.

    While it waits for a fold in progress, the waiter holds
    :data:`FOLD_WAIT_LOCK` shared, and a fold about to start a step backs
    off while that lock is held (``LogGlue.fold``): without it a folder that
    steps through a backlog back to back (taking the lock again within
    microseconds) kept a listing or a snapshot waiting for seconds under
    load, up to the lock timeout.
    """
    with contextlib.ExitStack() as stack:
        with _locks.shared(os.path.join(log.dir, FOLD_WAIT_LOCK), timeout_s):
            stack.enter_context(log.pin())  # the wait lock is let go once the pin is had
        yield


class HasGeneration(Protocol):
    """The overlay as a hot-key cache sees it: a number that moves whenever what readers see of the log does."""

    @property
    def generation(self) -> int: ...


class _NoOverlay:
    __slots__ = ()
    generation: Final = 0


_NO_OVERLAY: Final = _NoOverlay()


def _no_commits() -> int:
    return 0


class _LogHit:
    """The "cache entry" of a record answered from the log's overlay: fresh until the commit counter moves."""

    __slots__ = ("fresh_until", "shard", "used")

    def __init__(self) -> None:
        self.shard: Shard | None = None
        self.fresh_until = float("inf")
        self.used = False


_LOG_HIT: Final = _LogHit()
