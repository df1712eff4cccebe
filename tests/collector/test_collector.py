"""The collector in one process: API, config, backpressure, failures, journal files, check()."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
from filemem import CollectorConfig
from filemem._collector._applied import RangeSet, marker_op
from filemem._collector._journal import HEADER, encode_frame, read_journal
from filemem._engine import Engine, Op
from tests.helpers import apply_puts_via_apply, settle


def _journals(store: filemem.Store) -> list[str]:
    d = os.path.join(store.path, "journals")
    return sorted(n for n in os.listdir(d) if n.endswith(".journal")) if os.path.isdir(d) else []


class Stall:
    """Makes Engine.apply block (for namespaces starting with "stalled") until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.applied: list[str] = []
        self.batches: list[list[str]] = []
        real = Engine.apply

        def apply(engine: Engine, ops: list[Op]) -> list[Any]:
            data = [op for op in ops if op.namespace and op.namespace[0] == "stalled"]
            if data:
                self.entered.set()
                assert self.gate.wait(30)
                self.applied.extend(op.key for op in data)
                self.batches.append([op.key for op in data])
            return real(engine, ops)

        monkeypatch.setattr(Engine, "apply", apply)
        monkeypatch.setattr(Engine, "apply_puts", apply_puts_via_apply)

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def stall(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stall]:
    s = Stall(monkeypatch)
    yield s
    s.release()


# ---------------------------------------------------------------- basics


def test_collect_flush_close(store: filemem.Store) -> None:
    with store.collector() as c:
        ids = [c.collect(("agent-1", "events"), f"ev-{i}", {"i": i}) for i in range(300)]
        assert ids == list(range(1, 301))
        assert _journals(store) == [os.path.basename(c.stats()["journal"])]
        assert store.check() == []  # a live collector's journal is no finding
        c.flush()
        assert store.get(("agent-1", "events"), "ev-299") == {"i": 299}
        s = c.stats()
        assert s["applied"] == s["accepted"] == s["collected"] == 300
        assert s["queue_depth"] == 0 and s["breaker"] == "closed" and c.health()["ok"]
        assert s["apply_p50_ms"] > 0 and s["apply_p99_ms"] >= s["apply_p50_ms"]
    assert c.closed
    assert _journals(store) == []
    settle(store)  # format 2: the collector's internal records reach the shard files at the fold
    assert os.listdir(os.path.join(store.path, "internal", "collector")) == []
    assert store.list_namespaces() == [("agent-1", "events")]
    assert store.check() == []
    with pytest.raises(filemem.StoreClosedError):
        c.collect("a", "b", 1)


def test_no_journal_mode(store: filemem.Store) -> None:
    with store.collector(journal=False) as c:
        c.collect("ns", "k", [1, 2])
        c.flush()
        assert _journals(store) == []
        assert c.stats()["journal"] is None
    assert store.get("ns", "k") == [1, 2]


def test_store_close_closes_its_collectors(store_path: str) -> None:
    store = filemem.Store(store_path)
    c = store.collector()
    c.collect("ns", "k", 1)
    store.close()
    assert c.closed
    with filemem.Store(store_path) as again:
        assert again.get("ns", "k") == 1


def test_acollect_and_aflush(store: filemem.Store) -> None:
    async def main() -> None:
        with store.collector() as c:
            ids = [await c.acollect("async", f"k{i}", i) for i in range(50)]
            await c.aflush()
            assert ids[-1] == 50
            assert store.get("async", "k49") == 49

    asyncio.run(main())


def test_bad_input_raises_and_queues_nothing(store: filemem.Store) -> None:
    with store.collector() as c:
        with pytest.raises(filemem.InvalidKeyError):
            c.collect("ns", "a/b", 1)
        with pytest.raises(filemem.InvalidKeyError):
            c.collect("../x", "k", 1)
        with pytest.raises(filemem.InvalidValueError):
            c.collect("ns", "k", object())
        with pytest.raises(filemem.InvalidValueError, match="priority"):
            c.collect("ns", "k", 1, priority="urgent")
        assert c.stats()["collected"] == 0
        assert c.collect("ns", "k", 1) == 1


