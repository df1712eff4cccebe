"""Multi-shard batches: intents, and rolling forward the ones whose owner died (layer L2).

**Batches are all-or-nothing across shards.** All shard locks are taken in
sorted path order; the new shard contents go to temp files (fsynced); then an
intent file listing (temp, target) pairs is created *already locked* and
renamed into ``batches/`` (the commit point); then the temps are renamed over
their targets and the intent removed. Anyone who takes a shard lock first
rolls forward intents whose owner died (its lock can be taken), so no writer
or snapshot ever uses a shard that an interrupted batch still owes. (A plain
lock-free get can see such a batch half applied until some read-write process
touches the store; a read-only store never repairs, but reads the temps of a
dead batch in place of their targets.)

Invariant: an intent exists only once every temp it names is durable, and
recovery never guesses: a temp counts as renamed only on ENOENT.
"""

from __future__ import annotations

import json
import os
import stat
import time
import zlib
from collections.abc import Iterable
from typing import Any, Final

from .. import _fs, _locks
from .._errors import StorageError
from .._shard import FORMAT_VERSION, SHARD_SUFFIX, Shard
from .._view import View
from ._marker import BATCH_SUFFIX, INTERNAL_DIR, NS_DIR
from ._reads import Reads

#: A batch touching at least this many shards syncs them with one syncfs.
_SYNCFS_MIN_SHARDS: Final = 4


