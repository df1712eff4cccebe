"""Collectors killed with SIGKILL: every accepted record ends in the store exactly once.

"Exactly once" is checked through versions: a record's version changes on
every write of it, so a record that replay applied a second time would show a
new version. The parent notes, with a read-only store (which never replays),
the version of every record the dead collectors had applied, lets a
read-write open replay their journals, and then checks that those versions
did not move and that every accepted record is there.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

import filemem
from tests.collector import _children as ch
from tests.concurrency._workers import read_acks, read_result
from tests.helpers import reap

PROCS = 8
COUNT = 10_000


def _versions(path: str, proc: int) -> dict[str, int]:
    with filemem.Store(path, readonly=True) as ro:
        return {it.key: it.version for it in ro.items(("proc", str(proc)))}


def test_eight_collectors_some_sigkilled_lose_nothing_accepted(store_path: str, spawn_ctx: Any) -> None:
    tmp = os.path.dirname(store_path)
    filemem.Store(store_path).close()
    ack_path = os.path.join(tmp, "acks.log")
    procs = []
    victims = {1, 4, 6}
    rng = random.Random(5)
    # Where each victim is killed (once it has accepted that many); from there it slows down, so the
    # kill lands mid-stream however fast the collector is (else it may flush and retire its journal first).
    wants = {i: rng.randint(1000, 7000) for i in sorted(victims)}
    for i in range(PROCS):
        ready = os.path.join(tmp, f"ready-{i}")
        p = spawn_ctx.Process(
            target=ch.collect_child,
            args=(store_path, i, COUNT, ack_path, ready, {"batch_size": 1000}, wants.get(i, 0)),
        )
        p.start()
        procs.append((p, ready))
    try:
        deadline = time.monotonic() + 60
        # Every child has opened the store (and replayed what it found)
        # before the first kill, so the victims' journals wait for us.
        while not all(os.path.exists(r) for _, r in procs) and time.monotonic() < deadline:
            time.sleep(0.01)
        # Kill each victim at a random point after it has accepted something.
        for i in sorted(victims):
            want = wants[i]
            while time.monotonic() < deadline:
                got = [a[2] for a in read_acks(ack_path) if a[0] == "accepted" and a[1] == i]
                done = any(a[0] == "flushed" and a[1] == i for a in read_acks(ack_path))
                if done or (got and max(got) >= want):
                    break
                time.sleep(0.005)
            os.kill(procs[i][0].pid, signal.SIGKILL)
        reap([p for p, _ in procs], timeout=90)
    finally:
        reap([p for p, _ in procs], timeout=1)
    acks = read_acks(ack_path)
    flushed = {a[1] for a in acks if a[0] == "flushed"}
    assert flushed >= set(range(PROCS)) - victims
    before = {i: _versions(store_path, i) for i in victims}
    assert any(os.listdir(os.path.join(store_path, "journals"))), "killed collectors left no journal"

    with filemem.Store(store_path) as store:  # opening replays the dead journals
        for i in range(PROCS):
            items = {it.key: it for it in store.items(("proc", str(i)))}
            if i in flushed:
                assert len(items) == COUNT
            accepted = max([a[2] for a in acks if a[0] == "accepted" and a[1] == i] or [0])
            for n in range(1, accepted + 1):
                it = items.get(ch.record_key(i, n))
                assert it is not None, f"accepted record {n} of process {i} lost"
                assert it.value == {"proc": i, "n": n}
            if i in victims:
                for key, version in before[i].items():
                    assert items[key].version == version, f"{key} was applied again by replay"
                # Replay brought something back that the dead one had not applied.
                assert len(items) >= len(before[i])
        # A SIGKILLed writer may leave an engine temp file: the checker's to clean.
        left = store.check(fix=True)
        assert {f.code for f in left} <= {"temp-file", "unfinished-batch", "torn-batch"}, left
        assert [n for n in os.listdir(os.path.join(store_path, "journals")) if n.endswith(".journal")] == []
        assert store.list_namespaces() == sorted(("proc", str(i)) for i in range(PROCS))
        assert store.check() == []


def _internal_shard_written(store_path: str) -> bool:
    """Format 1: the replayer's first chunk (records + marker) committed once a marker shard file exists."""
    internal = os.path.join(store_path, "internal", "collector")
    return os.path.isdir(internal) and any(
        n.endswith(".shard") for d in os.listdir(internal) for n in os.listdir(os.path.join(internal, d))
    )