def test_namespaces_kept_by_collect_are_checked_every_time_and_name_one_namespace(store: filemem.Store) -> None:
    """collect() keeps the namespaces it has checked (issue 13): a bad one is refused every time, never kept;
    every form of one namespace (str, tuple, list: not hashable) lands in the same place."""
    with store.collector() as c:
        for _ in range(2):
            with pytest.raises(filemem.InvalidKeyError):
                c.collect("a/../b", "k", 1)
            with pytest.raises(filemem.InvalidKeyError):
                c.collect(("a", "b/c"), "k", 1)
            with pytest.raises(filemem.InvalidKeyError):
                c.collect(["a", ""], "k", 1)
            with pytest.raises(filemem.InvalidKeyError):
                c.collect(7, "k", 1)  # type: ignore[arg-type]
            with pytest.raises(filemem.InvalidValueError, match="priority"):
                c.collect("a/b", "k", 1, priority=["high"])  # type: ignore[arg-type]
        assert c.stats()["collected"] == 0
        c.collect("a/b", "s", 1)
        c.collect(("a", "b"), "t", 2)
        c.collect(["a", "b"], "l", 3)
        c.collect("a/b", "s2", 4)
        c.flush()
    assert store.list_namespaces() == [("a", "b")]
    assert sorted(store.keys(("a", "b"))) == ["l", "s", "s2", "t"]


def test_high_priority_goes_first(store: filemem.Store, stall: Stall) -> None:
    with store.collector(batch_size=10, batch_timeout=0) as c:
        c.collect("stalled", "first", 0)
        assert stall.entered.wait(10)  # the writer holds "first" and is stuck
        for i in range(30):
            c.collect("stalled", f"n{i}", i)
        c.collect("stalled", "urgent", 1, priority="high")
        c.collect("stalled", "late", 1, priority="low")
        deadline = time.monotonic() + 10
        while c.stats()["accepted"] < 33 and time.monotonic() < deadline:
            time.sleep(0.005)
        stall.release()
        c.flush()
    # Batches: [first], then the high one with the oldest normal ones (a batch
    # is applied in id order, atomically), ..., the low one last.
    assert stall.batches[0] == ["first"]
    assert "urgent" in stall.batches[1] and len(stall.batches[1]) == 10
    assert stall.batches[-1][-1] == "late" and "n29" not in stall.batches[1]


# ---------------------------------------------------------------- config


def test_config_defaults_toml_env_and_errors(tmp_path: Any, store: filemem.Store, monkeypatch: Any) -> None:
    assert CollectorConfig().batch_size == 1000
    toml = tmp_path / "c.toml"
    toml.write_text('[collector]\nbatch_size = 50\non_full = "raise"\n')
    assert CollectorConfig.from_toml(toml).batch_size == 50
    cfg = CollectorConfig.from_env({"FILEMEM_COLLECTOR_BATCH_SIZE": "7", "FILEMEM_COLLECTOR_JOURNAL": "off"})
    assert (cfg.batch_size, cfg.journal) == (7, False)
    loaded = CollectorConfig.load(toml, environ={"FILEMEM_COLLECTOR_BATCH_SIZE": "60"}, max_queue=500)
    assert (loaded.batch_size, loaded.on_full, loaded.max_queue) == (60, "raise", 500)
    for bad, msg in [
        ({"batch_size": 0}, "batch_size"),
        ({"on_full": "explode"}, "on_full"),
        ({"batch_timeout": -1}, "batch_timeout"),
        ({"backoff_base": 2.0, "backoff_max": 1.0}, "backoff_max"),
        ({"batch_size": 10, "max_queue": 5}, "max_queue"),
        ({"journal": "yes"}, "journal"),
    ]:
        with pytest.raises(filemem.InvalidValueError, match=msg):
            store.collector(**bad)
    with pytest.raises(filemem.InvalidValueError, match="unknown"):
        store.collector(batch_sise=5)
    with pytest.raises(filemem.InvalidValueError, match="not a number"):
        CollectorConfig.from_env({"FILEMEM_COLLECTOR_BATCH_SIZE": "many"})
    (tmp_path / "bad.toml").write_text("batch_size = [")
    with pytest.raises(filemem.InvalidValueError, match="not valid TOML"):
        store.collector(tmp_path / "bad.toml")
    monkeypatch.setenv("FILEMEM_COLLECTOR_MAX_QUEUE", "1234")
    with store.collector(toml) as c:
        assert (c.config.batch_size, c.config.max_queue) == (50, 1234)
    monkeypatch.setenv("FILEMEM_COLLECTOR_MAX_QUEUE", "0")
    with pytest.raises(filemem.InvalidValueError, match="max_queue"):
        store.collector()
    assert _journals(store) == []  # nothing was created by the failed constructions


