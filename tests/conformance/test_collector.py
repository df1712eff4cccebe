"""The collector on every backend (issue 16): records land, dead letters replay, SIGKILLed collectors lose nothing.

On a server store the journal stays a local file (``FILEMEM_JOURNAL_DIR``,
here a per-test directory) and the applied-id marker is a row written in the
same transaction as the records it names: "exactly once" is checked, as on
files, through versions (a record applied a second time would have a new one).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import filemem
from filemem import Store
from tests.collector import _children as ch
from tests.concurrency._workers import read_acks
from tests.conformance import _collector_children as cch
from tests.helpers import apply_puts_via_apply, reap


@pytest.fixture(autouse=True)
def _journal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Server stores journal under here (spawned children inherit it), never under the user's state directory.
    monkeypatch.setenv("FILEMEM_JOURNAL_DIR", str(tmp_path / "journals-root"))


def _journals_in(store: Store) -> list[str]:
    directory = os.path.join(store._backend.collector_engine.root, "journals")
    return sorted(n for n in os.listdir(directory) if n.endswith(".journal")) if os.path.isdir(directory) else []


def _journals(location: str) -> list[str]:
    with Store(location, readonly=True) as ro:
        return _journals_in(ro)


@pytest.fixture
def made(location: str) -> Iterator[str]:
    Store(location).close()
    yield location


def test_collect_flush_close(any_store: Store) -> None:
    with any_store.collector(batch_size=50) as c:
        for n in range(300):
            c.collect(("ev", str(n % 3)), f"k{n}", {"n": n})
        c.flush()
        assert c.stats()["applied"] == 300
    assert sum(len(any_store.keys(("ev", str(i)))) for i in range(3)) == 300
    assert any_store.get(("ev", "2"), "k299") == {"n": 299}
    assert _journals_in(any_store) == []
    assert any_store.check() == []
    assert any_store.list_namespaces() == [("ev", "0"), ("ev", "1"), ("ev", "2")]  # markers never listed


def test_refused_records_go_to_dead_letters_and_replay(any_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = any_store._backend.collector_engine
    real = engine.apply
    refuse = [True]

    def picky(ops: list[Any]) -> list[Any]:
        if refuse[0] and any(op.key == "bad" for op in ops):
            raise filemem.InvalidValueError("injected: refused")
        return real(ops)

    monkeypatch.setattr(engine, "apply", picky)
    if hasattr(engine, "apply_puts"):
        # The file engine takes the collector's batches through the tuple entry
        # point: route them to the patched apply.
        monkeypatch.setattr(engine, "apply_puts", lambda puts, extra=(): apply_puts_via_apply(engine, puts, extra))
    with any_store.collector(batch_size=10, backoff_base=0.001, backoff_max=0.01) as c:
        c.collect("dl", "good", 1)
        c.collect("dl", "bad", 2)
        c.flush()
    assert any_store.get("dl", "good") == 1 and any_store.get("dl", "bad") is None
    letters = any_store.dead_letters()
    assert [(d.namespace, d.key) for d in letters] == [(("dl",), "bad")]
    refuse[0] = False
    assert any_store.replay_dead_letters() == {"applied": 1, "superseded": 0, "failed": 0}
    assert any_store.get("dl", "bad") == 2 and any_store.dead_letters() == []


PROCS = 4
COUNT = 3000


def test_sigkilled_collectors_lose_nothing_and_replay_exactly_once(made: str, tmp_path: Path, spawn_ctx: Any) -> None:
    location = made
    ack_path = str(tmp_path / "acks.log")
    procs = []
    for i in range(PROCS):
        ready = str(tmp_path / f"ready-{i}")
        p = spawn_ctx.Process(target=ch.collect_child, args=(location, i, COUNT, ack_path, ready, {"batch_size": 300}))
        p.start()
        procs.append((p, ready))
    victims = {1, 3}
    rng = random.Random(3)
    try:
        deadline = time.monotonic() + 90
        while not all(os.path.exists(r) for _, r in procs) and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in sorted(victims):
            want = rng.randint(200, 1000)  # early: a victim that flushed all before its kill tests no replay
            while time.monotonic() < deadline:
                acks = read_acks(ack_path)
                got = [a[2] for a in acks if a[0] == "accepted" and a[1] == i]
                if any(a[0] == "flushed" and a[1] == i for a in acks) or (got and max(got) >= want):
                    break
                time.sleep(0.005)
            os.kill(procs[i][0].pid, signal.SIGKILL)
        reap([p for p, _ in procs], timeout=120)
    finally:
        reap([p for p, _ in procs], timeout=1)
    acks = read_acks(ack_path)
    flushed = {a[1] for a in acks if a[0] == "flushed"}
    assert flushed >= set(range(PROCS)) - victims
    with Store(location, readonly=True) as ro:  # read-only: never replays
        before = {i: {it.key: it.version for it in ro.items(("proc", str(i)))} for i in victims}
    if victims - flushed:  # on a loaded machine a victim may have flushed everything before its kill
        assert _journals(location), "killed collectors left no journal"

    with Store(location) as store:  # opening replays the dead journals
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
        left = store.check(fix=True)
        assert {f.code for f in left} <= {"temp-file", "unfinished-batch", "torn-batch"}, left
        assert store.list_namespaces() == sorted(("proc", str(i)) for i in range(PROCS))
        assert store.check() == []
    assert _journals(location) == []


def test_a_replay_killed_midway_is_continued_exactly_once(made: str, tmp_path: Path, spawn_ctx: Any) -> None:
    location = made
    count = 3000
    ready = str(tmp_path / "ready")
    owner = spawn_ctx.Process(target=cch.journal_only_child, args=(location, count, ready))
    owner.start()
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.path.exists(ready)
        os.kill(owner.pid, signal.SIGKILL)
    finally:
        reap([owner], timeout=10)
    with Store(location, readonly=True) as ro:
        assert ro.keys("journal-only") == []
        assert "unreplayed-journal" in {f.code for f in ro.check()}

    # A replayer killed right after its first chunk (records + marker) committed.
    flag = str(tmp_path / "chunk-committed")
    replayer = spawn_ctx.Process(target=ch.replay_one_chunk_child, args=(location, flag))
    replayer.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and replayer.is_alive():
            if os.path.exists(flag):
                os.kill(replayer.pid, signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        reap([replayer], timeout=10)
    with Store(location, readonly=True) as ro:
        before = {it.key: it.version for it in ro.items("journal-only")}
    assert 0 < len(before) < count, f"the replayer was not caught mid-way ({len(before)} of {count} applied)"

    with Store(location) as store:
        items = {it.key: it for it in store.items("journal-only")}
        assert len(items) == count
        for key, version in before.items():
            assert items[key].version == version, f"{key} applied twice"
        assert all(items[f"k{n}"].value == {"n": n} for n in range(1, count + 1))
        left = store.check(fix=True)
        assert {f.code for f in left} <= {"temp-file", "unfinished-batch", "torn-batch"}, left
        assert store.check() == []
        journaled = store._backend.collector_engine
        assert journaled is store._engine or journaled.all_marker_ids() == []  # each retire dropped its marker
    assert _journals(location) == []
