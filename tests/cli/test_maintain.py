"""`filemem maintain` and the health findings of `filemem stats` (issue 15)."""

from __future__ import annotations

import json
import time

import filemem

from ._util import run, run_proc, tree_hash


def _expired_store(path: str) -> None:
    with filemem.Store(path) as store, store.batch() as b:
        for i in range(20):
            b.put("agent-1/events", f"e{i}", {"i": i}, ttl=0.05 if i % 2 else None)
    time.sleep(0.1)


def test_stats_shows_findings_with_their_action(store_path: str) -> None:
    _expired_store(store_path)
    r = run("stats", store_path)
    assert r.rc == 0, r.err
    assert "health: 1 finding(s)" in r.out
    assert "warning  expired-records: 10 expired record(s)" in r.out
    assert "-> sweep them: store.maintain()" in r.out
    got = json.loads(run("stats", store_path, "--json").out)
    (f,) = got["health"]
    assert (f["code"], f["severity"], f["details"]["expired"]) == ("expired-records", "warning", 10)


def test_stats_of_a_healthy_store_says_so(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        store.put("a", "k", 1)
    r = run("stats", store_path)
    assert r.rc == 0 and "health: nothing to do" in r.out
    assert json.loads(run("stats", store_path, "--json").out)["health"] == []


def test_dry_run_changes_nothing_and_exits_1_while_a_warning_stands(store_path: str) -> None:
    _expired_store(store_path)
    before = tree_hash(store_path)
    r = run("maintain", store_path, "--dry-run")
    assert r.rc == 1, r.err
    assert "planned  expired-records  agent-1/events  would drop 10 expired record(s)" in r.out
    assert "dry run in" in r.out
    assert tree_hash(store_path) == before
    got = json.loads(run("maintain", store_path, "--dry-run", "--json").out)
    assert got["dry_run"] is True and [s["outcome"] for s in got["steps"]] == ["planned"]


def test_maintain_does_the_work_then_exits_0(store_path: str) -> None:
    _expired_store(store_path)
    r = run_proc("maintain", store_path)  # a child: maintain lowers its own CPU priority
    assert r.rc == 0, r.err
    assert "done     expired-records  agent-1/events  1 shard(s): 10 expired record(s) dropped" in r.out
    assert "done in" in r.out and "expired dropped 10" in r.out
    r = run_proc("maintain", store_path, "--json")
    got = json.loads(r.out)
    assert r.rc == 0 and got["findings"] == [] and got["steps"] == [] and got["remaining"] == []
    with filemem.Store(store_path) as store:
        assert len(store.keys("agent-1/events")) == 10


def test_bad_budget_and_missing_store(store_path: str) -> None:
    _expired_store(store_path)
    before = tree_hash(store_path)
    for bad in ("0", "-1", "soon", "inf"):
        r = run("maintain", store_path, "--budget", bad)
        assert r.rc == 2 and "--budget" in r.err, (bad, r.err)
    assert tree_hash(store_path) == before
    r = run("maintain", store_path + "-missing", "--dry-run")
    assert r.rc == 3 and "no filemem store" in r.err
