"""The log's shared core (layer L2): its files, its locks and a consistent copy of its control page.

:class:`LogCore` holds what every part of :class:`filemem._wal._log.Log`
needs: the append lock (threads of a process queue on a mutex, processes on
``flock``), the control page read whole and consistent (re-derived from the
checkpoint and a scan when a writer died inside an update), and the
translation of ``OSError`` into ``StorageError`` at the entry points.

Invariant: the control page's ``appended`` and ``last_lsn`` are written only
under the append lock, its other fields only under the page lock (taken after
the append lock by those that hold both), and its
counters (``commits``, ``last_lsn``, ``folds``) never go down, even when the
page is re-derived: sequence numbers the page handed out are never reused.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from .. import _fs, _locks
from .._errors import FileMemError, LockTimeout, StorageError
from ..codecs import Codec
from . import _format, _platform
from ._carry import Carried, is_carried_float
from ._control import Control, ControlPage, boot_id
from ._fold import Checkpoint, read_checkpoint
from ._overlay import Change, Overlay
from ._reader import LogReader
from ._writer import LogWriter

WAL_DIR: Final = "wal"
CONTROL: Final = "control"
APPEND_LOCK: Final = "append.lock"
#: Held, briefly, by whoever writes the control page (see :meth:`LogCore._update_page`).
PAGE_LOCK: Final = "page.lock"
FOLD_LOCK: Final = "fold.lock"
OPEN_LOCK: Final = "open.lock"
FIRST_POSITION: Final = _format.FIRST_POSITION
_FIRST_SLEEP_S: Final = 0.00002
_MAX_SLEEP_S: Final = 0.002
#: How often a thread waiting for another thread's append lock looks at its abort event.
_ABORT_CHECK_S: Final = 0.01
#: Yields before a page-lock waiter starts sleeping (the lock's sections are a few microseconds).
_PAGE_YIELDS: Final = 50

_P = ParamSpec("_P")
_R = TypeVar("_R")
_L = TypeVar("_L", bound="LogCore")


def _storage_errors(action: str) -> Callable[[Callable[Concatenate[_L, _P], _R]], Callable[Concatenate[_L, _P], _R]]:
    """Translate an ``OSError`` escaping a :class:`Log` entry point into ``StorageError`` (ours pass as they are)."""

    def wrap(fn: Callable[Concatenate[_L, _P], _R]) -> Callable[Concatenate[_L, _P], _R]:
        @functools.wraps(fn)
        def translated(log: _L, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(log, *args, **kwargs)
            except FileMemError:
                raise
            except OSError as exc:
                raise _fs.storage_error(exc, action, log.dir) from exc

        return translated

    return wrap


#: What a write's decide callback returns: the ops to log, the results to
#: return to the caller, and the overlay entries (same order as the ops).
Decision = tuple[list[_format.LogOp], list[Any], list[Change]]


#: Resolves a carried ``created_at`` (see _carry): (namespace, key, lsn, carried) -> the time.
Resolver = Callable[[tuple[str, ...], str, int, Carried], float]


def record_of(codecs: dict[str, Codec], op: _format.LogOp, lsn: int, now: float) -> dict[str, Any] | None:
    """The shard record a logged op stands for (None: deleted).

    A carried ``created_at`` (NaN in the frame) stays a :class:`Carried` here:
    the fold resolves it against the shard it rewrites.
    """
    if op.kind != _format.PUT:
        return None
    assert op.value is not None and op.codec is not None
    created = op.created_at
    rec: dict[str, Any] = {
        "value": codecs[op.codec].decode(op.value),
        "version": lsn,
        "created_at": Carried(now) if is_carried_float(created) else created,
        "updated_at": now,
    }
    if op.expires_at is not None:
        rec["expires_at"] = op.expires_at
    return rec


def resolved_record_of(
    codecs: dict[str, Codec], resolve: Resolver | None, op: _format.LogOp, lsn: int, now: float
) -> dict[str, Any] | None:
    """Like :func:`record_of`, with a carried ``created_at`` resolved (what readers are served)."""
    rec = record_of(codecs, op, lsn, now)
    if rec is not None and resolve is not None:
        created = rec["created_at"]
        if isinstance(created, Carried):
            rec["created_at"] = resolve(op.namespace, op.key, lsn, created)
    return rec


class LogCore:
    """The state of one store's log in one process, its append lock and its control page (see :class:`Log`)."""

    root: str
    dir: str
    readonly: bool
    sync_on: bool
    codecs: dict[str, Codec]
    lock_timeout_s: float
    segment_bytes: int
    fold_bytes: int
    fold_step_bytes: int
    on_folded: Callable[[list[tuple[tuple[str, ...], str]] | None], None]
    on_published: Callable[[], None]
    #: Resolves carried ``created_at`` values of records served from the overlay (the engine sets it).
    resolve_created: Resolver | None = None
    failed: StorageError | None
    folds: int
    #: Times a fold let a waiting listing or snapshot in mid-fold, and restarted after another fold.
    fold_yields: int
    fold_restarts: int
    fold_cut: bool
    unfolded_at_commit: int
    last_write: float
    control: ControlPage
    reader: LogReader
    writer: LogWriter | None
    overlay: Overlay
    _mu: threading.RLock
    _append_mu: threading.Lock
    _fold_mu: threading.Lock
    _append_fd: int
    _page_mu: threading.Lock
    _page_fd: int
    _append_path: str
    _page_path: str
    _open_fd: int
    _private: Control | None
    _pid: int
    _seen_commits: int
    _seen_folds: int

    def _derive(self) -> Control:
        """The page's fields from the checkpoint, a scan and the page itself (append lock held if writable).

        Counters only grow, even when the page is not trusted: readers compare
        ``commits``, and sequence numbers the page handed out for frames that
        were lost (never synced) are skipped, never reused. A page written
        since this machine booted is trusted for the log's end as well: its
        writers publish only frames already written, so the log cannot end
        before the page's ``synced`` unless it is damaged there, and then the
        page's end is kept (a frame below it may have been acknowledged, and is
        never cut here): readers and ``check`` report the damage instead.
        """
        page: Control | None = None
        if self.control.valid():
            # A page stuck mid-update (its writer died) still holds, field by
            # field, an old or a new value: a lower bound of each, never torn.
            page = self.control.read() or self.control.fields()
        trusted = page is not None and self.control.boot() == boot_id()
        cp = read_checkpoint(self.dir) or Checkpoint(FIRST_POSITION, 0)
        scan = self.reader.scan(cp.folded, None)
        last = cp.folded_lsn
        for frame in scan.frames:
            if frame.kind == _format.BATCH:
                try:
                    first, _, ops = _format.decode_batch(frame.payload)
                except ValueError:
                    break
                last = first + len(ops) - 1 if ops else last
        end = scan.end
        if page is not None:
            last = max(last, page.last_lsn)
            if trusted:
                end = max(end, page.synced)
        return Control(
            appended=end,
            synced=end,
            commits=page.commits if page else 0,
            last_lsn=last,
            synced_lsn=last,
            folded=cp.folded,
            folded_lsn=cp.folded_lsn,
            folds=page.folds if page else 0,
        )

    def _append_locked(self) -> AbstractContextManager[None]:
        """Hold the append lock (threads of this process queue on a mutex first, processes on ``flock``).

        Waited for by polling (try, sleep 20 us doubling to 2 ms). A helper
        thread blocked in flock for the waiter (``_lockwait.FlockWaiter``,
        the session before) measured 16-21% fewer puts/s from four writers
        than this once the sync's publish left the append lock (quiet
        machine, same run): each hand-over cost two thread switches, more
        than the sleep it saved.
        """
        return _FlockSection(self, self._append_mu, self._append_fd, self._append_path, "append", 0)

    def _page_locked(self) -> AbstractContextManager[None]:
        """Hold the page lock: every write of the control page happens under it (after the append lock, if both).

        Its sections are a read and a write of the page (microseconds), so a
        busy lock is first waited for by yielding the CPU (its holder is most
        likely descheduled mid-section), then by polling.
        """
        return _FlockSection(self, self._page_mu, self._page_fd, self._page_path, "page", _PAGE_YIELDS)

    def _flock_wait(self, mu: threading.Lock, fd: int, path: str, name: str, yields: int, *, mu_held: bool) -> None:
        """Get ``mu`` (unless held) then ``flock(fd)``, giving up after ``lock_timeout_s`` (``LockTimeout``).

        The slow path of :class:`_FlockSection` (a lock was busy). Both waits
        give up when the thread's abort event is set (an async caller was
        cancelled: ``_locks.set_abort``); nothing is written then. On any
        error ``mu`` is not held.
        """
        deadline = time.monotonic() + self.lock_timeout_s
        got = mu_held
        while not got and (left := deadline - time.monotonic()) > 0:
            _locks.check_abort(path)
            got = mu.acquire(timeout=min(left, _ABORT_CHECK_S))
        if not got:
            raise LockTimeout(f"timed out waiting for the {name} lock {path}", path=path, waited_s=self.lock_timeout_s)
        try:
            tries = 0
            sleep = _FIRST_SLEEP_S
            while not _platform.lock(fd, exclusive=True, blocking=False):
                tries += 1
                if tries <= yields:
                    _platform.yield_cpu()
                    continue
                _locks.check_abort(path)
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"timed out after {self.lock_timeout_s:.3f}s waiting for the {name} lock {path}",
                        path=path,
                        waited_s=self.lock_timeout_s,
                    )
                time.sleep(sleep)
                sleep = min(sleep * 2, _MAX_SLEEP_S)
        except BaseException:
            mu.release()
            raise

    def _update_page(self, change: Callable[[Control], bool], *, append_held: bool) -> Control:
        """Read the page under the page lock, let ``change`` edit it, write it if ``change`` says so.

        Writers hold the page lock only for this read-modify-write, so a
        writer that publishes its sync does not queue behind appenders
        deciding under the append lock (issue 13: that second turn on the
        append lock was a quarter of a put's time with four writers). Fields
        a caller read earlier may be stale by now: ``change`` sets only what
        its caller owns (``appended`` under the append lock, ``synced`` after
        a sync, ``folded`` after a fold), on the fresh copy. ``appended`` and
        ``last_lsn`` are written back only for a caller that holds the append
        lock (``append_held``): nobody else may move them.
        """
        for _ in range(3):
            with self._page_locked():
                c = self.control.read()
                if c is not None:
                    if change(c):
                        if append_held:
                            self.control.write_appended(c.appended, c.last_lsn)
                        self.control.write(c)
                    return c
            # The page is mid-update and its writer is gone (its page lock was
            # free): derive it anew under the append lock, then edit again.
            if append_held:
                self._unstick()
            else:
                self._control()
        raise StorageError(f"control page {self.control.path} is stuck mid-update", path=self.control.path)

    def _control(self, *, held: bool = False) -> Control:
        """A consistent copy of the control page (re-deriving it if a writer died inside an update).

        ``held``: the caller holds the append lock.
        """
        if self._private is not None:
            return self._private
        c = self.control.read()
        if c is not None:
            return c
        if self.readonly:
            # A writer is updating the page (or died doing it): it holds the
            # append lock (``appended``, ``last_lsn``) or the page lock (the
            # rest) while it does, so wait for both. A read-only handle waits
            # too (a writer descheduled mid-update on a loaded machine is no
            # stuck page), but never repairs.
            with contextlib.nullcontext() if held else self._append_locked(), self._page_locked():
                c = self.control.read()
            if c is None:
                raise StorageError(f"control page {self.control.path} is stuck mid-update", path=self.control.path)
            return c
        if held:
            return self._unstick()
        with self._append_locked():
            return self._unstick()

    def _unstick(self) -> Control:
        """The page after a writer died inside its update (append lock held).

        Its fields are a mix of new and old values: ``appended`` may count the
        dead writer's frame while ``last_lsn`` does not, and trusting that mix
        would hand the frame's sequence numbers (its versions) out again. The
        page is derived anew from the log, every counter kept at least where it
        was.
        """
        with self._page_locked():
            c = self.control.read()  # a live writer that was merely slow has finished by now
            if c is not None:
                return c
            c = self._derive()
            c.commits += 1
            self.control.initialise(c, boot_id())
            return c


