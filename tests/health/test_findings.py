"""Store.health() on real stores in each state, and Store.maintain() clearing what it should (issue 15)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import filemem
import filemem.admin
from filemem import _maintain
from filemem._engine import Engine, Op
from filemem._errors import StorageError
from filemem._health import _probes
from tests.collector._children import journal_only_child
from tests.helpers import apply_puts_via_apply, reap, settle
from tests.sessions._workers import crash_child, read_log
from tests.sessions._workers import wait_for as wait_log

from ._workers import slow_update_child, wait_for


def codes(findings: list[filemem.HealthFinding]) -> list[str]:
    return [f.code for f in findings]


def _snapshot_files(root: str) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_mtime_ns, st.st_size)
    return out


def test_a_clean_store_has_no_findings_and_maintain_does_nothing(store: filemem.Store) -> None:
    for i in range(50):
        store.put("agent-1/facts", f"k{i}", {"i": i})
    store.search("agent-1", query="nothing")
    assert store.health() == []
    report = store.maintain()
    assert report.findings == () and report.steps == () and report.remaining == ()
    assert not report.out_of_budget and set(report.counts.values()) == {0}


def test_expired_records_are_found_swept_and_gone(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        with store.batch() as b:  # one commit: a write drops the expired records of the shard it writes
            for i in range(40):
                b.put("ns", f"k{i}", i, ttl=0.2 if i % 4 else None)
        time.sleep(0.3)
        (f,) = store.health()
        assert (f.code, f.severity) == ("expired-records", "warning")  # 75% of what is on disk
        assert f.details["expired"] == 30 and f.details["namespaces"] == {"ns": 30}
        assert "maintain" in f.action

        planned = store.maintain(dry_run=True)
        assert [(s.code, s.outcome) for s in planned.steps] == [("expired-records", "planned")]
        assert planned.counts["expired_dropped"] == 0 and codes(store.health()) == ["expired-records"]

        report = store.maintain()
        assert report.counts["expired_dropped"] == 30
        assert [(s.code, s.outcome) for s in report.steps] == [("expired-records", "done")]
        assert report.remaining == ()
        assert store.health() == []
        assert sorted(store.keys("ns")) == sorted(f"k{i}" for i in range(0, 40, 4))


@pytest.mark.store_format(1)
def test_tiny_sibling_shards_are_found_and_merged(store_path: str) -> None:
    _tiny_sibling_shards(store_path, fold_after_puts=False)


@pytest.mark.store_format(2)
def test_tiny_sibling_shards_are_found_and_merged_v2(store_path: str) -> None:
    """Format 2 splits at the fold, not at the put: fold once the shards are full, then delete."""
    _tiny_sibling_shards(store_path, fold_after_puts=True)


def _tiny_sibling_shards(store_path: str, *, fold_after_puts: bool) -> None:
    with filemem.Store(store_path, shard_max_bytes=1024, durability="flush") as store:
        for i in range(200):
            store.put("ns", f"k{i:03d}", {"pad": "p" * 40})
        if fold_after_puts:
            filemem.admin.fold(store)
        for i in range(5, 200):
            store.delete("ns", f"k{i:03d}")
        # Tiny for a store whose shards hold 1 KiB they are not; the default (32 KiB) merges them back.
        assert store.health() == []
    shards_before = len([n for n in os.listdir(os.path.join(store_path, "ns", "ns")) if n.endswith(".shard")])
    with filemem.Store(store_path) as store:
        found = store.health()
        assert codes(found) == ["tiny-shards"]
        assert found[0].details["pairs"] >= 1 and found[0].details["max_bytes"] == 32 * 1024 // 16
        report = store.maintain()
        assert report.counts["merges"] >= found[0].details["pairs"]
        after = len([n for n in os.listdir(os.path.join(store_path, "ns", "ns")) if n.endswith(".shard")])
        assert after < shards_before
        assert store.health() == []
        assert store.keys("ns") == [f"k{i:03d}" for i in range(5)]


def test_an_oversize_shard_is_found_and_split(store_path: str) -> None:
    with filemem.Store(store_path, shard_max_bytes=1 << 20) as big:
        for i in range(100):
            big.put("ns", f"k{i}", "v" * 100)
    with filemem.Store(store_path, shard_max_bytes=4096) as store:
        (f,) = store.health()
        assert (f.code, f.details["count"]) == ("oversize-shard", 1)
        report = store.maintain()
        assert report.counts["splits"] >= 1
        assert store.health() == []
        assert len(store.keys("ns")) == 100


def test_an_interrupted_split_is_found_and_finished(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with filemem.Store(store_path, shard_max_bytes=1024, durability="flush") as store:
        for i in range(200):
            store.put("ns", f"k{i:03d}", {"i": i, "pad": "p" * 40})
        for i in range(10, 200):
            store.delete("ns", f"k{i:03d}")
    real_unlink = _maintain._unlink

    def dies(p: str) -> None:
        raise StorageError("injected: the merging process died here", path=p)

    monkeypatch.setattr(_maintain, "_unlink", dies)
    with filemem.Store(store_path) as store, pytest.raises(StorageError):
        store.compact()  # leaves a flagged parent over its two leaves
    monkeypatch.setattr(_maintain, "_unlink", real_unlink)
    with filemem.Store(store_path) as store:
        assert "interrupted-split" in codes(store.health())
        store.maintain()
        assert "interrupted-split" not in codes(store.health())
        assert store.check() == []
        assert store.keys("ns") == [f"k{i:03d}" for i in range(10)]


def test_a_damaged_shard_is_reported_and_left_for_check_fix(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        store.put("ns", "a", 1)
    shard = os.path.join(store_path, "ns", "ns", "s.shard")
    with open(shard, "rb") as fh:
        data = bytearray(fh.read())
    data[-3] ^= 0xFF
    with open(shard, "wb") as fh:
        fh.write(data)
    with filemem.Store(store_path) as store:
        (f,) = store.health()
        assert (f.code, f.severity) == ("damaged-shard", "error")
        assert "check" in f.action and "--fix" in f.action
        report = store.maintain()
        assert codes(list(report.remaining)) == ["damaged-shard"]
        with open(shard, "rb") as fh:
            assert fh.read() == bytes(data)  # maintain never touches it


def test_a_stale_search_index_is_found_and_rebuilt(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        for i in range(60):
            store.put("docs", f"d{i}", {"text": f"word{i} common"})
        settle(store)  # format 2: index files hold shards' segments; the fold puts the records in the shards
        assert len(store.search("docs", query="common", limit=100)) == 60
    # Another process rewrites every shard without maintaining the index.
    with filemem.Store(store_path, index_on_write=False) as writer:
        for i in range(60):
            writer.put("docs", f"d{i}", {"text": f"changed{i} common"})
    with filemem.Store(store_path) as store:
        (f,) = store.health()
        assert f.code == "stale-search-index" and f.details["namespaces"] == {"docs": f.details["segments"]}
        report = store.maintain()
        assert report.counts["segments_indexed"] == f.details["segments"]
        assert store.health() == []
        assert len(store.search("docs", query="changed7")) == 1


def test_a_damaged_search_index_is_found_and_rebuilt(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        for i in range(20):
            store.put("docs", f"d{i}", {"text": f"word{i}"})
        settle(store)  # format 2: index files hold shards' segments (the fold puts the records there)
        store.search("docs", query="word3")
    idx_dir = os.path.join(store_path, "index", "docs")
    (name,) = [n for n in os.listdir(idx_dir) if n.endswith(".idx")]
    with open(os.path.join(idx_dir, name), "r+b") as fh:
        fh.seek(-5, os.SEEK_END)
        fh.write(b"XXXXX")
    with filemem.Store(store_path) as store:
        assert "damaged-search-index" in codes(store.health())
        report = store.maintain()
        assert report.counts["segments_indexed"] >= 1
        assert store.health() == [] and store.check() == []


def test_dead_letters_are_a_warning_while_growing_and_left_to_a_person(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Engine.apply

    def picky(engine: Engine, ops: list[Op]) -> list[Any]:
        if any(op.key == "poison" for op in ops):
            raise filemem.InvalidValueError("injected: refused")
        return real(engine, ops)

    with filemem.Store(store_path) as store:
        monkeypatch.setattr(Engine, "apply", picky)
        # The collector commits through the tuple entry point: route it to the patched apply.
        monkeypatch.setattr(Engine, "apply_puts", apply_puts_via_apply)
        with store.collector(batch_timeout=0.05) as c:
            c.collect("pick", "ok", 1)
            c.collect("pick", "poison", {"bad": True})
            c.flush()
        monkeypatch.setattr(Engine, "apply", real)
        (f,) = store.health()
        assert (f.code, f.severity) == ("dead-letters", "warning")
        assert f.details["letters"] == 1 and f.details["recent"] == 1 and f.details["reasons"] == {"failed": 1}
        assert "--replay" in f.action
        report = store.maintain()
        assert codes(list(report.remaining)) == ["dead-letters"] and len(store.dead_letters()) == 1
        monkeypatch.setattr(_probes, "DEADLETTER_RECENT_S", 0.0)  # an hour later: no longer growing
        (f,) = store.health()
        assert (f.code, f.severity) == ("dead-letters", "info")
        store.replay_dead_letters()
        assert store.health() == []


def test_a_crashed_session_is_found_and_cleaned_up(
    store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    filemem.Store(store_path).close()
    ready = str(tmp_path / "ready")
    p = spawn_ctx.Process(target=crash_child, args=(store_path, ready, False))
    p.start()
    try:
        wait_log(ready)
        os.kill(p.pid or 0, signal.SIGKILL)
        p.join(30)
    finally:
        reap([p])
    dead = str(read_log(ready)[0][0])
    with filemem.Store(store_path) as store:
        (f,) = store.health()
        assert (f.code, f.severity, f.details["sessions"]) == ("dead-sessions", "warning", [dead])
        assert store.health() == [f]  # looking changes nothing
        report = store.maintain()
        assert report.counts["sessions_cleaned"] >= 1
        info = store.session_info(dead)
        assert info is not None and info.state == "crashed"
        assert store.health() == [] and store.check() == []


@pytest.mark.store_format(1)  # the child's update holds a shard lock; format 2 takes the log's append lock
def test_a_lock_held_long_is_found_with_its_holder(
    store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    filemem.Store(store_path).close()
    ready = str(tmp_path / "ready")
    p = spawn_ctx.Process(target=slow_update_child, args=(store_path, ready, 4.0))
    p.start()
    try:
        pid = int(wait_for(ready))
        with filemem.Store(store_path) as store:
            t0 = time.monotonic()
            (f,) = store.health(lock_probe_s=0.3)
            assert time.monotonic() - t0 < 3.0
            assert (f.code, f.severity) == ("lock-held-long", "warning")
            assert f.details["lock"].endswith(os.path.join("busy", "s.lock"))
            if os.path.exists("/proc/locks"):
                assert f.details["pids"] == [pid]
            assert store.health(lock_probe_s=0) == []  # the probe can be skipped
            report = store.maintain(lock_probe_s=0.3)
            assert codes(list(report.remaining)) == ["lock-held-long"]  # never acted on
        p.join(30)
        assert p.exitcode == 0
    finally:
        reap([p])
    with filemem.Store(store_path) as store:
        assert store.health() == [] and store.get("busy", "counter") == 1


def test_a_short_lock_is_not_a_finding(store_path: str) -> None:
    """A lock held for less than the probe window is what writers do all day: no finding."""
    with filemem.Store(store_path) as store:
        store.put("busy", "k", 0)
        done = threading.Event()

        def hold() -> None:
            store.update("busy", "k", lambda n: (time.sleep(0.1), n + 1)[1])
            done.set()

        t = threading.Thread(target=hold)
        t.start()
        try:
            time.sleep(0.02)
            assert store.health(lock_probe_s=1.0) == []
        finally:
            t.join(10)
        assert done.is_set()


def test_a_collector_backlog_then_its_dead_journal(
    store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    filemem.Store(store_path).close()
    ready = str(tmp_path / "ready")
    p = spawn_ctx.Process(target=journal_only_child, args=(store_path, 300, ready))
    p.start()
    try:
        wait_for(ready)
        with filemem.Store(store_path) as store:
            assert store.health() == []  # a young backlog is a collector at work
            monkeypatch.setattr(_probes, "BACKLOG_WARN_AGE_S", 0.0)
            (f,) = store.health()
            assert (f.code, f.details["records"]) == ("collector-backlog", 300)
            assert codes(list(store.maintain().remaining)) == ["collector-backlog"]
        os.kill(p.pid or 0, signal.SIGKILL)
        p.join(30)
    finally:
        reap([p])
    with filemem.Store(store_path, readonly=True) as ro:  # read-write opening would replay it at once
        (f,) = ro.health()
        assert (f.code, f.severity, f.details["records"]) == ("unreplayed-journal", "warning", 300)
        with pytest.raises(filemem.ReadOnlyError):
            ro.maintain()
        assert [s.outcome for s in ro.maintain(dry_run=True).steps] == ["planned"]
    store = filemem.Store.__new__(filemem.Store)  # open without the replay at open, as a live agent would have
    monkeypatch.setattr(filemem.Store, "_recover_journals", lambda self: None)
    store.__init__(store_path)  # type: ignore[misc]
    try:
        assert codes(store.health()) == ["unreplayed-journal"]
        report = store.maintain()
        assert (report.counts["journals_replayed"], report.counts["records_replayed"]) == (1, 300)
        assert len(store.keys("journal-only")) == 300
        assert store.health() == []
    finally:
        store.close()


def test_health_on_a_read_only_store_changes_nothing(store_path: str) -> None:
    with filemem.Store(store_path) as store, store.batch() as b:
        for i in range(30):
            b.put("ns", f"k{i}", i, ttl=0.1)
        b.put("ns", "keep", 1)
    time.sleep(0.2)
    before = _snapshot_files(store_path)
    with filemem.Store(store_path, readonly=True) as ro:
        assert codes(ro.health()) == ["expired-records"]
        report = ro.maintain(dry_run=True)
        assert report.dry_run and codes(list(report.remaining)) == ["expired-records"]
    assert _snapshot_files(store_path) == before


@pytest.mark.parametrize(
    "fmt", [pytest.param(1, marks=pytest.mark.store_format(1)), pytest.param(2, marks=pytest.mark.store_format(2))]
)
def test_a_busy_shard_is_skipped_not_waited_for(store_path: str, fmt: int) -> None:
    with filemem.Store(store_path, lock_timeout_s=30) as store:
        with store.batch() as b:
            for i in range(10):
                b.put("ns", f"k{i}", i, ttl=0.1)
        if fmt == 2:
            filemem.admin.fold(store)  # the records reach the shard (and its lock file) at the fold, not at the put
        time.sleep(0.2)
        lock = os.path.join(store_path, "ns", "ns", "s.lock")
        from filemem import _locks

        held = _locks.exclusive(lock, 5)
        try:
            t0 = time.monotonic()
            report = store.maintain(lock_probe_s=0)
            assert time.monotonic() - t0 < 2.0  # not the 30 s lock timeout
        finally:
            held.release()
        assert report.counts["busy_skipped"] == 1 and report.counts["expired_dropped"] == 0
        assert codes(list(report.remaining)) == ["expired-records"]
        assert store.maintain().counts["expired_dropped"] == 10


def test_a_spent_budget_stops_taking_steps(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        with store.batch() as b:
            for n in range(3):
                for i in range(5):
                    b.put(f"ns{n}", f"k{i}", i, ttl=0.05)
        time.sleep(0.1)
        report = store.maintain(budget_s=1e-9)
        assert report.out_of_budget
        assert {s.outcome for s in report.steps} == {"skipped"}
        assert codes(list(report.remaining)) == ["expired-records"]
        assert store.maintain().counts["expired_dropped"] == 15


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_s": 0}, "budget_s"),
        ({"budget_s": -1}, "budget_s"),
        ({"budget_s": float("nan")}, "budget_s"),
        ({"budget_s": True}, "budget_s"),
        ({"lock_probe_s": -0.1}, "lock_probe_s"),
        ({"dry_run": "yes"}, "dry_run"),
    ],
)
def test_bad_arguments_are_refused_before_anything_happens(
    store_path: str, kwargs: dict[str, Any], message: str
) -> None:
    with filemem.Store(store_path) as store:
        store.put("ns", "k", 1, ttl=0.01)
        time.sleep(0.05)
        before = _snapshot_files(store_path)
        with pytest.raises(filemem.InvalidValueError, match=message):
            store.maintain(**kwargs)
        assert _snapshot_files(store_path) == before
    with filemem.Store(store_path) as store, pytest.raises(filemem.InvalidValueError, match="lock_probe_s"):
        store.health(lock_probe_s=float("inf"))


def test_findings_and_reports_are_plain_data(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        store.put("ns", "k", 1, ttl=0.01)
        time.sleep(0.05)
        (f,) = store.health()
        d = f.as_dict()
        assert set(d) == {"code", "severity", "message", "action", "details"}
        with pytest.raises(AttributeError):
            f.code = "other"  # type: ignore[misc]
        r = store.maintain().as_dict()
        assert r["counts"]["expired_dropped"] == 1 and r["steps"][0]["outcome"] == "done"
        import json

        json.dumps(r)  # JSON as it is
    with pytest.raises(filemem.StoreClosedError):
        store.health()


def test_async_twins(store_path: str) -> None:
    import asyncio

    from filemem.aio import AsyncStore

    async def main() -> None:
        async with AsyncStore(store_path) as astore:
            await astore.put("ns", "k", 1, ttl=0.01)
            await asyncio.sleep(0.05)
            assert codes(await astore.health()) == ["expired-records"]
            report = await astore.maintain(dry_run=True)
            assert report.dry_run and report.steps[0].outcome == "planned"
            assert (await astore.maintain()).counts["expired_dropped"] == 1
            assert await astore.health() == []

    asyncio.run(main())