class Batches(Reads):
    """Committing one write across several shards, and recovering such commits."""

    def _commit_batch(
        self,
        targets: dict[str, tuple[View, str]],
        work: dict[str, Shard],
        encoded: dict[str, bytes],
        shards: dict[str, Shard],
    ) -> None:
        batch_id = os.urandom(8).hex()
        written: list[tuple[str, str, str, _fs.StatKey]] = []  # (lock path, temp, target, key)
        jobs = []
        for lp in encoded:
            view, prefix = targets[lp]
            target = view.shard_path(prefix)
            old = shards[lp].statkey
            jobs.append(
                (lp, _fs.temp_path(target, f"b{batch_id}-"), target, max(time.time_ns(), old[1] + 1 if old else 0))
            )

        # Many temps: write them all, then make them durable with one syncfs
        # (one journal commit) instead of one fsync each.
        one_sync = self.sync and len(jobs) >= _SYNCFS_MIN_SHARDS and _fs.can_sync_filesystem()

        def write(job: tuple[str, str, str, int]) -> tuple[str, str, str, _fs.StatKey]:
            lp, tmp, target, mtime = job
            key = _fs.write_new_file(tmp, encoded[lp], sync=self.sync and not one_sync, mtime_ns=mtime)
            return lp, tmp, target, key

        try:
            for job in jobs:
                written.append(write(job))
            if one_sync:
                _fs.sync_filesystem(self.root)
            intent = {
                "filemem": FORMAT_VERSION,
                "id": batch_id,
                "pid": os.getpid(),
                "created_at": time.time(),
                "renames": [[os.path.relpath(t, self.root), os.path.relpath(g, self.root)] for _, t, g, _ in written],
            }
            if self.sync:
                # The temps' directory entries must be durable before the
                # intent that names them, or a power cut could keep the intent
                # and lose a temp: a committed batch applied in part.
                for d in sorted({os.path.dirname(g) for _, _, g, _ in written}):
                    _fs.fsync_dir(d)
            body = json.dumps(intent, separators=(",", ":")).encode()
            payload = b"%08x\n" % zlib.crc32(body) + body
            _fs.ensure_dir(self.batch_dir)
            final = os.path.join(self.batch_dir, batch_id + BATCH_SUFFIX)
            pending = _fs.temp_path(final)
            held = _locks.create_locked(pending)
        except BaseException:
            for _, tmp, _, _ in written:
                _fs.remove_quietly(tmp)
            raise
        try:
            try:
                _fs.write_fd(held.fd, payload, sync=self.sync, path=pending)
                _fs.replace(pending, final)
                if self.sync:
                    _fs.fsync_dir(self.batch_dir)  # the commit point is durable
            except BaseException:
                _fs.remove_quietly(pending)
                for _, tmp, _, _ in written:
                    _fs.remove_quietly(tmp)
                raise
            # Committed. From here a failure leaves the intent for recovery.
            dirs = set()
            for lp, tmp, target, key in written:
                _fs.replace(tmp, target)
                dirs.add(os.path.dirname(target))
                self._installed(target, work[lp], key)
            if self.sync:
                for d in sorted(dirs):
                    _fs.fsync_dir(d)
            _fs.remove_quietly(final)
        finally:
            held.release()

    def recover_batches(self, dirs: Iterable[str] | None = None) -> int:
        """Roll forward every committed batch whose owner died; return how many.

        A read-only store never does (it never changes the store); until a
        read-write process recovers, plain reads may see such a batch half
        applied.

        Recovery never guesses: when it cannot tell whether a temp exists (an
        I/O error), it keeps the intent and raises StorageError. It raises
        that only to a caller that will use a directory the intent names
        (``dirs``: the namespace directories the caller is about to lock;
        None: every caller), after trying every other intent, so one intent
        that cannot be finished never locks every process out of the store.
        ``check(fix=True)`` retries it and reports it while it fails.
        """
        if self.readonly:
            self._overlay = self._dead_batch_overlay()
            return 0
        names = _fs.listdir(self.batch_dir)
        if not names:
            return 0
        wanted = None if dirs is None else set(dirs)
        done = 0
        stuck: StorageError | None = None
        for name in sorted(names):
            if not name.endswith(BATCH_SUFFIX) or _fs.TEMP_MARK in name:
                continue
            path = os.path.join(self.batch_dir, name)
            try:
                if self._recover_one(path):
                    done += 1
            except StorageError as exc:
                named = self._intent_dirs(path)
                if stuck is None and (wanted is None or named is None or not wanted.isdisjoint(named)):
                    stuck = StorageError(
                        f"batch intent {path} could not be rolled forward ({exc.message}); it is kept, and "
                        "writes to the namespaces it names fail until it is: retry, or run `filemem check --fix`",
                        errno=exc.errno,
                        path=path,
                    )
                    stuck.__cause__ = exc
        if stuck is not None:
            raise stuck
        return done

    def _intent_dirs(self, path: str) -> set[str] | None:
        """The target directories an intent names; None if it cannot be read now."""
        try:
            raw = self._read_intent(path)
        except StorageError:
            return None
        intent = _parse_intent(raw) if raw is not None else None
        if intent is None:
            return set()
        return {os.path.dirname(os.path.join(self.root, target)) for _, target in intent["renames"]}

    def _read_intent(self, path: str) -> bytes | None:
        fd = _fs.open_regular(path, os.O_RDONLY)
        if fd is None:
            return None
        try:
            return _fs.read_fd(fd, path)
        finally:
            os.close(fd)

    def _dead_batch_overlay(self) -> dict[str, str]:
        """For a read-only store: target -> temp of every committed batch whose owner died.

        A read-only store may not roll such a batch forward, but a snapshot
        must still see it whole: it reads the temps in place of their targets.
        """
        overlay: dict[str, str] = {}
        for name in _fs.listdir(self.batch_dir):
            if not name.endswith(BATCH_SUFFIX) or _fs.TEMP_MARK in name:
                continue
            path = os.path.join(self.batch_dir, name)
            st = _fs.lstat(path)
            if st is None or not stat.S_ISREG(st.st_mode):
                continue  # never an intent (check reports it)
            got = _locks.try_exclusive_existing(path)
            if not isinstance(got, _locks.Held):
                continue  # live owner (it holds its shards' locks too) or gone
            try:
                raw = _fs.read_fd(got.fd, path)
            finally:
                got.release()
            intent = _parse_intent(raw)
            for tmp_rel, target_rel in intent["renames"] if intent else []:
                tmp = os.path.join(self.root, tmp_rel)
                if _fs.lexists(tmp):
                    overlay[os.path.join(self.root, target_rel)] = tmp
        return overlay

    def _recover_one(self, path: str) -> bool:
        """Roll one intent forward if its owner is dead; False if there was nothing to do.

        Raises StorageError, keeping the intent, whenever a step fails or the
        state of a temp cannot be known: a temp is taken as "already renamed"
        only when it certainly does not exist (ENOENT), never on an error.
        """
        st = _fs.lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            # A link or a special file was never an intent (writers create
            # them as regular files): not followed, not opened; check reports it.
            return False
        fd = _fs.open_regular(path, os.O_RDWR)
        if fd is None:
            return False
        try:
            # A live owner is finishing its renames (it holds no other lock we
            # could be waiting for): wait for it rather than read a half-applied
            # batch. A free lock means the owner died.
            held = _locks.wait_exclusive_fd(fd, path, self.lock_timeout_s)
        except BaseException:
            os.close(fd)
            raise
        try:
            try:
                if os.fstat(held.fd).st_nlink == 0:
                    return False  # finished (and removed) while we waited
            except OSError as exc:
                raise _fs.storage_error(exc, "stat", path) from exc
            intent = _parse_intent(_fs.read_fd(held.fd, path))
            if intent is not None:
                dirs = set()
                for tmp_rel, target_rel in intent["renames"]:
                    tmp = os.path.join(self.root, tmp_rel)
                    target = os.path.join(self.root, target_rel)
                    directory = os.path.dirname(target)
                    if _fs.lexists(tmp):
                        _fs.replace(tmp, target)
                        self.cache.forget(target)
                        dirs.add(directory)
                    elif _fs.dir_exists(directory):
                        # The temp certainly does not exist: this rename was
                        # done (the temps were durable before the intent was).
                        dirs.add(directory)
                    # else the directory itself is gone (a collector removed
                    # its marker namespace since): the temp lived in it, so
                    # there is nothing left to roll forward there, and
                    # nothing to sync. Proven by ENOENT, never guessed.
                if self.sync:
                    for d in sorted(dirs):
                        _fs.fsync_dir(d, missing_ok=True)
            _fs.remove(path)
            if self.sync:
                _fs.fsync_dir(self.batch_dir)
            self.counters["batches_recovered"] += 1
            return True
        finally:
            held.release()

    # ------------------------------------------------------------------ splits


def _parse_intent(raw: bytes) -> dict[str, Any] | None:
    """A batch intent, or None if torn (then it never committed: roll back)."""
    head, _, body = raw.partition(b"\n")
    try:
        if int(head, 16) != zlib.crc32(body):
            return None
        intent = json.loads(body)
    except ValueError:
        return None
    if not isinstance(intent, dict) or not isinstance(intent.get("renames"), list):
        return None
    for entry in intent["renames"]:
        # Never let an intent name a path outside the store's shards.
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(p, str) for p in entry)):
            return None
        tmp, target = entry
        parts = target.replace("\\", "/").split("/")
        if (
            os.path.isabs(target)
            or parts[0] not in (NS_DIR, INTERNAL_DIR)
            or any(p in ("", ".", "..") for p in parts)
            or not target.endswith(SHARD_SUFFIX)
            or not tmp.startswith(target + _fs.TEMP_MARK)
            or "/" in tmp[len(target) :]
        ):
            return None
    return intent
