"""A fold step writes each shard its range touches once, and a fold killed between its installs loses nothing.

Issue 13's sustained collector ceiling: a fold step rewrote every shard its
records landed in, so with keys spread by hash a folded record cost about one
whole shard rewrite once a namespace had more shards than a step had records.
The fold now indexes a whole range first and installs it shard group by shard
group (``fold_range``): shard writes are the shards touched, not steps times
shards. The shards here never split during the measured fold (the store is
reopened with a large ``shard_max_bytes``), so the count is exact.
"""

from __future__ import annotations

from typing import Any

import pytest

import filemem
from filemem._engine import _log as engine_log
from filemem._names import hash_bits
from filemem._wal import _fold
from filemem._wal._fold import read_checkpoint

NS = ("agent", "facts")


def _engine(store: filemem.Store) -> Any:
    return store._backend.engine  # type: ignore[attr-defined]


def _sharded(store_path: str, records: int) -> int:
    """A namespace of ``records`` keys in many small shards, folded; return how many shards."""
    with filemem.Store(store_path, shard_max_bytes=4096) as store:
        with store.batch() as b:
            for i in range(records):
                b.put(NS, f"old-{i}", {"n": i, "text": "o" * 60})
        _engine(store).settle()
        view = _engine(store).view(NS)
        view.refresh()
        return len({view.resolve(hash_bits(f"old-{i}")) for i in range(records)})


def _touched(store: filemem.Store, keys: list[str]) -> int:
    view = _engine(store).view(NS)
    view.refresh()
    return len({view.resolve(hash_bits(k)) for k in keys})


def _fold_counting(store: filemem.Store) -> int:
    """Fold everything unfolded in one ``fold()``; return the shard files it wrote."""
    engine = _engine(store)
    log = engine.log
    # Several 256 KiB steps, one 4 MiB step (the tests set it: the engine's is 1 MiB).
    assert log is not None and 768 << 10 < log.unfolded_bytes() < 4 << 20, log.unfolded_bytes()
    before = engine.counters["shard_writes"]
    assert engine.fold(wait=True)
    assert log.unfolded_bytes() == 0
    return int(engine.counters["shard_writes"] - before)


def test_many_keys_over_few_shards_write_each_shard_once(
    store_path: str, no_background_fold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N >> S: 3,000 new keys (about 1 MiB of log) over a few dozen shards."""
    monkeypatch.setattr(engine_log, "FOLD_CHECKPOINT_BYTES", 4 << 20)  # the whole fold is one step
    shards = _sharded(store_path, 600)
    assert 8 <= shards <= 200, shards
    keys = [f"new-{i}" for i in range(3000)]
    with filemem.Store(store_path, shard_max_bytes=64 << 20) as store:
        for k in keys:
            store.put(NS, k, {"k": k, "text": "n" * 300})
        writes = _fold_counting(store)
        assert writes == _touched(store, keys), (writes, shards)
    with filemem.Store(store_path, readonly=True) as r:
        assert r.get(NS, "new-2999") == {"k": "new-2999", "text": "n" * 300}
        assert r.get(NS, "old-599") == {"n": 599, "text": "o" * 60}
        assert len(r.keys(NS)) == 3600
        assert r.check() == []


def test_few_keys_rewritten_often_write_each_shard_once(
    store_path: str, no_background_fold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N << S: 20 keys over hundreds of shards, each put 8 times (about 3 MiB of log): 20 shard writes, not 8x."""
    monkeypatch.setattr(engine_log, "FOLD_CHECKPOINT_BYTES", 4 << 20)  # the whole fold is one step
    shards = _sharded(store_path, 3000)
    assert shards >= 100, shards
    keys = [f"hot-{i}" for i in range(20)]
    with filemem.Store(store_path, shard_max_bytes=64 << 20) as store:
        for round_ in range(8):
            for k in keys:
                store.put(NS, k, {"round": round_, "blob": "h" * 20_000})
        writes = _fold_counting(store)
        assert writes == _touched(store, keys) <= 20
    with filemem.Store(store_path, readonly=True) as r:
        for k in keys:
            got = r.get_item(NS, k)
            assert got is not None and got.value == {"round": 7, "blob": "h" * 20_000}
        assert r.check() == []


def test_a_fold_killed_between_installs_is_redone_whole(
    store_path: str, no_background_fold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installs of one range are idempotent: the checkpoint moves only after the last, a second fold redoes it."""
    _sharded(store_path, 600)
    monkeypatch.setattr(_fold, "RECORDS_PER_INSTALL", 500)  # several installs in the range
    with filemem.Store(store_path, shard_max_bytes=64 << 20) as store:
        engine = _engine(store)
        log = engine.log
        assert log is not None
        for i in range(3000):
            store.put(NS, f"new-{i}", {"n": i})
        for i in range(0, 3000, 7):
            store.put(NS, f"new-{i}", {"n": -i})  # a later op of some keys in the same range
        created = {i: store.get_item(NS, f"new-{i}").created_at for i in (0, 7, 14)}  # type: ignore[union-attr]
        before = read_checkpoint(log.dir)
        install = engine._install
        calls: list[int] = []

        def dies_after_two(records: list[Any], expired_before: float) -> None:
            if len(calls) == 2:
                raise OSError(5, "simulated crash between two installs of one range")
            calls.append(len(records))
            install(records, expired_before)

        engine._install = dies_after_two
        with pytest.raises(filemem.StorageError):
            engine.fold(wait=True)
        assert len(calls) == 2 and all(n <= 500 for n in calls), calls
        after = read_checkpoint(log.dir)
        assert (after.folded if after else None) == (before.folded if before else None), "checkpoint moved"
        engine._install = install
        assert engine.fold(wait=True)
        assert log.unfolded_bytes() == 0
    with filemem.Store(store_path, readonly=True) as r:
        for i in range(3000):
            assert r.get(NS, f"new-{i}") == {"n": -i if i % 7 == 0 else i}, i
        for i, t in created.items():
            got = r.get_item(NS, f"new-{i}")
            assert got is not None and got.created_at == t
        assert r.check() == []
