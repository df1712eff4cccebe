"""Commits to the shard files: lock, decide, write, rename (layer L2).

The path every write took before the log (format 1), and the one the fold
takes on a format-2 store to install log records into the shards.

Invariant: a commit holds the exclusive lock of every shard it rewrites, taken
in sorted path order (a lock that does not come within a short step makes it
release all and retry, so it never deadlocks with a snapshot taking shared
locks); a single shard is replaced by one rename of a synced temp, several go
through a batch intent (``_batch``). Versions come from the shard's
generation, so they never repeat; an install (the fold) never replaces a
record by an older one, so folding any range twice is harmless. A split after
a commit is best effort: the write has committed whatever it does.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from typing import Any, Final

from .. import _fs, _locks
from .._errors import InvalidValueError, LockTimeout
from .._names import hash_bits
from .._shard import Record, Shard, encode_shard
from .._view import View
from .._wal._carry import Carried
from ._ops import Op, _checked_version, _written_value, copy_value
from ._split import Splits, maintain_shard

#: While holding some of a batch's locks, wait at most this long for the next
#: one before releasing all and retrying: that back-off is what keeps a batch
#: from deadlocking with a snapshot that took shared locks in another order.
_BATCH_STEP_S: Final = 0.05
#: How often a fold lets go of the GIL between shard encodes (as _wal._fold does between frames).
_FOLD_YIELD_EVERY_S: Final = 0.0005
#: A shard writers had to queue for splits at 1/N of shard_max_bytes.
_CONTENDED_SPLIT_FRACTION: Final = 8


class _WriteContext:
    """State of one ``apply`` call across its retries."""

    __slots__ = ("contended", "spare", "sync_dirs")

    def __init__(self) -> None:
        self.spare: _fs.TempFile | None = None
        self.sync_dirs: set[str] = set()
        #: We had to wait for a shard lock: others write here at the same time.
        self.contended = False


class Commits(Splits):
    """Writing ops into the shard files directly."""

    def _apply_shards(self, ops: list[Op]) -> list[Any]:
        """Apply ``ops`` to the shard files directly (a v1 store opened read-write never gets here; the fold does)."""
        for op in ops:
            op.view = self.view(op.namespace)
            if not op.bits:  # the fold's installs come with theirs
                op.bits = hash_bits(op.key)
        deadline = time.monotonic() + self.lock_timeout_s
        backoff = 0.001
        ctx = _WriteContext()
        first = ops[0].view
        assert first is not None
        one_dir = all(op.view is first for op in ops)
        try:
            while True:
                if ctx.spare is None and one_dir:
                    if not first.dir_known:
                        _fs.ensure_dir(first.dir)
                        first.dir_known = True
                    # Created before the lock is taken: see _fs.TempFile.
                    ctx.spare = _fs.TempFile(first.shard_path(first.resolve(ops[0].bits)))
                outcome = self._attempt(ops, deadline, ctx)
                if outcome is not None:
                    # Outside the lock: the next writer need not wait for our
                    # directory fsync, and it builds on our renamed file, so
                    # nothing it makes durable can lack our write. We still
                    # return only once our own rename is durable.
                    for d in sorted(ctx.sync_dirs):
                        _fs.fsync_dir(d)
                    self._finish_splits({id(op.view): op.view for op in ops if op.view is not None}.values())
                    if self.after_apply is not None:
                        self.after_apply(ops)
                    return outcome
                self.counters["lock_retries"] += 1
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"timed out after {self.lock_timeout_s:.3f}s retrying a write in {first.dir}",
                        path=first.dir,
                        waited_s=self.lock_timeout_s,
                    )
                time.sleep(backoff * random.random())  # noqa: S311 - jitter, not crypto
                backoff = min(backoff * 2, 0.05)
        finally:
            if ctx.spare is not None:
                ctx.spare.discard()

    def _finish_splits(self, views: Iterable[View]) -> None:
        """Finish splits a dead writer left (a flagged shard whose leaves took over).

        Writers to the leaves never lock the flagged parent, so without this a
        stale parent could linger until ``check(fix=True)``. Best effort, after
        our own locks are released, so it can never deadlock with anything.
        """
        for view in views:
            if not view.overlapped:
                continue
            view.refresh()
            for prefix in sorted(view.overlapped):
                # Never wait here: the caller's write has committed, and the
                # parent may be busy with a live split or a snapshot.
                try:
                    maintain_shard(self, view, prefix, wait=False)
                except Exception:
                    self.counters["split_failures"] += 1
            view.refresh()

    def _attempt(self, ops: list[Op], deadline: float, ctx: _WriteContext) -> list[Any] | None:
        """One try at ``apply``: None means "state moved under us, retry"."""
        targets: dict[str, tuple[View, str]] = {}
        for op in ops:
            assert op.view is not None
            op.prefix = op.view.resolve(op.bits)
            targets[op.view.lock_path(op.prefix)] = (op.view, op.prefix)
        order = sorted(targets)
        if len(order) > _max_locks():
            # Each shard lock holds a descriptor until the commit: fail
            # clearly, before taking any, rather than with EMFILE halfway.
            raise InvalidValueError(
                f"this batch touches {len(order)} shards but at most {_max_locks()} can be locked at once "
                "(the open-file limit, ulimit -n): split it into smaller batches or raise the limit"
            )
        held: list[_locks.Held] = []
        try:
            for i, lock_path in enumerate(order):
                view, _ = targets[lock_path]
                if not view.dir_known:
                    _fs.ensure_dir(view.dir)
                    view.dir_known = True
                remaining = deadline - time.monotonic()
                if i == 0:
                    got = _locks.exclusive(lock_path, max(remaining, 0.001), turnstile=view.turnstile)
                    held.append(got)
                    ctx.contended = ctx.contended or got.contended
                    continue
                try:
                    held.append(_locks.exclusive(lock_path, max(min(remaining, _BATCH_STEP_S), 0.001), turnstile=None))
                except LockTimeout:
                    if remaining <= _BATCH_STEP_S:
                        raise
                    return None  # back off: release everything and start over
            self.recover_batches({view.dir for view, _ in targets.values()})
            shards: dict[str, Shard] = {}
            for lock_path in order:
                view, prefix = targets[lock_path]
                # On a logged store only the fold (and splits after it) comes
                # here: a shard it parses is rewritten at once, not kept.
                shard = self.load(view.shard_path(prefix), prefix, keep=self.log is None)
                if shard is None:
                    view.refresh_below(prefix)
                    if any(o.view is view and view.resolve(o.bits) != o.prefix for o in ops):
                        return None
                    if view.has_shards_below(prefix):
                        return None  # the listing raced a split: never shadow its leaves
                    shard = Shard(prefix, self.codec.name, 0, {})
                elif shard.splitting:
                    self._split(view, shard)  # finish what a dead writer started
                    view.refresh()
                    return None
                shards[lock_path] = shard
            return self._commit(ops, targets, order, shards, ctx)
        finally:
            for h in reversed(held):
                h.release()

    def _commit(
        self,
        ops: list[Op],
        targets: dict[str, tuple[View, str]],
        order: list[str],
        shards: dict[str, Shard],
        ctx: _WriteContext,
    ) -> list[Any]:
        now = time.time()
        work = {lp: shards[lp].copy() for lp in order}
        dirty: dict[str, list[str]] = {}
        results: list[Any] = []
        # The fold drops what had expired on disk *before* installing: a record
        # that expired while it waited in the log still reaches the shard, and
        # is dropped by the next write or compact like any other (never lost
        # from the count compact reports, whenever the fold ran).
        installing = ops[0].kind == "install"
        if installing:
            _resolve_carried(ops, work)  # against the records as they were, expired or not
            horizon = ops[0].expired_before
            for lp, shard in work.items():
                if shard.drop_expired(now if horizon is None else min(now, horizon)):
                    dirty.setdefault(lp, [])  # rewritten; expiry is no change to announce
        for op in ops:
            assert op.view is not None
            lp = op.view.lock_path(op.prefix)
            shard = work[lp]
            rec = shard.records.get(op.key)
            if op.kind == "install":
                # The fold: never replace a record by an older one, so folding
                # any range twice is harmless.
                results.append(None)
                if rec is not None and rec["version"] >= op.version:
                    continue
                if op.record is None:
                    if shard.remove(op.key):
                        dirty.setdefault(lp, []).append(op.key)
                else:
                    shard.set(op.key, op.record)
                    dirty.setdefault(lp, []).append(op.key)
                continue
            rec, _ = _checked_version(op, rec, now)
            version = shards[lp].generation + 1
            if op.kind == "delete":
                removed = rec is not None
                if shard.remove(op.key):
                    dirty.setdefault(lp, []).append(op.key)
                results.append(removed)
                continue
            value, updated = _written_value(op, rec)
            results.append(copy_value(value) if updated else version)
            new: Record = {
                "value": value,
                "version": version,
                "created_at": rec["created_at"] if rec is not None else now,
                "updated_at": now,
            }
            if op.ttl is not None:
                new["expires_at"] = now + op.ttl
            elif op.kind == "update" and rec is not None and rec.get("expires_at") is not None:
                new["expires_at"] = rec["expires_at"]
            shard.set(op.key, new)
            dirty.setdefault(lp, []).append(op.key)
        if not dirty:
            return results
        encoded: dict[str, bytes] = {}
        if any(shards[lp].codec != self.codec.name for lp in dirty):
            self._follow_marker_codec()
        yielded = time.perf_counter()
        for lp, keys in dirty.items():
            if installing and time.perf_counter() - yielded >= _FOLD_YIELD_EVERY_S:
                # A fold (a background thread): let go of the GIL between two
                # shard encodes, each one long C call, so that an event loop or
                # a caller of this process waits for a shard or two, not for the
                # whole group (issue 13: AsyncStore loop lag on format 2). Not
                # after every shard: a sleep(0) costs 77 us on this machine's
                # VM (timer slack), 6% of a fold of 30,000 keys.
                time.sleep(0)
                yielded = time.perf_counter()
            shard = work[lp]
            shard.generation += 1
            if not installing:
                shard.drop_expired(now)
            shard.touched = keys
            shard.splitting = False
            try:
                data = encode_shard(shard, self.codec)
            except InvalidValueError:
                # A record this shard already holds cannot be encoded with the
                # marker's codec (a value another process stored in its own
                # codec while a conversion ran): keep the shard's codec, which
                # encodes it and which every reader decodes.
                own = self._codecs.get(shards[lp].codec)
                if own is None or own is self.codec:
                    raise
                data = encode_shard(shard, own)
            for k in keys:
                pair = shard.pairs.get(k)
                if pair is not None and len(pair) > self.max_value_bytes:
                    raise InvalidValueError(
                        f"record {k!r} encodes to {len(pair)} bytes; the limit is {self.max_value_bytes}"
                    )
            encoded[lp] = data
        if len(encoded) == 1:
            ((lp, data),) = encoded.items()
            view, prefix = targets[lp]
            path = view.shard_path(prefix)
            old = shards[lp].statkey
            spare, ctx.spare = ctx.spare, None
            if spare is None or spare.directory != view.dir:
                if spare is not None:
                    spare.discard()
                spare = _fs.TempFile(path)
            key = spare.commit(path, data, sync=self.sync, min_mtime_ns=old[1] + 1 if old else 0, sync_dir=False)
            if self.sync:
                ctx.sync_dirs.add(view.dir)
            self._installed(path, work[lp], key)
        else:
            self._commit_batch(targets, work, encoded, shards)
        self.counters["shard_writes"] += len(encoded)
        for lp, data in encoded.items():
            view, prefix = targets[lp]
            # Split when the shard is too big, or, earlier, when writers queue
            # for it: a namespace many processes write at once gets more
            # shards (more writers in parallel), a quiet one stays one file.
            limit = self.shard_max_bytes // _CONTENDED_SPLIT_FRACTION if ctx.contended else self.shard_max_bytes
            if len(data) > limit and len(work[lp].records) > 1 and len(prefix) < 60:
                # The write has committed: a failed split must not report it as
                # failed (a retried update would apply twice). The shard stays
                # whole or flagged, and the next writer or check finishes it.
                try:
                    self._split(view, work[lp], target_bytes=min(limit, self.shard_max_bytes) // 2, leaf=True)
                except Exception:
                    self.counters["split_failures"] += 1
        return results


def _max_locks() -> int:
    """How many shard locks one batch may hold: the open-file limit, less room for everything else."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 500
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1 << 20
    return max(16, soft - 128)


def _resolve_carried(ops: list[Op], work: dict[str, Shard]) -> None:
    """The fold: give each installed record whose ``created_at`` was carried over its value.

    The shard's record of the key is the one the put replaced, the key's
    previous record in log order (the chain rule, see _wal._carry): one
    earlier in the same fold range was taken by the fold already (a
    :class:`Carried` left here is the time of the range's first put of the
    key, carried from before the range), and one in an earlier range is in
    the shard, installed by that range's fold. Unless the shard already holds
    this version or a newer one: then nothing is installed.
    """
    for op in ops:
        record = op.record
        if record is None or not isinstance(record["created_at"], Carried):
            continue
        assert op.view is not None
        prev = work[op.view.lock_path(op.prefix)].records.get(op.key)
        if prev is not None and prev["version"] >= op.version:
            continue
        created = record["created_at"].resolve(prev)
        if isinstance(created, Carried):  # a shard never holds one; a bug, never written
            raise AssertionError(f"unresolved created_at for {op.key!r}")
        op.record = {**record, "created_at": created}
