"""scan() and search() read the log's unfolded records instead of folding first (issue 13).

Before, both folded the whole log before reading the shard files: a reader
beside a hot writer chased its backlog and paid for the folds. Now they merge
the overlay (the synced unfolded records) over the shards, the newer version
winning and a logged delete hiding the shard's record. Each test counts fold
work in the reading handle and fails on the old code, which folded there.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

import filemem
from tests.helpers import reap, settle
from tests.search._reference import assert_same, reference
from tests.wal import _workers

NS = ("reads", "log")


def _folds_refused(s: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every fold of ``s`` a refused one (lock busy) and record who asked."""
    calls: list[str] = []

    def refused(**_kw: Any) -> bool:
        calls.append("fold")
        return False

    monkeypatch.setattr(s._engine, "fold", refused)
    return calls


def _mixed(s: filemem.Store, *, between: bool = False) -> None:
    """Shards hold k00..k19; the log then holds a newer k01, a delete of k02, a new key, an expired one.

    ``between``: search once after the fold (segments of the shards as folded).
    """
    for i in range(20):
        s.put(NS, f"k{i:02d}", {"text": f"alpha shard {i}"})
    settle(s)
    if between:
        s.search(NS, "alpha")
    s.put(NS, "k01", {"text": "alpha logged newer"})
    s.delete(NS, "k02")
    s.put(NS, "n01", {"text": "alpha only in the log"})
    s.put(NS, "gone", {"text": "alpha expired"}, ttl=0.001)
    time.sleep(0.01)  # "gone" has expired by the time the caller reads (a quiet machine reads within 1 ms)


def test_scan_merges_the_log_over_the_shards_without_folding(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with filemem.Store(store_path, shard_max_bytes=1024, watch="off") as s:
        _mixed(s)
        log = s._engine.log
        assert log is not None and log.unfolded_bytes() > 0
        calls = _folds_refused(s, monkeypatch)
        got = {it.key: it.value for batch in s.scan(NS, batch_size=3) for it in batch}
        assert calls == [], "scan folded (or tried to)"
        assert got == {it.key: it.value for it in s.items(NS)}
        assert got["k01"] == {"text": "alpha logged newer"}
        assert "k02" not in got and "gone" not in got
        assert got["n01"] == {"text": "alpha only in the log"}
        assert len(got) == 20  # 20 - 1 deleted + 1 new; each once
        monkeypatch.undo()


def test_search_merges_the_log_over_the_shards_without_folding(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with filemem.Store(store_path, shard_max_bytes=1024, watch="off") as s:
        _mixed(s, between=True)
        calls = _folds_refused(s, monkeypatch)
        hits = s.search(NS, "alpha", limit=100)
        assert calls == [], "search folded (or tried to)"
        keys = [h.item.key for h in hits]
        assert "k02" not in keys and "gone" not in keys and len(keys) == len(set(keys)) == 20
        assert {h.item.key: h.item.value for h in hits}["k01"] == {"text": "alpha logged newer"}
        assert_same(hits, reference(s, NS, "alpha"), 0, 100, s)
        only = s.search(NS, "logged newer")
        assert [h.item.key for h in only] == ["k01"]  # the shard's older k01 is hidden, not also found
        assert_same(
            s.search(NS, "alpha", filter={"text": {"$ne": "alpha shard 3"}}, limit=100),
            reference(s, NS, "alpha", flt={"text": {"$ne": "alpha shard 3"}}),
            0,
            100,
            s,
        )
        monkeypatch.undo()
    with filemem.Store(store_path, watch="off") as again:  # at rest: the same answers from the shards alone
        assert_same(again.search(NS, "alpha", limit=100), reference(again, NS, "alpha"), 0, 100, again)


def test_a_read_only_handle_scans_and_searches_the_log(store_path: str) -> None:
    """A read-only handle never folds: it used to see the shards as of the last fold only."""
    with filemem.Store(store_path, watch="off") as w:
        w.put(NS, "a", {"text": "alpha one"})
        settle(w)
        w.put(NS, "a", {"text": "alpha two"})
        w.put(NS, "b", {"text": "alpha three"})
        with filemem.Store(store_path, readonly=True, watch="off") as ro:
            assert {it.key: it.value for b in ro.scan(NS) for it in b} == {
                "a": {"text": "alpha two"},
                "b": {"text": "alpha three"},
            }
            assert sorted(h.item.key for h in ro.search(NS, "alpha")) == ["a", "b"]
            assert [h.item.key for h in ro.search(NS, "two")] == ["a"]


def test_scans_beside_a_writing_process_see_every_acknowledged_batch_whole(store_path: str, spawn_ctx: Any) -> None:
    """Scans while another process writes batches: every batch acknowledged before the scan, whole; no fold here."""
    filemem.Store(store_path).close()
    tmp = os.path.dirname(store_path)
    ack_path, ready, stop = (os.path.join(tmp, n) for n in ("acks", "ready", "stop"))
    p = spawn_ctx.Process(target=_workers.batch_writer, args=(store_path, ack_path, ready, stop))
    p.start()
    try:
        _workers.wait_for(ready)
        with filemem.Store(store_path, watch="off") as s:
            for _ in range(15):
                with open(ack_path) as fh:
                    acked = max((int(line) for line in fh if line.endswith("\n")), default=0)
                got = {it.key: it for batch in s.scan(("scan", "hot"), batch_size=7) for it in batch}
                gens = {got[f"b{i}"].value["n"] for i in range(10)}
                assert len(gens) == 1, f"a torn batch: {sorted(gens)}"
                assert gens.pop() >= acked
                for n in range(1, acked + 1):
                    assert got[f"new{n:06d}"].value == {"n": n}
                assert all(it.value.get("pad", "z" * 40) == "z" * 40 for it in got.values())  # whole values
            counters = s._engine.counters
            assert counters["records_folded"] == 0 and counters["folds"] == 0, counters
    finally:
        with open(stop, "w"):
            pass
        reap([p], timeout=30)
    assert p.exitcode == 0