@pytest.mark.store_format(1)
def test_replay_killed_midway_is_continued_exactly_once(store_path: str, spawn_ctx: Any) -> None:
    _replay_killed_midway(store_path, spawn_ctx, lambda: _internal_shard_written(store_path))


@pytest.mark.store_format(2)
def test_replay_killed_midway_is_continued_exactly_once_v2(store_path: str, spawn_ctx: Any) -> None:
    """Format 2: a chunk commits as one log frame, its shard files come at the fold: the replayer says when."""
    flag = os.path.join(os.path.dirname(store_path), "chunk-committed")
    _replay_killed_midway(
        store_path, spawn_ctx, lambda: os.path.exists(flag), (ch.replay_one_chunk_child, (store_path, flag))
    )


def _replay_killed_midway(
    store_path: str,
    spawn_ctx: Any,
    committed: Callable[[], bool],
    replay: tuple[Callable[..., None], tuple[Any, ...]] | None = None,
) -> None:
    tmp = os.path.dirname(store_path)
    filemem.Store(store_path).close()
    count = 4000
    ready = os.path.join(tmp, "ready")
    owner = spawn_ctx.Process(target=ch.journal_only_child, args=(store_path, count, ready))
    owner.start()
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.path.exists(ready)
        os.kill(owner.pid, signal.SIGKILL)
    finally:
        reap([owner], timeout=10)
    with filemem.Store(store_path, readonly=True) as ro:
        assert ro.keys("journal-only") == []
        codes = {f.code for f in ro.check()}
    assert "unreplayed-journal" in codes

    # A replayer killed as soon as its first chunk (records + marker) committed.
    internal = os.path.join(store_path, "internal", "collector")
    target, args = replay or (ch.open_store_child, (store_path,))
    replayer = spawn_ctx.Process(target=target, args=args)
    replayer.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and replayer.is_alive():
            if committed():
                os.kill(replayer.pid, signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        reap([replayer], timeout=10)
    with filemem.Store(store_path, readonly=True) as ro:
        before = {it.key: it.version for it in ro.items("journal-only")}
    assert 0 < len(before) < count, f"the replayer was not caught mid-way ({len(before)} of {count} applied)"

    with filemem.Store(store_path) as store:
        items = {it.key: it for it in store.items("journal-only")}
        assert len(items) == count
        for key, version in before.items():
            assert items[key].version == version, f"{key} applied twice"
        assert all(items[f"k{n}"].value == {"n": n} for n in range(1, count + 1))
        # The killed replayer may have left a temp file of its next chunk: garbage that fix removes.
        left = store.check(fix=True)
        assert {f.code for f in left} <= {"temp-file", "unfinished-batch", "torn-batch"}, left
        assert store.check() == []
        assert not os.path.isdir(internal) or not os.listdir(internal)


def test_failing_store_in_a_child_trips_breaker_and_recovers(store_path: str, spawn_ctx: Any) -> None:
    tmp = os.path.dirname(store_path)
    filemem.Store(store_path).close()
    result = os.path.join(tmp, "result.json")
    p = spawn_ctx.Process(target=ch.failing_store_child, args=(store_path, 600, 0.8, result))
    p.start()
    reap([p], timeout=60)
    assert p.exitcode == 0
    got = read_result(result)
    stats = got["stats"]
    assert stats["breaker_opened"] >= 1
    assert "open" in got["states"] or "half-open" in got["states"]
    assert stats["failed"] > 0 and stats["retried"] > 0
    assert stats["applied"] == 600 and stats["dead_letters"] == 0 and stats["breaker"] == "closed"
    with filemem.Store(store_path) as store:
        assert store.keys("flaky") == sorted(f"k{n}" for n in range(1, 601))
        assert store.check() == []
