"""`filemem sessions`, `stop` and `search`: what agents are doing and what they stored."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest

import filemem
from tests.cli._util import one_line_error, run, tree_hash
from tests.helpers import reap


def _hold_session(path: str, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    store = filemem.Store(path)
    session = store.session(agent="doomed", namespace="w2")  # kept: a dropped session ends at once
    ready.set()
    signal.pause()
    session.close()


def test_sessions_lists_live_and_crashed_sessions_and_stop_reaches_one(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    ctx = multiprocessing.get_context("spawn")
    with filemem.Store(path) as store:
        live = store.session(agent="worker-1", namespace="w1", priority=3)
        live.set_status("crawling", progress=0.25)
        ready = ctx.Event()
        child = ctx.Process(target=_hold_session, args=(path, ready))
        child.start()
        try:
            assert ready.wait(60)
            res = run("sessions", path, "--json")
            assert res.rc == 0, res.err
            rows = {r["agent"]: r for r in map(json.loads, res.out.splitlines())}
            assert set(rows) == {"worker-1", "doomed"}
            assert rows["worker-1"]["status"] == "crawling" and rows["worker-1"]["progress"] == 0.25
            assert rows["worker-1"]["namespace"] == ["w1"] and rows["worker-1"]["priority"] == 3
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
            child.join(30)
            # The crash is seen at once, by a read-only command.
            res = run("sessions", path, "--json")
            assert [json.loads(line)["agent"] for line in res.out.splitlines()] == ["worker-1"]
            table = run("sessions", path, "--all")
            assert table.rc == 0 and "doomed" in table.out and "crashed" in table.out
            assert "worker-1" in table.out and "25%" in table.out

            assert run("stop", path, live.id).rc == 0
            assert live.stop_requested
            gone = run("stop", path, "0" * 24)
            assert gone.rc == 1 and gone.err.startswith("filemem: no live session")
        finally:
            reap([child])
            live.close()
    ended = run("sessions", path, "--ended", "--json")
    assert {json.loads(line)["agent"] for line in ended.out.splitlines()} >= {"worker-1"}


def test_search_ranks_filters_and_refuses_bad_filters_without_writing(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with filemem.Store(path, durability="flush") as store:
        store.put("agent-1/ep", "a", {"task": "login timeout on checkout", "ok": False, "n": 1})
        store.put("agent-1/ep", "b", {"task": "search the catalogue", "ok": True, "n": 2})
        store.put("agent-1/ep", "c", {"task": "login again", "ok": True, "n": 3})
        store.put("agent-10/ep", "d", {"task": "login elsewhere", "ok": True, "n": 4})
        store.search("agent-1", "login")  # builds the index, so the read-only command has one to use
    before = tree_hash(path)

    res = run("search", path, "agent-1", "login timeout", "--json")
    assert res.rc == 0, res.err
    hits = [json.loads(line) for line in res.out.splitlines()]
    assert [h["key"] for h in hits] == ["a", "c"]  # agent-10 is not under agent-1: whole segments
    assert hits[0]["score"] > hits[1]["score"] > 0

    res = run("search", path, "", "--filter", '{"n": {"$gte": 2}, "ok": true}', "--json", "--limit", "2")
    # Filter only: every match scores 1.0, in (namespace, key) order, paged by --limit.
    assert [json.loads(line)["key"] for line in res.out.splitlines()] == ["b", "c"]
    table = run("search", path, "agent-1", "catalogue")
    assert table.rc == 0 and "catalogue" in table.out and "SCORE" in table.out

    for bad in ("{bad", '{"ok": {"$zz": 1}}'):
        res = run("search", path, "agent-1", "--filter", bad)
        assert res.rc == 2
        one_line_error(res)
    assert run("search", str(tmp_path / "missing"), "x").rc != 0
    assert tree_hash(path) == before


def test_deadletters_lists_and_replays_dropped_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.collector.test_collector import Stall

    path = str(tmp_path / "store")
    with filemem.Store(path) as store:
        stall = Stall(monkeypatch)
        with store.collector(max_queue=4, batch_size=1, batch_timeout=0, on_full="drop_oldest") as c:
            c.collect("stalled", "k0", 0)
            assert stall.entered.wait(10)
            for i in range(1, 8):
                c.collect("stalled", f"k{i}", {"i": i})
            stall.release()
            c.flush()
        monkeypatch.undo()
    before = tree_hash(path)
    listed = run("deadletters", path, "--json")
    assert listed.rc == 0, listed.err
    rows = [json.loads(line) for line in listed.out.splitlines()]
    assert len(rows) == 4 and {r["reason"] for r in rows} == {"dropped"}  # 8 collected, room for 4
    assert all(r["namespace"] == ["stalled"] for r in rows)
    table = run("deadletters", path)
    assert table.rc == 0 and "dropped" in table.out
    assert tree_hash(path) == before  # listing is read-only
    replayed = run("deadletters", path, "--replay", "--json")
    assert replayed.rc == 0 and json.loads(replayed.out) == {"applied": 4, "superseded": 0, "failed": 0}
    assert run("deadletters", path, "--json").out == ""
    with filemem.Store(path) as store:
        assert len(store.keys("stalled")) == 8
