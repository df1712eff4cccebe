"""A fold that cannot move (a damaged shard) bounds the log by refusing writes, and never fails a committed one.

A plain put into a key whose shard file is damaged is logged (it reads
nothing), and the fold stops at that shard until ``check --fix``. Before, a
writer past the back-pressure threshold folded after its commit and raised
the fold's CorruptShardError from the write that had just committed (a
retried ``update`` applied twice), and the log and every process's overlay
grew without bound. Real processes: the writer is a spawned child.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any

import filemem
from filemem._engine import _log as engine_log
from tests.helpers import reap, settle

DAMAGED = ("damaged",)
OTHER = ("other",)
#: The child's fold threshold (the back-pressure bound is four times this).
_FOLD_BYTES = 8 << 10


def _writer(path: str, out: Any) -> None:
    """Increment a counter in a healthy namespace until a write is refused; report what each call said."""
    engine_log.FOLD_BYTES = _FOLD_BYTES
    engine_log.BACKLOG_BYTES = 4 * _FOLD_BYTES
    engine_log.LogGlue._poke_folder = lambda self, *, now: None  # type: ignore[method-assign]  # only back-pressure folds
    acknowledged = 0
    refused: str | None = None
    behind: list[int] = []
    try:
        with filemem.Store(path) as store:
            store.put(DAMAGED, "k", {"blind": True})  # logged: a plain put reads no shard
            engine = store._backend.engine  # type: ignore[attr-defined]
            for _ in range(2000):
                try:
                    store.update(OTHER, "counter", lambda v: (v or 0) + 1)
                except filemem.FileMemError as exc:
                    refused = f"{type(exc).__name__}: {exc}"
                    break
                acknowledged += 1
                behind.append(engine.log.unfolded_bytes())
            # Refused again, nothing logged: the log does not move.
            before = engine.log.positions()[0]
            try:
                store.update(OTHER, "counter", lambda v: (v or 0) + 1)
                again = "accepted"
            except filemem.FileMemError as exc:
                again = type(exc).__name__
            unchanged = engine.log.positions()[0] == before
        out.put(
            {
                "acknowledged": acknowledged,
                "refused": refused,
                "max_behind": max(behind),
                "again": again,
                "unchanged": unchanged,
            }
        )
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def test_a_stuck_fold_refuses_writes_past_the_bound_and_fails_no_committed_one(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        store.put(DAMAGED, "k", {"v": 1})
        store.put(OTHER, "counter", 0)
        settle(store)
    (shard,) = [
        os.path.join(d, f)
        for d, _, fs in os.walk(os.path.join(store_path, "ns", "damaged"))
        for f in fs
        if f.endswith(".shard")
    ]
    with open(shard, "rb") as fh:
        data = bytearray(fh.read())
    data[-3] ^= 0xFF  # a flipped byte in the body: the checksum fails
    with open(shard, "wb") as fh:
        fh.write(data)

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_writer, args=(store_path, out))
    child.start()
    try:
        got = out.get(timeout=240)
    finally:
        reap([child])
    assert "error" not in got, got["error"]
    # Writes went on past the fold threshold, then were refused with a clear
    # error naming the cause, before the log grew far past the bound.
    assert got["refused"] is not None and got["refused"].startswith("StorageError: write refused"), got
    assert "check --fix" in got["refused"]
    assert got["acknowledged"] > 0
    assert got["max_behind"] < 4 * _FOLD_BYTES + (64 << 10)
    assert got["again"] == "StorageError" and got["unchanged"]

    with filemem.Store(store_path) as store:
        # Every acknowledged increment is there, and no refused or failed one:
        # a write reported as failed was never applied.
        assert store.get(OTHER, "counter") == got["acknowledged"]
        findings = store.check(fix=True)
        assert any(f.path == shard or shard in str(f) for f in findings), findings
        store.update(OTHER, "counter", lambda v: v + 1)  # accepted again once the fold can move
        settle(store)
        assert store.get(OTHER, "counter") == got["acknowledged"] + 1
        assert store.get(DAMAGED, "k") == {"blind": True}  # the put logged into the damaged shard, installed
    with filemem.Store(store_path) as store:
        engine = store._backend.engine  # type: ignore[attr-defined]
        synced, folded = engine.log.positions()
        assert synced == folded
