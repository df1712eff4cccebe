"""A writer SIGKILLed at a chosen point inside a put (a fault point in a spawned child), then recovery.

The two points issue 13 suspected: between the frame's ``fdatasync`` and the
control page counting it as synced (the frame is durable and whole, so it must
survive, though its put never returned), and between writing the frame and
the page counting it as appended (the frame was never published: the next
append may take its place, and no version may repeat). Each is tried with the
store reopened by a fresh opener (the page is re-derived from a scan) and
with another handle open throughout (no re-derive: the next write publishes).
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

import filemem
from filemem._engine import _log as engine_log
from tests.helpers import reap
from tests.wal import _workers as w

NS = w.NS


def _kill_child_at(store_path: str, spawn_ctx: Any, point: str, value: Any, *, behind: bool = False) -> None:
    here, there = spawn_ctx.Pipe()
    p = spawn_ctx.Process(target=w.killed_at, args=(store_path, point, value, there, behind))
    p.start()
    try:
        assert here.poll(120), "the child never armed its fault point"
        assert here.recv() == "armed"
        p.join(120)
        assert p.exitcode == -signal.SIGKILL
    finally:
        reap([p])


@pytest.mark.parametrize("live", [False, True], ids=["reopened", "live-handle"])
def test_killed_after_its_sync_the_frame_survives(store_path: str, spawn_ctx: Any, live: bool) -> None:
    """fdatasync returned, the page was not updated: the record is there after recovery, versions stay unique."""
    filemem.Store(store_path).close()
    other = filemem.Store(store_path) if live else None
    try:
        _kill_child_at(store_path, spawn_ctx, "after-sync", {"v": 1})
        with filemem.Store(store_path) as s:
            s.put(NS, "next", 2)  # publishes an end past the dead writer's frame
            assert s.get(NS, "killed") == {"v": 1}
            versions = [s.get_item(NS, k).version for k in ("before", "killed", "next")]  # type: ignore[union-attr]
            assert versions == sorted(set(versions)), versions
            if other is not None:
                assert other.get(NS, "killed") == {"v": 1}
                assert other.get(NS, "next") == 2
            assert s.check() == []
    finally:
        if other is not None:
            other.close()
    with filemem.Store(store_path) as s:
        assert s.get(NS, "killed") == {"v": 1}
        assert s.get(NS, "next") == 2
        assert s.check() == []


@pytest.mark.parametrize("live", [False, True], ids=["reopened", "live-handle"])
def test_killed_before_publishing_its_frame_nothing_else_is_lost(store_path: str, spawn_ctx: Any, live: bool) -> None:
    """The frame was written but never published: whatever becomes of it, later writes stay and versions grow."""
    filemem.Store(store_path).close()
    other = filemem.Store(store_path) if live else None
    try:
        _kill_child_at(store_path, spawn_ctx, "after-write", {"v": 1})
        with filemem.Store(store_path) as s:
            s.put(NS, "next", 2)
            seen = s.get(NS, "killed")
            assert seen in (None, {"v": 1})  # never acknowledged: either, but whole
            before = s.get_item(NS, "before")
            nxt = s.get_item(NS, "next")
            assert before is not None and nxt is not None and nxt.version > before.version
            if seen is not None:
                killed = s.get_item(NS, "killed")
                assert killed is not None and before.version < killed.version != nxt.version
            if other is not None:
                assert other.get(NS, "next") == 2
                assert other.get(NS, "killed") == seen
            # The unpublished frame's leftover bytes past the next frame read as a torn tail: info, repaired by fix.
            assert all(f.severity == "info" for f in s.check()), s.check()
            s.check(fix=True)
            assert s.check() == []
    finally:
        if other is not None:
            other.close()
    with filemem.Store(store_path) as s:
        assert s.get(NS, "next") == 2
        assert s.get(NS, "before") == 1
        assert s.check() == []


@pytest.mark.parametrize("live", [False, True], ids=["reopened", "live-handle"])
def test_killed_inside_the_page_update_no_version_is_handed_out_twice(
    store_path: str, spawn_ctx: Any, live: bool
) -> None:
    """A writer dies between the page's ``appended`` and ``last_lsn`` words: the next writer's versions stay unique."""
    filemem.Store(store_path).close()
    other = filemem.Store(store_path) if live else None
    try:
        _kill_child_at(store_path, spawn_ctx, "mid-page", {"v": 1})
        writer = other if other is not None else filemem.Store(store_path)
        try:
            writer.put(NS, "next", 2)
            items = {k: writer.get_item(NS, k) for k in ("before", "killed", "next")}
            versions = [i.version for i in items.values() if i is not None]
            assert len(versions) == len(set(versions)), items
            assert items["killed"] is None or items["killed"].value == {"v": 1}
            assert writer.get(NS, "next") == 2
        finally:
            if other is None:
                writer.close()
    finally:
        if other is not None:
            other.close()
    with filemem.Store(store_path) as s:
        items = {k: s.get_item(NS, k) for k in ("before", "killed", "next")}
        versions = [i.version for i in items.values() if i is not None]
        assert len(versions) == len(set(versions)), items
        assert s.get(NS, "next") == 2
        s.check(fix=True)
        assert s.check() == []


@pytest.mark.parametrize("point", ["before-sync", "after-sync"])
def test_a_dead_writers_unsynced_frame_never_fools_a_conditional_write(
    store_path: str, spawn_ctx: Any, point: str
) -> None:
    """Issue 13: a writer dies after appending, before publishing its frame as synced; another handle stays open.

    A conditional write decides against the log's end (pending frames
    included) while reads stop at the synced end. With nobody left to publish
    the dead writer's frame, the conditional write kept failing against a
    version no strict read ever returned. Now: whatever a conditional write was
    told, a read after it returns the same version, and a retry against that
    version succeeds.
    """
    with filemem.Store(store_path) as s:
        s.put(NS, "killed", {"v": 0})
        _kill_child_at(store_path, spawn_ctx, point, {"v": 1})
        seen = s.get_item(NS, "killed")
        assert seen is not None
        try:
            s.put(NS, "killed", {"v": 2}, if_version=seen.version)
        except filemem.ConflictError as exc:
            after = s.get_item(NS, "killed")
            assert after is not None and after.version == exc.current_version, (seen, after, exc)
            assert after.value == {"v": 1}  # the dead writer's whole frame, now published
            with filemem.Store(store_path) as fresh:  # another handle agrees
                again = fresh.get_item(NS, "killed")
                assert again is not None and again.version == after.version
            s.put(NS, "killed", {"v": 2}, if_version=after.version)
        assert s.get(NS, "killed") == {"v": 2}
        assert s.check() == []
    with filemem.Store(store_path) as s:
        assert s.get(NS, "killed") == {"v": 2}
        assert s.check() == []


@pytest.mark.parametrize("point", ["after-write", "mid-page", "before-sync", "after-sync"])
def test_a_blind_writer_killed_inside_its_put(
    store_path: str, spawn_ctx: Any, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead writer was behind the log's end, so its put was blind: logged without reading the log's tail.

    Its frame carries ``created_at`` over from the key's unfolded record (the
    chain rule). Whatever becomes of the frame, the next writer (blind too:
    it is behind) publishes past it, versions stay unique, a frame that
    survives keeps the first record's ``created_at`` for every reader, and a
    synced one survives. This process never folds on its own (the first
    record stays in the log, so the chain runs through it).
    """
    monkeypatch.setattr(engine_log.LogGlue, "_poke_folder", lambda _self, *, now: None)
    with filemem.Store(store_path) as s:
        s.put(NS, "killed", {"v": 0})
        first = s.get_item(NS, "killed")
        assert first is not None
        _kill_child_at(store_path, spawn_ctx, point, {"v": 1}, behind=True)
        s.put(NS, "next", 2)
        items = {k: s.get_item(NS, k) for k in ("before", "killed", "next")}
        versions = [i.version for i in items.values() if i is not None]
        assert len(versions) == 3 and len(set(versions)) == 3, items
        killed = items["killed"]
        assert killed is not None and killed.value in ({"v": 0}, {"v": 1}), items
        if point == "after-sync":
            assert killed.value == {"v": 1}  # durable before the kill: must survive
        assert killed.created_at == first.created_at, (first, killed)
        with filemem.Store(store_path, readonly=True) as fresh:
            assert {k: fresh.get_item(NS, k) for k in items} == items
        assert all(f.severity == "info" for f in s.check()), s.check()
        s.check(fix=True)
        assert s.check() == []
    with filemem.Store(store_path) as s:
        assert {k: s.get_item(NS, k) for k in items} == items
        assert s.check() == []
