"""Whole-store maintenance under the writers' own locks: compaction, merging tiny shards, codec conversion (layer L2).

Everything here is safe on a live store: a shard is only ever changed while
holding the exclusive lock that every writer of that shard takes, and every
change is one atomic replace (``_fs.atomic_write``) or an unlink, ordered so
that a crash at any instant leaves a state the engine already knows how to
read and repair.

**Merging two tiny sibling shards** ``p0`` and ``p1`` back into ``p`` is a
split run backwards, and it keeps the split invariant (*descendants of p
exist only if p is gone or flagged*, docs/format.md) at every step:

1. with the locks of ``p``, ``p0`` and ``p1`` held (taken without waiting; a
   busy shard is simply skipped), write ``p`` holding both leaves' records
   **flagged** ``splitting: true``;
2. unlink ``p0`` and ``p1``, fsync the directory;
3. rewrite ``p`` unflagged.

A crash after 1 or 2 leaves a flagged ``p`` (with zero, one or two leaves):
exactly the state of an interrupted split, which the next writer of ``p``'s
range or ``check --fix`` finishes by re-splitting ``p``. Existing leaves stay
authoritative and ``p`` holds an exact copy of the ones already removed, so
no record is lost or resurrected either way. ``p``'s generation starts above
both leaves', so record versions are never reused (no ABA).

**Codec conversion** rewrites each shard with the new codec under its lock;
every reader decodes a shard by the codec named in its own header, so a store
holding shards of both codecs is normal while a conversion runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, Final

from . import _fs, _locks
from ._engine import MARKER, Engine, _read_marker, maintain_shard
from ._errors import CorruptShardError, InvalidValueError, ReadOnlyError, StorageError, UnsupportedFormatError
from ._shard import Shard, encode_shard
from ._view import View
from .codecs import Codec, get_codec

__all__ = ["ProgressFn", "all_shards", "compact", "convert", "merge_small_siblings"]

#: ``progress(done, total)``: called after each unit of work.
ProgressFn = Callable[[int, int], None]

#: Two sibling shards merge only when their files together are at most this
#: fraction of ``shard_max_bytes``: well below the size at which a contended
#: writer splits again (1/8), so merging and splitting do not ping-pong.
_MERGE_FRACTION: Final = 16
#: A namespace that keeps changing under a listing loop is given up after this many passes.
_MAX_PASSES: Final = 64


def _no_progress(done: int, total: int) -> None:
    return None


def all_shards(engine: Engine) -> list[tuple[View, str]]:
    """Every (view, prefix) with a shard file right now, namespace by namespace."""
    out: list[tuple[View, str]] = []
    for _directory, namespace in list(engine.namespace_dirs()):
        if not namespace:
            continue
        view = engine.view(namespace)
        view.refresh()
        out.extend((view, p) for p in sorted(view.existing))
    return out


def _write(engine: Engine, path: str, shard: Shard, old: Shard | None, codec: Codec) -> None:
    old_key = old.statkey if old is not None else None
    data = encode_shard(shard, codec)
    key = _fs.atomic_write(path, data, sync=engine.sync, min_mtime_ns=old_key[1] + 1 if old_key else 0)
    engine._installed(path, shard, key)


# ---------------------------------------------------------------------- compaction


def compact(engine: Engine, *, merge: bool = True, progress: ProgressFn | None = None) -> dict[str, int]:
    """Drop expired records, finish interrupted splits, split oversize shards, merge tiny siblings.

    Deleted records need no compaction: a delete removes the record from its
    shard file at once (there are no tombstones). Returns counts.
    """
    if engine.readonly:
        raise ReadOnlyError(f"store {engine.root} was opened read-only")
    report = progress or _no_progress
    engine.settle()  # expiry and merges work on the shard files: give them every record first
    engine.recover_batches(())  # each shard's own recovery, under its lock, is the one that must hold
    refs = all_shards(engine)
    dropped = splits = 0
    views: dict[tuple[str, ...], View] = {}
    damaged = 0
    for i, (view, prefix) in enumerate(refs):
        views[view.namespace] = view
        try:
            d, s = maintain_shard(engine, view, prefix)
        except (CorruptShardError, UnsupportedFormatError):
            damaged += 1  # never built upon; `check --fix` deals with it
            d = s = 0
        dropped += d
        splits += s
        report(i + 1, len(refs))
    merges = 0
    if merge:
        limit = engine.shard_max_bytes // _MERGE_FRACTION
        for view in views.values():
            merges += merge_small_siblings(engine, view, limit)
    return {
        "namespaces": len(views),
        "shards": len(refs),
        "expired_dropped": dropped,
        "splits": splits,
        "merges": merges,
        "damaged_skipped": damaged,
    }


def merge_small_siblings(engine: Engine, view: View, max_bytes: int) -> int:
    """Merge pairs of sibling leaf shards whose files together hold at most ``max_bytes``; return merges.

    Repeats bottom-up, so a namespace emptied by deletes and expiry shrinks
    back towards one shard. Busy shards are skipped, never waited for.
    """
    merges = 0
    view.refresh()
    # One pass per level of the tree as it is now: live writers with a
    # smaller shard_max_bytes than ours may split what we merge, and chasing
    # them level after level would never end.
    passes = min(_MAX_PASSES, max((len(p) for p in view.existing), default=0))
    for _ in range(passes):
        view.refresh()
        existing = view.existing
        parents = {p[:-1] for p in existing if p} - existing
        merged_now = 0
        # Deepest first: a merged parent may then merge with its own sibling.
        for parent in sorted(parents, key=lambda p: (-len(p), p)):
            a, b = parent + "0", parent + "1"
            if a not in existing or b not in existing or a in view.internal or b in view.internal:
                continue
            sa, sb = _fs.lstat(view.shard_path(a)), _fs.lstat(view.shard_path(b))
            if sa is None or sb is None:
                continue
            size = sa.st_size + sb.st_size
            if size <= max_bytes and _merge_pair(engine, view, parent, max_bytes):
                merged_now += 1
        merges += merged_now
        if not merged_now:
            break
    return merges


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _fs.storage_error(exc, "remove", path) from exc


def _merge_pair(engine: Engine, view: View, parent: str, max_bytes: int) -> bool:
    """Merge ``parent+"0"`` and ``parent+"1"`` into ``parent`` (see the module docstring)."""
    held: list[_locks.Held] = []
    try:
        # Sorted order like batches; never wait, so this cannot deadlock or
        # hold up a writer: a busy shard is simply left for another time.
        for lock_path in sorted(view.lock_path(p) for p in (parent, parent + "0", parent + "1")):
            got = _locks.try_exclusive(lock_path)
            if got is None:
                return False
            held.append(got)
        # No dead writer's batch may still owe these shards a rename.
        engine.recover_batches((view.dir,))
        view.refresh()
        a, b = parent + "0", parent + "1"
        if parent in view.existing or a not in view.existing or b not in view.existing:
            return False
        if a in view.internal or b in view.internal:
            return False
        try:
            left = engine.load(view.shard_path(a), a)
            right = engine.load(view.shard_path(b), b)
        except (CorruptShardError, UnsupportedFormatError):
            return False  # a damaged leaf is never built upon; `check --fix` deals with it
        if left is None or right is None or left.splitting or right.splitting:
            return False
        records = {**left.records, **right.records}
        merged = Shard(parent, engine.codec.name, max(left.generation, right.generation) + 1, records)
        merged.splitting = True
        merged.touched = []
        path = view.shard_path(parent)
        data = encode_shard(merged, engine.codec)
        if len(data) > max_bytes:
            return False
        # 1. the parent, flagged: the leaves stay authoritative until they go.
        key = _fs.atomic_write(path, data, sync=engine.sync, min_mtime_ns=time.time_ns())
        engine._installed(path, merged, key)
        # 2. the leaves go; the flagged parent holds exact copies of them.
        for leaf in (a, b):
            _unlink(view.shard_path(leaf))
            engine.cache.forget(view.shard_path(leaf))
        if engine.sync:
            _fs.fsync_dir(view.dir)
        # 3. the parent, unflagged: a shard like any other.
        final = merged.copy()
        final.splitting = False
        final.generation += 1
        final.touched = []
        _write(engine, path, final, merged, engine.codec)
        view.refresh()
        return True
    finally:
        for h in reversed(held):
            h.release()


# ---------------------------------------------------------------------- codec conversion


def _rec_name(view: View, key: str) -> str:
    return "/".join((*view.namespace, key))


def precheck_convert(engine: Engine, codec: Codec, progress: ProgressFn | None = None) -> int:
    """Raise InvalidValueError naming a record that ``codec`` cannot encode; return shards seen.

    Lock-free (a read-only pass): run before changing anything, so a store
    that cannot be converted is left exactly as it was.
    """
    report = progress or _no_progress
    refs = all_shards(engine)
    for i, (view, prefix) in enumerate(refs):
        try:
            shard = engine.load(view.shard_path(prefix), prefix)
        except (CorruptShardError, UnsupportedFormatError) as exc:
            exc.add_note("nothing was converted; run `filemem check --fix` first")
            raise
        if shard is not None and shard.codec != codec.name:
            for key, rec in shard.records.items():
                try:
                    codec.encode_pair(key, rec)
                except InvalidValueError as exc:
                    raise InvalidValueError(
                        f"record {_rec_name(view, key)!r} cannot be stored with codec {codec.name!r}: {exc.message}; "
                        "nothing was changed"
                    ) from exc
        report(i + 1, len(refs))
    return len(refs)


def _convert_shard(engine: Engine, view: View, prefix: str, codec: Codec) -> str:
    """Rewrite one shard with ``codec`` under its lock: "converted", "already", or "gone"."""
    with _locks.exclusive(view.lock_path(prefix), engine.lock_timeout_s, turnstile=view.turnstile):
        engine.recover_batches((view.dir,))
        path = view.shard_path(prefix)
        shard = engine.load(path, prefix)
        if shard is None:
            return "gone"  # split away meanwhile: its leaves come in the next listing
        if not shard.splitting and prefix in view.internal:
            view.refresh()  # the listing may predate a merge that removed its leaves since
        if shard.splitting or prefix in view.internal:
            # Finish the split (the leaves are written with the new codec:
            # engine.codec is already switched for this process).
            engine._split(view, shard)
            return "gone"
        if shard.codec == codec.name:
            return "already"
        work = shard.copy()
        work.generation += 1
        work.touched = []
        try:
            _write(engine, path, work, shard, codec)
        except InvalidValueError as exc:
            # A live writer stored an unencodable value after the pre-check.
            raise InvalidValueError(
                f"shard {path} now holds a value codec {codec.name!r} cannot encode ({exc.message}); "
                "the store is readable but holds shards of both codecs: fix the value and run convert again"
            ) from exc
        return "converted"


def _sweep(engine: Engine, codec: Codec, progress: ProgressFn) -> tuple[int, int]:
    """Convert every shard, following splits that happen meanwhile; return (converted, already)."""
    converted = already = 0
    refs = all_shards(engine)
    done: set[tuple[str, str]] = set()
    total = len(refs)
    for _ in range(_MAX_PASSES):
        todo = [(v, p) for v, p in refs if (v.dir, p) not in done]
        if not todo:
            break
        for view, prefix in todo:
            outcome = _convert_shard(engine, view, prefix, codec)
            done.add((view.dir, prefix))
            converted += outcome == "converted"
            already += outcome == "already"
            progress(min(len(done), total), total)
        refs = all_shards(engine)
        total = max(total, len(done) + sum((v.dir, p) not in done for v, p in refs))
    return converted, already


def convert(engine: Engine, codec_name: str, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Rewrite every shard with ``codec_name``, then switch the store marker to it.

    The store stays readable and writable throughout. A process that opened
    the store earlier keeps writing the old codec until the marker switches
    (readable by everyone meanwhile), then adopts the new one at its next
    write to a converted shard (``Engine._follow_marker_codec``); a second
    sweep after the switch converts what such processes wrote meanwhile.
    """
    if engine.readonly:
        raise ReadOnlyError(f"store {engine.root} was opened read-only")
    codec = get_codec(codec_name)
    report = progress or _no_progress
    engine.settle()  # the shards then hold every record the log had
    engine.recover_batches(())  # each shard's own recovery, under its lock, is the one that must hold
    previous = engine.codec.name
    precheck_convert(engine, codec)
    # From here this process writes the new codec (splits it finishes, recoveries).
    old_codec = engine.codec
    engine.codec = codec
    engine._codecs[codec.name] = codec
    try:
        converted, already = _sweep(engine, codec, report)
        _switch_marker(engine, codec.name)
        try:
            again, _ = _sweep(engine, codec, _no_progress)
        except BaseException:
            # A live process stored, between the sweeps, a value the new codec
            # cannot hold (or a lock timed out): switch the marker back, so
            # that processes following it keep a codec that encodes the store.
            _switch_marker(engine, previous)
            raise
    except BaseException:
        engine.codec = old_codec  # this process keeps the store's codec, as before the call
        raise
    return {
        "from": previous,
        "to": codec.name,
        "converted": converted + again,
        "already": already,
        "rewritten_after_switch": again,
    }


def _switch_marker(engine: Engine, codec_name: str) -> None:
    marker = os.path.join(engine.root, MARKER)
    got = _read_marker(marker)
    if got is None:
        raise StorageError(f"store marker {marker} is gone", path=marker)
    if got.get("codec") == codec_name:
        return
    got["codec"] = codec_name
    body = json.dumps(got).encode() + b"\n"
    _fs.atomic_write(marker, body, sync=True)