class _FlockSection:
    """One hold of a mutex then an ``flock`` (see :meth:`LogCore._flock_wait`), as a ``with`` block.

    A class rather than a generator context manager: every put enters two
    or three of these, and the generator's frame, ``next`` calls and
    wrapper object were a measurable part of a put (issue 13). Both locks
    free is the fast path: one non-blocking mutex acquire, one ``flock``.
    """

    __slots__ = ("_core", "_fd", "_mu", "_name", "_path", "_yields")

    def __init__(self, core: LogCore, mu: threading.Lock, fd: int, path: str, name: str, yields: int) -> None:
        self._core = core
        self._mu = mu
        self._fd = fd
        self._path = path
        self._name = name
        self._yields = yields

    def __enter__(self) -> None:
        mu = self._mu
        if mu.acquire(blocking=False):
            try:
                if _platform.lock(self._fd, exclusive=True, blocking=False):
                    return
            except BaseException:
                mu.release()
                raise
            self._core._flock_wait(mu, self._fd, self._path, self._name, self._yields, mu_held=True)
        else:
            self._core._flock_wait(mu, self._fd, self._path, self._name, self._yields, mu_held=False)

    def __exit__(self, *exc: object) -> None:
        try:
            _platform.unlock(self._fd)
        finally:
            self._mu.release()
