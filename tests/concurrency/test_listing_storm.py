"""Listings finish while a storm of writers keeps splitting the namespace (format 2).

A listing walks a namespace shard by shard and lists again when a shard was
split under it (filemem._walk). Once seen under load on 2026-12-04: the
SIGKILL loop's ``items()`` gave up with "kept changing while being listed"
after 64 listings, while its own fold thread split 1 KiB shards under it. A
user's ``keys()`` must not fail because writers are busy: after a few
listings the walk holds the folds off (the fold lock, shared) and finishes.

Real processes: four writers putting new keys, a fifth folding the log into
the shards in a loop (with 1 KiB shards every fold splits), and a lister
calling ``keys()`` in a loop. The lister lowers the walk's limits (the storm
of a test is smaller than the one that failed): on the code before the hold
a listing fails within a few rounds; with it, every listing ends and holds
everything acknowledged before it started.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
import filemem.admin
from filemem import _walk
from filemem._engine import Engine
from tests.concurrency import _workers as w
from tests.helpers import reap

pytestmark = pytest.mark.store_format(2)

NS = ("storm",)
WRITERS = 4
#: Each writer puts at least MIN_PUTS keys, and goes on until the lister has
#: held the folds off HOLDS times (at most MAX_PUTS): a storm on any machine.
MIN_PUTS = 300
MAX_PUTS = 4000
HOLDS = 3
OPTS: dict[str, Any] = {"durability": "flush", "shard_max_bytes": 1024}
PAD = "s" * 120
#: The walk's limits in the lister: a listing may list this often in all ...
MAX_PASSES = 2
#: ... and holds the folds off from its second listing on.
OPTIMISTIC_PASSES = 1


def _key(wid: int, i: int) -> str:
    return f"w{wid}-{i:05d}"


def writer_child(path: str, wid: int, progress: Any, enough: Any, barrier: Any) -> None:
    """Put new keys until ``enough`` (or MAX_PUTS); ``progress[wid]`` counts those whose put returned."""
    with filemem.Store(path, **OPTS) as store:
        barrier.wait(60)
        for i in range(MAX_PUTS):
            if i >= MIN_PUTS and enough.is_set():
                break
            store.put(NS, _key(wid, i), {"i": i, "pad": PAD})
            progress[wid] = i + 1


def folder_child(path: str, stop: Any, result_path: str, barrier: Any) -> None:
    """Fold the log into the shards over and over (each fold splits shards) until told to stop."""
    folds = 0
    with filemem.Store(path, **OPTS) as store:
        barrier.wait(60)
        while not stop.is_set():
            filemem.admin.fold(store)
            folds += 1
        w.write_result(result_path, {"folds": folds, "splits": store.stats()["splits"]})


def lister_child(path: str, progress: Any, enough: Any, stop: Any, result_path: str, barrier: Any) -> None:
    """``keys()`` in a loop; each listing must hold every key acknowledged before it began."""
    # setattr: the code before the fix has no OPTIMISTIC_PASSES; lowering
    # MAX_PASSES alone makes it fail as it did under load.
    setattr(_walk, "MAX_PASSES", MAX_PASSES)  # noqa: B010 - a Final, patched in this child only
    setattr(_walk, "OPTIMISTIC_PASSES", OPTIMISTIC_PASSES)  # noqa: B010
    holds = [0]
    waited = [0.0]
    held = getattr(Engine, "folds_held", None)
    if held is not None:

        @contextlib.contextmanager
        def counting(self: Engine) -> Iterator[None]:
            holds[0] += 1
            started = time.monotonic()
            with held(self):
                waited[0] = max(waited[0], time.monotonic() - started)
                yield

        setattr(Engine, "folds_held", counting)  # noqa: B010
    listings = 0
    error = None
    # The hold waits for the fold step in progress to end (a step moves up to
    # 1 MiB of log): into 1 KiB shards, with the machine at load 10, one took
    # ~10 s, the default lock timeout. Not what this test is about.
    with filemem.Store(path, **OPTS, lock_timeout_s=60) as store:
        barrier.wait(60)
        while not stop.is_set() and error is None:
            acked = list(progress)
            try:
                listed = set(store.keys(NS))
            except filemem.StorageError as exc:
                error = str(exc)
                break
            listings += 1
            missing = [_key(wid, i) for wid in range(WRITERS) for i in range(acked[wid]) if _key(wid, i) not in listed]
            if missing:
                error = f"listing {listings} lost {len(missing)} acknowledged puts, e.g. {missing[:3]}"
            if holds[0] >= HOLDS:
                enough.set()
    longest = round(waited[0], 3)
    w.write_result(result_path, {"listings": listings, "holds": holds[0], "longest_wait_s": longest, "error": error})


def test_listing_ends_under_a_storm_of_splits(tmp_path: Any, spawn_ctx: Any) -> None:
    path = str(tmp_path / "store")
    filemem.Store(path, **OPTS).close()
    progress = spawn_ctx.Array("i", WRITERS)
    enough = spawn_ctx.Event()
    stop = spawn_ctx.Event()
    barrier = spawn_ctx.Barrier(WRITERS + 2)
    lister_result = str(tmp_path / "lister.json")
    folder_result = str(tmp_path / "folder.json")
    writers = [w.start(spawn_ctx, writer_child, (path, wid, progress, enough, barrier)) for wid in range(WRITERS)]
    others = [
        w.start(spawn_ctx, lister_child, (path, progress, enough, stop, lister_result, barrier)),
        w.start(spawn_ctx, folder_child, (path, stop, folder_result, barrier)),
    ]
    try:
        w.join_ok(writers, 240)
        stop.set()
        w.join_ok(others, 120)
    finally:
        stop.set()
        reap(writers + others, timeout=0)
    lister = w.read_result(lister_result)
    folder = w.read_result(folder_result)
    assert lister["error"] is None, f"{lister}: a listing gave up while writers were busy"
    # The storm did what the test is about: a listing met a split under it and
    # held the folds off. The writers aim at HOLDS of them, but stop at
    # MAX_PUTS: on a loaded machine (load 10, 16,000 keys in 1 KiB shards) a
    # listing took long enough that only 2 ran in all, both held.
    assert lister["holds"] >= 1, f"no listing met a split; the test proves little: {lister}"
    written = {_key(wid, i) for wid in range(WRITERS) for i in range(progress[wid])}
    with filemem.Store(path, **OPTS) as store:
        assert set(store.keys(NS)) == written
        assert store.check() == []
    print(f"lister={lister} folder={folder}")