# ---------------------------------------------------------------- backpressure under a stalled writer


def test_on_full_raise(store: filemem.Store, stall: Stall) -> None:
    with store.collector(max_queue=20, batch_size=5, on_full="raise") as c:
        for i in range(20):
            c.collect("stalled", f"k{i}", i)
        with pytest.raises(filemem.QueueFullError):
            c.collect("stalled", "over", 1)
        assert c.stats()["queue_depth"] == 20
        stall.release()
        c.flush()
        assert c.collect("stalled", "after", 1) == 21
    assert len(store.keys("stalled")) == 21


def test_on_full_block_waits_then_times_out_or_proceeds(store: filemem.Store, stall: Stall) -> None:
    with store.collector(max_queue=10, batch_size=5, on_full="block", block_timeout=0.2) as c:
        for i in range(10):
            c.collect("stalled", f"k{i}", i)
        t = time.monotonic()
        with pytest.raises(filemem.QueueFullError, match="stayed full"):
            c.collect("stalled", "over", 1)
        assert time.monotonic() - t >= 0.19
        # Now wait long enough for the writer's fsynced batch on a loaded machine (0.2 s was not:
        # the old and the new code each failed here about 1 run in 10 at load 15-27).
        c.config = dataclasses.replace(c.config, block_timeout=30)
        threading.Timer(0.02, stall.release).start()
        t = time.monotonic()
        c.collect("stalled", "waited", 1)  # blocks until the writer makes room
        assert time.monotonic() - t >= 0.015  # it did wait for the release
        c.flush()
    assert "waited" in store.keys("stalled")


def test_on_full_drop_oldest_counts_and_dead_letters(store: filemem.Store, stall: Stall) -> None:
    with store.collector(max_queue=10, batch_size=2, batch_timeout=0, on_full="drop_oldest") as c:
        c.collect("stalled", "k0", 0)
        assert stall.entered.wait(10)  # k0 is in flight, not droppable
        for i in range(1, 16):
            c.collect("stalled", f"k{i}", i)
        s = c.stats()
        assert s["dropped"] == 6 and s["queue_depth"] == 10
        stall.release()
        c.flush()
        assert c.stats()["dead_letters"] == 6
    letters = store.dead_letters()
    dropped = sorted(d.key for d in letters)
    assert len(dropped) == 6 and all(d.reason == "dropped" for d in letters)
    kept = store.keys("stalled")
    assert not set(dropped) & set(kept) and len(kept) == 10
    # Dropped records are retired from the journal: a reopen replays nothing.
    store.close()
    with filemem.Store(store.path) as again:
        assert again.keys("stalled") == kept
        assert again.replay_dead_letters() == {"applied": 6, "superseded": 0, "failed": 0}
        assert len(again.keys("stalled")) == 16 and again.dead_letters() == []


# ---------------------------------------------------------------- failures


def test_failing_store_trips_breaker_backs_off_recovers(store: filemem.Store, monkeypatch: Any) -> None:
    real = Engine.apply
    failing = threading.Event()
    failing.set()
    calls = [0]

    def flaky(engine: Engine, ops: list[Op]) -> list[Any]:
        if failing.is_set():
            calls[0] += 1
            raise filemem.StorageError("injected EIO", errno=5, path=engine.root)
        return real(engine, ops)

    monkeypatch.setattr(Engine, "apply", flaky)
    monkeypatch.setattr(Engine, "apply_puts", apply_puts_via_apply)
    with store.collector(breaker_threshold=3, breaker_reset=0.3, backoff_base=0.005, backoff_max=0.02) as c:
        for i in range(100):
            c.collect("flaky", f"k{i}", i)
        deadline = time.monotonic() + 10
        while c.stats()["breaker"] == "closed" and time.monotonic() < deadline:
            time.sleep(0.01)
        h = c.health()
        assert h["breaker"] in ("open", "half-open") and not h["ok"] and "injected" in h["last_error"]
        # Open: no hammering while it waits.
        before = calls[0]
        time.sleep(0.2)
        assert calls[0] - before <= 2
        with pytest.raises(filemem.FlushTimeoutError):
            c.flush(timeout=0.1)
        failing.clear()
        c.flush(timeout=10)
        s = c.stats()
        assert s["applied"] == 100 and s["dead_letters"] == 0 and s["breaker"] == "closed"
        assert s["breaker_opened"] >= 1 and s["failed"] > 0
    assert len(store.keys("flaky")) == 100


