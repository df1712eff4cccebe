"""What the folding process holds: no shard it did not read, no path per folded key, no whole backlog per step.

Issue 13's memory figure (peak RSS per process under sustained 4-writer load
under 50 MB) was missed by the one process that folds; these pin the things
that made it hold more than the others: cached shards, view paths, the whole
backlog's frames, and (for a fold of other processes' records, the last
writer's close) the unfolded rest of the log read into its overlay after each
step and every folded key kept in the key-hash cache.
"""

from __future__ import annotations

from typing import Any

import pytest

import filemem
from filemem._engine import _log as engine_log
from filemem._names import hash_bits
from filemem._wal import _format
from tests.helpers import reap
from tests.wal import _workers

NS = ("agent", "facts")


@pytest.fixture
def no_background_fold(no_background_fold: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/wal/conftest.py's, with steps of 256 KiB (the engine's are 1 MiB): these logs of about a
    megabyte must take several steps for a bounded fold to stop inside them."""
    monkeypatch.setattr(engine_log, "FOLD_CHECKPOINT_BYTES", 256 << 10)


def _engine(store: filemem.Store) -> Any:
    return store._backend.engine  # type: ignore[attr-defined]


def _fill(store: filemem.Store, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.put(NS, f"key-{i}", {"n": i, "text": "x" * 100})


def test_the_fold_caches_no_shard_this_process_did_not_read(store_path: str, no_background_fold: None) -> None:
    with filemem.Store(store_path, shard_max_bytes=4096) as store:
        _fill(store, 1500)
        _engine(store).settle()
        _fill(store, 1500)  # overwrite them all: the second fold rewrites shards that exist
        engine = _engine(store)
        cached_during: list[int] = []
        install = engine._install

        def spy(records: list[Any], expired_before: float) -> None:
            install(records, expired_before)
            cached_during.append(len(engine.cache))  # before the fold's own refresh forgets anything

        engine._install = spy
        engine.settle()
        shards = engine.counters["shard_writes"]
        assert cached_during, "the fold installed nothing"
        assert shards > 50  # many shards rewritten...
        assert max(cached_during) == 0  # ...and none of them kept decoded in this process
        assert store.get(NS, "key-7") == {"n": 7, "text": "x" * 100}


def test_a_shard_this_process_had_cached_reads_the_folded_records(store_path: str, no_background_fold: None) -> None:
    with filemem.Store(store_path, shard_max_bytes=1 << 20) as store:  # one shard
        _fill(store, 50)
        engine = _engine(store)
        engine.settle()
        assert store.get(NS, "key-1", consistency="strict") == {"n": 1, "text": "x" * 100}
        store.put(NS, "key-1", {"n": -1})
        store.put(NS, "other", 1)
        engine.settle()  # revalidates the cached shard, rewrites it, replaces the cached copy
        assert engine.log.positions()[1] == engine.log.positions()[0]
        for consistency in ("cached", "strict"):
            assert store.get(NS, "key-1", consistency=consistency) == {"n": -1}
            assert store.get(NS, "other", consistency=consistency) == 1
            assert store.get(NS, "key-2", consistency=consistency) == {"n": 2, "text": "x" * 100}


def test_forgetting_folded_keys_keeps_no_path_per_key(store_path: str, no_background_fold: None) -> None:
    with filemem.Store(store_path, shard_max_bytes=4096) as store:
        store.get(NS, "key-0")  # this process has a view of the namespace: folds tell it what to forget
        engine = _engine(store)
        for round_ in range(3):
            _fill(store, 1000, start=round_ * 1000)
            engine.settle()
        view = engine.view(NS)
        shard_files = len(view.existing)
        assert shard_files > 20
        # A path is kept per shard this process looked up, not per key and depth
        # (3,000 keys folded: tens of thousands of paths before).
        assert len(view._paths) < 4 * shard_files


def test_a_bounded_fold_reads_only_about_its_own_share_of_the_log(store_path: str, no_background_fold: None) -> None:
    with filemem.Store(store_path) as store:
        _fill(store, 6000)  # about 1.3 MB of log, unfolded
        engine = _engine(store)
        log = engine.log
        synced, folded = log.positions()
        assert synced - folded > 1 << 20
        furthest = [0]
        scan = log.reader.scan

        def spy(start: int, limit: int | None = None) -> Any:
            got = scan(start, limit)
            furthest[0] = max(furthest[0], got.end)
            return got

        log.reader.scan = spy
        step = 128 << 10
        assert engine.fold(wait=True, max_bytes=step)
        log.reader.scan = scan
        now_folded = log.positions()[1]
        assert folded < now_folded < synced  # one bounded fold: some of the log, not all
        # It read up to where it stopped and a window more at most, not the whole backlog.
        assert (
            _format.offset_of(furthest[0]) - _format.offset_of(now_folded) <= max(log.fold_step_bytes, 1 << 16) + 4096
        )
        engine.settle()
        assert log.positions()[1] == log.positions()[0]
        assert store.get(NS, "key-5999") == {"n": 5999, "text": "x" * 100}


def test_a_writer_past_the_bound_folds_what_lies_past_it_not_the_whole_backlog(
    store_path: str, no_background_fold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with filemem.Store(store_path) as store:
        engine = _engine(store)
        log = engine.log
        for chunk in range(60):  # frames of 200 records: the fold can stop between any two
            with store.batch() as b:
                for i in range(chunk * 200, chunk * 200 + 200):
                    b.put(NS, f"key-{i}", {"n": i, "text": "x" * 100})
        backlog = log.unfolded_bytes()
        assert backlog > 1 << 20
        bound = 1 << 20  # several of the fold's 256 KiB checkpoint steps
        monkeypatch.setattr(engine_log, "FOLD_BYTES", bound // 4)
        monkeypatch.setattr(engine_log, "BACKLOG_BYTES", bound)
        monkeypatch.setattr(engine_log, "FOLD_STEP_BYTES", 128 << 10)
        store.put(NS, "one-more", 1)  # past the bound: this writer folds
        left = log.unfolded_bytes()
        # Its share: the log is back near the bound, not folded to the end (a put
        # of a fresh Store once folded a whole 1M-record populate's backlog: 327 s).
        assert 0 < left <= bound
        assert left >= bound - (128 << 10) - log.fold_step_bytes - (64 << 10)
        assert store.get(NS, "key-11999") == {"n": 11999, "text": "x" * 100}
        assert store.get(NS, "one-more") == 1


OTHERS = ("agent", "others")


def _puts_from_another_process(ctx: Any, path: str, count: int) -> None:
    """``count`` records another process put and left unfolded (this one keeps a read-write handle open)."""
    p = ctx.Process(target=_workers.unfolded_puts, args=(path, OTHERS, count))
    p.start()
    try:
        p.join(120)
        assert p.exitcode == 0
    finally:
        reap([p], timeout=5)


def test_a_fold_reads_into_the_overlay_no_further_than_it_folded(
    store_path: str, spawn_ctx: Any, no_background_fold: None
) -> None:
    with filemem.Store(store_path) as store:
        engine = _engine(store)
        log = engine.log
        store.put(OTHERS, "k00000", {"i": -1})
        engine.settle()
        assert store.get(OTHERS, "k00000", consistency="strict") == {"i": -1}  # its shard is cached here
        _puts_from_another_process(spawn_ctx, store_path, 6000)  # about 1.3 MB of log, none of it read here
        synced, folded = log.positions()
        assert synced - folded > 1 << 20
        assert engine.fold(wait=True, max_bytes=128 << 10)
        now_folded = log.positions()[1]
        assert folded < now_folded < synced  # one bounded fold: some of the log, not all
        # The overlay went as far as the fold and no further: nothing of the
        # unfolded rest was read in (the old code read all of it after each
        # step, so the last writer's close held every other writer's records).
        assert log.overlay.tail == now_folded
        assert log.overlay.count == 0
        # The cached shard the fold rewrote was forgotten; the rest comes from the log when asked.
        assert store.get(OTHERS, "k00000") == {"i": 0, "text": "x" * 100}
        assert store.get(OTHERS, "k05999") == {"i": 5999, "text": "x" * 100}
        assert log.overlay.count > 0
        engine.settle()
        assert log.overlay.count == 0
        assert store.get(OTHERS, "k03000", consistency="strict") == {"i": 3000, "text": "x" * 100}


def test_the_fold_keeps_no_folded_key_in_the_key_hash_cache(
    store_path: str, spawn_ctx: Any, no_background_fold: None
) -> None:
    with filemem.Store(store_path, shard_max_bytes=4096) as store:
        engine = _engine(store)
        store.put(OTHERS, "hot", 1)
        engine.settle()
        _puts_from_another_process(spawn_ctx, store_path, 3000)
        assert store.get(OTHERS, "hot", consistency="strict") == 1  # a view of the namespace: folds are forgotten here
        hash_bits.cache_clear()
        assert store.get(OTHERS, "hot", consistency="strict") == 1
        cached = hash_bits.cache_info().currsize
        engine.settle()  # 3,000 keys installed, shards split, their cached copies forgotten
        assert engine.counters["records_folded"] >= 3000
        assert engine.counters["shard_writes"] > 50
        # Each was hashed and let go: the cache holds what this process reads,
        # not every key it folded (about 250 bytes each, up to 65,536 of them).
        assert hash_bits.cache_info().currsize == cached
        assert store.get(OTHERS, "k02999", consistency="strict") == {"i": 2999, "text": "x" * 100}
