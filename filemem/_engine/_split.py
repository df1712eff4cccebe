"""Splits: a shard past its size becomes leaves, crash-safe without a manifest (layer L2).

To split ``p`` the writer (who holds ``p``'s lock) first rewrites ``p`` with
``splitting: true``, then writes the new leaves, then unlinks ``p``.

Invariant: *descendants of p exist only if p is gone or flagged*. A crash at
any point leaves either ``p`` unflagged and alone, or ``p`` flagged; the next
writer to lock a flagged shard finishes the split first. Readers that meet a
flagged or missing shard re-list the directory and resolve again. Nobody
writes a descendant's range into ``p`` while the flag is up, and leaves are
written once, so every existing file is authoritative for its range.
``maintain_shard`` (check, compact, and writers that meet a dead writer's
flag) finishes splits and drops expired records under the shard's lock.
"""

from __future__ import annotations

import os
import time

from .. import _fs, _locks
from .._names import hash_bits_once
from .._shard import Shard, encode_shard
from .._view import MAX_PREFIX_BITS, View
from ._batch import Batches


class Splits(Batches):
    """Splitting a shard whose lock the caller holds."""

    def sweep_horizon(self) -> float:
        """Records that expired before this time may leave their shards (see ``Log.sweep_horizon``).

        Now, without a log; with one, no later than its oldest unfolded batch:
        a put there may carry its ``created_at`` over from a record that was
        live at its time and has expired since (the chain rule, _wal._carry).
        """
        log = self.log
        return time.time() if log is None else log.sweep_horizon()

    def _split(self, view: View, shard: Shard, *, target_bytes: int | None = None, leaf: bool = False) -> None:
        """Split ``shard`` (whose lock we hold) into leaves of at most ``target_bytes``.

        ``target_bytes`` defaults to half of ``shard_max_bytes``; a leaf is
        split further only while it holds more than one record.

        Safe to call on a flagged shard left by a crashed writer: leaves that
        already exist are authoritative and are left alone.
        """
        leaf_max = self.shard_max_bytes // 2 if target_bytes is None else target_bytes
        path = view.shard_path(shard.prefix)
        if not shard.splitting:
            flagged = shard.copy()
            flagged.splitting = True
            flagged.generation += 1
            flagged.touched = []
            data = encode_shard(flagged, self.codec)
            old = shard.statkey
            key = _fs.atomic_write(path, data, sync=self.sync, min_mtime_ns=old[1] + 1 if old else 0)
            self._installed(path, flagged, key)
            shard = flagged
        elif not shard.pairs:
            encode_shard(shard, self.codec)  # fill pair sizes
        if leaf:
            # The writer just wrote this shard, unflagged, under its lock: by
            # the invariant it has no descendants, so there is nothing to
            # list (a listing costs milliseconds in a directory of thousands).
            below: set[str] = set()
        else:
            view.refresh()
            below = {p for p in view.existing if p.startswith(shard.prefix) and p != shard.prefix}
        written: list[str] = []
        bits = {k: hash_bits_once(k) for k in shard.records}  # every key of the shard: not through the cache
        generation = shard.generation + 1

        d0 = len(shard.prefix)
        keys = list(shard.records)
        # Depth first, the "0" side before the "1" side, with a stack: a
        # recursive closure referred to itself through its cell, a reference
        # cycle that kept the whole shard (every record) alive until the
        # garbage collector's next full pass, one per split (the fold splits
        # a growing namespace thousands of times).
        todo = [
            (shard.prefix + "1", [k for k in keys if bits[k][d0] == "1"]),
            (shard.prefix + "0", [k for k in keys if bits[k][d0] == "0"]),
        ]
        while todo:
            region, keys = todo.pop()
            if region in below:
                continue
            if any(p.startswith(region) for p in below) or (
                len(keys) > 1
                and len(region) < MAX_PREFIX_BITS
                and sum(len(shard.pairs.get(k, b"")) for k in keys) > leaf_max
            ):
                d = len(region)
                todo.append((region + "1", [k for k in keys if bits[k][d] == "1"]))
                todo.append((region + "0", [k for k in keys if bits[k][d] == "0"]))
                continue
            # An empty range gets a file too: it carries the generation forward,
            # so a key deleted before the split and created again later gets a
            # version above every earlier one (no ABA).
            leaf_shard = Shard(
                region,
                shard.codec,
                generation,
                {k: shard.records[k] for k in keys},
                {k: shard.pairs[k] for k in keys if k in shard.pairs},
            )
            target = view.shard_path(region)
            key = _fs.atomic_write(target, encode_shard(leaf_shard, self.codec), sync=self.sync)
            self._installed(target, leaf_shard, key)
            written.append(region)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _fs.storage_error(exc, "remove", path) from exc
        if self.sync:
            _fs.fsync_dir(view.dir)
        self.cache.forget(path)
        if leaf:
            view.replace_split(shard.prefix, written)
        else:
            view.refresh()
        self.counters["splits"] += 1

    # ------------------------------------------------------------------ snapshot


def maintain_shard(engine: Splits, view: View, prefix: str, *, wait: bool = True) -> tuple[int, int]:
    """Under the shard's lock: finish a split, drop expired records, split if oversize.

    Drops only records that expired before :meth:`Splits.sweep_horizon`: one
    that expired after an unfolded put of its key may still give it its
    ``created_at``; the next sweep after the fold drops it.

    Returns (records dropped, splits done). With ``wait=False`` a busy shard
    is skipped (0, 0).
    """
    splits_before = engine.counters["splits"]
    # Taken before the lock (no append lock under a shard lock), and still
    # valid after it: the oldest unfolded batch only moves later.
    horizon = engine.sweep_horizon()
    if wait:
        held = _locks.exclusive(view.lock_path(prefix), engine.lock_timeout_s, turnstile=view.turnstile)
    else:
        got = _locks.try_exclusive(view.lock_path(prefix))
        if got is None:
            return 0, 0
        held = got
    with held:
        engine.recover_batches((view.dir,))
        path = view.shard_path(prefix)
        shard = engine.load(path, prefix)
        if shard is None:
            return 0, 0
        if not shard.splitting and prefix in view.internal:
            view.refresh()  # the listing may predate a merge that removed its leaves since
        if shard.splitting or prefix in view.internal:
            engine._split(view, shard)
            return 0, engine.counters["splits"] - splits_before
        work = shard.copy()
        gone = work.drop_expired(min(time.time(), horizon))
        data = b""
        if gone:
            work.generation += 1
            work.touched = gone
            data = encode_shard(work, engine.codec)
            old = shard.statkey
            key = _fs.atomic_write(path, data, sync=engine.sync, min_mtime_ns=old[1] + 1 if old else 0)
            engine._installed(path, work, key)
            shard = work
        st = None if data else _fs.lstat(path)
        size = len(data) if data else (st.st_size if st is not None else 0)
        if size > engine.shard_max_bytes and len(shard.records) > 1:
            engine._split(view, shard)
        return len(gone), engine.counters["splits"] - splits_before