def test_record_the_store_refuses_goes_to_dead_letters_and_replays(store: filemem.Store, monkeypatch: Any) -> None:
    real = Engine.apply
    poisoned = threading.Event()
    poisoned.set()

    def picky(engine: Engine, ops: list[Op]) -> list[Any]:
        if poisoned.is_set() and any(op.key == "poison" for op in ops):
            raise filemem.InvalidValueError("injected: refused")
        return real(engine, ops)

    monkeypatch.setattr(Engine, "apply", picky)
    monkeypatch.setattr(Engine, "apply_puts", apply_puts_via_apply)
    with store.collector(batch_timeout=0.05) as c:
        for i in range(20):
            c.collect("pick", f"k{i}", i)
        c.collect("pick", "poison", {"bad": True})
        c.flush()
        s = c.stats()
        assert s["applied"] == 20 and s["dead_letters"] == 1
    assert len(store.keys("pick")) == 20
    (d,) = store.dead_letters()
    assert (d.namespace, d.key, d.value, d.reason) == (("pick",), "poison", {"bad": True}, "failed")
    assert "refused" in d.error
    assert store.check() == []
    poisoned.clear()
    assert store.replay_dead_letters()["applied"] == 1
    assert store.get("pick", "poison") == {"bad": True}


# ---------------------------------------------------------------- journals on disk


def _dead_journal(store: filemem.Store, jid: str, records: list[tuple[int, str, Any]], tail: bytes = b"") -> str:
    d = os.path.join(store.path, "journals")
    os.makedirs(d, exist_ok=True)
    codec = store._engine.codec
    frames = b"".join(
        encode_frame(seq, time.time() - 10, 1, ("j",), key, codec.name, codec.encode(v)) for seq, key, v in records
    )
    path = os.path.join(d, jid + ".journal")
    with open(path, "wb") as fh:
        fh.write(HEADER + frames + tail)
    return path


def test_torn_tail_is_ignored_and_dead_journal_replayed(store: filemem.Store) -> None:
    good = [(n, f"k{n}", n) for n in range(1, 6)]
    torn = encode_frame(6, time.time(), 1, ("j",), "k6", store.codec, store._engine.codec.encode(6))[:-3]
    path = _dead_journal(store, "j999-dead", good, torn)
    records, end, is_torn = read_journal(path)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5] and is_torn and end < os.path.getsize(path)
    codes = sorted(f.code for f in store.check())
    assert codes == ["torn-journal", "unreplayed-journal"]
    store.close()
    with filemem.Store(store.path) as again:  # opening replays
        assert again.keys("j") == [f"k{n}" for n in range(1, 6)]
        assert not os.path.exists(path)
        assert again.check() == []


def test_replay_skips_applied_ids_and_never_clobbers_newer_writes(store: filemem.Store) -> None:
    eng = store._engine
    jid = "j998-dead"
    # What a dead collector left: records 1..3 applied with their marker, 4..6 not.
    eng.apply([Op(("j",), f"k{n}", "put", f"old{n}") for n in (1, 2, 3)] + [marker_op(jid, RangeSet([[1, 3]]))])
    store.put("j", "k1", "newer by someone else")
    time.sleep(0.01)
    _dead_journal(store, jid, [(n, f"k{n}", f"old{n}") for n in range(1, 7)])
    store.put("j", "k5", "newer than the journal")  # written after k5 was collected
    v2 = store.get_item("j", "k2")
    assert v2 is not None
    store.close()
    with filemem.Store(store.path) as again:
        assert again.get("j", "k1") == "newer by someone else"  # applied id 1 skipped
        assert again.get_item("j", "k2") == v2  # not written again
        assert again.get("j", "k4") == "old4" and again.get("j", "k6") == "old6"
        assert again.get("j", "k5") == "newer than the journal"
        assert _journals(again) == [] and again.check() == []
        assert again.list_namespaces() == [("j",)]


def test_live_journal_is_not_replayed_by_others(store: filemem.Store, stall: Stall) -> None:
    with store.collector() as c:
        c.collect("stalled", "k", 1)
        assert stall.entered.wait(10)
        with filemem.Store(store.path) as other:  # opening would replay a dead journal
            assert other.get("stalled", "k") is None
            assert other.check() == []
        assert len(_journals(store)) == 1
        stall.release()
        c.flush()
    assert store.get("stalled", "k") == 1


def test_journal_is_truncated_once_applied(store: filemem.Store, monkeypatch: Any) -> None:
    monkeypatch.setattr("filemem._collector._apply._TRUNCATE_BYTES", 2000)
    with store.collector(batch_size=50) as c:
        for i in range(200):
            c.collect("t", f"k{i}", "x" * 50)
        c.flush()
        deadline = time.monotonic() + 5
        while os.path.getsize(c.stats()["journal"]) > len(HEADER) and time.monotonic() < deadline:
            c.collect("t", "nudge", 0)
            c.flush()
        assert os.path.getsize(c.stats()["journal"]) == len(HEADER)
    assert {f"k{i}" for i in range(200)} <= set(store.keys("t"))


def test_rangeset() -> None:
    r = RangeSet()
    r.add_many([5, 1, 2, 3, 9, 10])
    assert r.ranges == [[1, 3], [5, 5], [9, 10]]
    r.add_range(4, 8)
    assert r.ranges == [[1, 10]] and 7 in r and 11 not in r and len(r) == 10
    r.add_range(20, 20)
    r.add_range(15, 16)
    assert r.ranges == [[1, 10], [15, 16], [20, 20]]


def test_collector_start_and_check_fix_replay_dead_journals(store: filemem.Store) -> None:
    _dead_journal(store, "j997-dead", [(1, "a", 1), (2, "b", 2)])
    with store.collector() as c:  # a starting collector replays first
        assert c.stats()["recovered"] == 2
    assert store.keys("j") == ["a", "b"]
    _dead_journal(store, "j996-dead", [(1, "c", 3)])
    fixed = store.check(fix=True)
    assert [(f.code, f.fixed) for f in fixed] == [("unreplayed-journal", True)]
    assert store.get("j", "c") == 3 and store.check() == []


def _failing(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    real = Engine.apply
    failing = threading.Event()
    failing.set()

    def apply(engine: Engine, ops: list[Op]) -> list[Any]:
        if failing.is_set() and any(op.namespace[:1] == ("down",) for op in ops):
            raise filemem.StorageError("injected: store down", errno=5, path=engine.root)
        return real(engine, ops)

    monkeypatch.setattr(Engine, "apply", apply)
    monkeypatch.setattr(Engine, "apply_puts", apply_puts_via_apply)
    return failing


def test_close_on_a_failing_store_keeps_the_journal_for_replay(store: filemem.Store, monkeypatch: Any) -> None:
    failing = _failing(monkeypatch)
    c = store.collector(breaker_reset=0.05, backoff_max=0.02)
    for i in range(10):
        c.collect("down", f"k{i}", i)
    time.sleep(0.1)
    s = c.stats()
    assert s["queue_depth"] == 10 and s["oldest_age_s"] > 0 and s["accepted"] == 10
    c.close(timeout=0.2)  # cannot drain: the journal stays
    assert len(_journals(store)) == 1
    assert [f.code for f in store.check()] == ["unreplayed-journal"]
    failing.clear()
    store.close()
    with filemem.Store(store.path) as again:
        assert again.keys("down") == sorted(f"k{i}" for i in range(10))
        assert _journals(again) == [] and again.check() == []


def test_close_without_journal_on_a_failing_store_dead_letters_the_rest(store: filemem.Store, monkeypatch: Any) -> None:
    failing = _failing(monkeypatch)
    c = store.collector(journal=False, breaker_reset=0.05, backoff_max=0.02)
    for i in range(5):
        c.collect("down", f"k{i}", i)
    c.close(timeout=0.2)
    letters = store.dead_letters()
    assert sorted(d.key for d in letters) == [f"k{i}" for i in range(5)]
    assert {d.reason for d in letters} == {"unfinished"}
    failing.clear()
    assert store.replay_dead_letters() == {"applied": 5, "superseded": 0, "failed": 0}
    assert store.keys("down") == [f"k{i}" for i in range(5)]


def test_acollect_with_a_full_queue_waits_off_the_event_loop(store: filemem.Store, stall: Stall) -> None:
    async def main() -> None:
        with store.collector(max_queue=3, batch_size=1, batch_timeout=0, on_full="drop_oldest") as c:
            for i in range(3):
                await c.acollect("stalled", f"k{i}", i)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            t = asyncio.create_task(ticker())
            await c.acollect("stalled", "k3", 3)  # full: drops in a worker thread
            t.cancel()
            assert c.stats()["dropped"] == 1
            stall.release()
            await c.aflush()

    asyncio.run(main())
    assert len(store.keys("stalled")) == 3


def _forked_child_uses(c: filemem.Collector, w: int) -> None:
    try:
        c.collect("ns", "from-child", 1)
        code = 1
    except filemem.StoreClosedError:
        code = 0
    c.close()  # must not retire the parent's journal
    os.write(w, str(code).encode())
    os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_cannot_use_the_parents_collector(store: filemem.Store) -> None:
    with store.collector() as c:
        c.collect("ns", "k", 1)
        c.flush()
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+ warns: we have threads
            pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            _forked_child_uses(c, w)
        os.close(w)
        assert os.read(r, 10) == b"0"
        os.close(r)
        os.waitpid(pid, 0)
        assert len(_journals(store)) == 1  # still ours
        c.collect("ns", "k2", 2)
    assert store.get("ns", "k2") == 2


@pytest.mark.parametrize(
    "ids",
    [[], [7], [3, 1, 2], [1, 1, 3], [1, 3, 3], [2, 2], [5, 6, 7, 9], [10, 9, 8, 8, 7], list(range(1, 1001))],
)
def test_rangeset_add_many_is_the_set_of_its_ids(ids: list[int]) -> None:
    # add_many takes one run without a gap whole (the usual apply batch); a duplicate
    # must not make a gapped list look like one run ([1, 1, 3] spans three ids but misses 2).
    r = RangeSet([[100, 100]])
    r.add_many(ids)
    expect = sorted({*ids, 100})
    assert [n for lo, hi in r.ranges for n in range(lo, hi + 1)] == expect
    assert len(r) == len(expect)


def test_a_batch_over_64_namespaces_is_applied_in_groups_of_at_most_64(
    store: filemem.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each engine batch holds the shard locks of its namespaces: the apply splits a batch
    # spanning more than 64 into groups (each with the marker), and applies every record.
    spans: list[int] = []
    real = Engine.apply

    def apply(engine: Engine, ops: list[Op]) -> list[Any]:
        spans.append(len({op.namespace for op in ops if op.namespace[0] == "many"}))
        return real(engine, ops)

    monkeypatch.setattr(Engine, "apply", apply)
    monkeypatch.setattr(Engine, "apply_puts", apply_puts_via_apply)
    with store.collector(batch_size=1000, batch_timeout=0.5) as c:  # one batch: flush() ends its wait
        for i in range(300):
            c.collect(("many", f"n{i % 150}"), f"k{i}", i)
        c.flush()
    assert sum(1 for n in spans if n) >= 3 and max(spans) <= 64
    assert sum(len(store.keys(("many", f"n{j}"))) for j in range(150)) == 300


def test_collect_refuses_a_value_nested_deeper_than_put_allows(store: filemem.Store) -> None:
    # collect() checks depth as put() does; a flat record and a scalar skip the walk, nothing else.
    deep: Any = 1
    for _ in range(150):
        deep = {"d": deep}
    with store.collector() as c:
        with pytest.raises(filemem.InvalidValueError):
            store.put("direct", "k", deep)
        with pytest.raises(filemem.InvalidValueError):
            c.collect("t", "deep", deep)
        with pytest.raises(filemem.InvalidValueError):
            c.collect("t", "deep-list", [deep])
        c.collect("t", "flat", {"a": 1, "b": "x"})
        c.collect("t", "scalar", 3)
        c.collect("t", "list", [1, 2])
        c.flush()
    assert sorted(store.keys("t")) == ["flat", "list", "scalar"]
