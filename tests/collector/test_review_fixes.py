"""Regressions from the collector review: drops, dead letters, replay order, bookkeeping."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
from filemem._collector import _apply
from filemem._errors import LockTimeout, QueueFullError
from tests.collector.test_collector import Stall
from tests.helpers import apply_puts_via_apply

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def stall(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stall]:
    s = Stall(monkeypatch)
    yield s
    s.release()


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


# ---------------------------------------------------------------- 1: drop_oldest
_KILL_IN_DROP_WINDOW = r"""
import os, signal, sys, time
import filemem
from filemem._collector import _apply
from filemem._collector._applied import read_marker
from filemem._engine import Engine
from filemem._engine._core import puts_as_ops

root = sys.argv[1]
real_apply = Engine.apply
def slow_apply(engine, ops):
    time.sleep(0.02)  # a slowish disk: records wait in the ready queue
    return real_apply(engine, ops)
Engine.apply = slow_apply
Engine.apply_puts = lambda self, puts, extra=(): self.apply([*puts_as_ops(self.codec.name, puts), *extra])

def kill_before_letter(engine, jid, letters):
    seq = letters[0]["id"]
    # The apply thread keeps committing batches (with the marker) while the
    # letter is not written yet; the dropped id must not be retired meanwhile.
    for _ in range(30):
        applied, _ = read_marker(engine, jid)
        if seq in applied:
            break
        time.sleep(0.01)
    # The victim must be one the journal accepted (records 1..accepted are):
    # a record still queued in memory is lost by any crash (docs/collector.md).
    accepted = c.stats()["accepted"]
    print(seq, accepted, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
_apply.append_dead_letters = kill_before_letter

store = filemem.Store(root)
c = store.collector(max_queue=4, on_full="drop_oldest", batch_size=1, batch_timeout=0)
for i in range(1, 200):
    c.collect("ev", f"k{i}", i)
    # Wait until the journal accepted it, so the oldest queued record (the one
    # a drop takes) is always in the journal: on a loaded machine the journal
    # thread can lag, and a drop then takes a record not journaled yet.
    while c.stats()["accepted"] < i:
        time.sleep(0.0005)
    time.sleep(0.002)
"""


def test_drop_oldest_sigkill_before_the_letter_loses_nothing(store_path: str) -> None:
    filemem.Store(store_path).close()
    out = _run(_KILL_IN_DROP_WINDOW, store_path)
    assert out.returncode == -9, out.stderr
    victim, accepted = map(int, out.stdout.split()[:2])
    assert victim <= accepted, out.stdout  # the drop took a journaled record
    with filemem.Store(store_path) as store:  # replays the dead journal
        have = set(store.keys("ev")) | {d.key for d in store.dead_letters()}
    assert f"k{victim}" in have, "a dropped record whose letter never reached the disk is lost"


def test_drop_oldest_failed_letter_keeps_the_record_and_raises(
    store: filemem.Store, stall: Stall, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_a: Any, **_k: Any) -> str:
        raise LockTimeout("deadletter.lock busy")

    monkeypatch.setattr(_apply, "append_dead_letters", fail)
    with store.collector(max_queue=3, batch_size=1, batch_timeout=0, on_full="drop_oldest") as c:
        c.collect("stalled", "k0", 0)
        assert stall.entered.wait(10)  # k0 in flight
        for i in range(1, 3):
            c.collect("stalled", f"k{i}", i)
        with pytest.raises(QueueFullError, match="dead letter"):
            c.collect("stalled", "k3", 3)
        assert c.stats()["dropped"] == 0 and c.stats()["queue_depth"] == 3
        stall.release()
        c.flush()
    assert sorted(store.keys("stalled")) == ["k0", "k1", "k2"]
    assert store.dead_letters() == []


def test_flush_waits_for_a_drop_in_progress(
    store: filemem.Store, stall: Stall, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    writing = threading.Event()
    real = _apply.append_dead_letters

    def slow(*a: Any, **k: Any) -> str:
        writing.set()
        assert gate.wait(10)
        return real(*a, **k)

    monkeypatch.setattr(_apply, "append_dead_letters", slow)
    with store.collector(max_queue=2, batch_size=1, batch_timeout=0, on_full="drop_oldest") as c:
        c.collect("stalled", "k0", 0)
        assert stall.entered.wait(10)
        c.collect("stalled", "k1", 1)
        dropper = threading.Thread(target=c.collect, args=("stalled", "k2", 2))  # drops k1
        dropper.start()
        assert writing.wait(10)
        stall.release()
        flushed = threading.Event()
        t = threading.Thread(target=lambda: (c.flush(), flushed.set()))
        t.start()
        assert not flushed.wait(0.3), "flush returned before the dropped record's letter was durable"
        gate.set()
        dropper.join(10)
        t.join(10)
        assert flushed.is_set()
        assert c.stats()["dead_letters"] >= 1
    have = set(store.keys("stalled")) | {d.key for d in store.dead_letters()}
    assert have == {"k0", "k1", "k2"}


# ---------------------------------------------------------------- 2: a failed dead letter
def test_failed_dead_letter_keeps_the_writer_alive_and_retries(
    store: filemem.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filemem._engine import Engine
    from filemem._errors import InvalidValueError

    real_apply = Engine.apply

    def apply(engine: Engine, ops: list[Any]) -> list[Any]:
        if any(op.key == "bad" for op in ops):
            raise InvalidValueError("refused")
        return real_apply(engine, ops)

    monkeypatch.setattr(Engine, "apply", apply)
    monkeypatch.setattr(Engine, "apply_puts", apply_puts_via_apply)
    real_letter = _apply.append_dead_letters
    fails = [3]

    def letter(*a: Any, **k: Any) -> str:
        if fails[0] > 0:
            fails[0] -= 1
            raise LockTimeout("deadletter.lock busy")
        return real_letter(*a, **k)

    monkeypatch.setattr(_apply, "append_dead_letters", letter)
    with store.collector(max_queue=5, batch_size=5, batch_timeout=0, backoff_base=0.001, backoff_max=0.01) as c:
        c.collect("ev", "bad", 1)
        done = threading.Event()

        def producer() -> None:
            for i in range(10):
                c.collect("ev", f"k{i}", i)
            done.set()

        t = threading.Thread(target=producer, daemon=True)
        t.start()
        t.join(10)
        assert done.is_set(), "collect() blocked: the writer died on a failed dead letter"
        c.flush(10)
        assert c.health()["writer_alive"]
    assert [d.key for d in store.dead_letters()] == ["bad"]
    assert len(store.keys("ev")) == 10


def test_collect_and_flush_raise_once_the_writer_died(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("writer bug")

    monkeypatch.setattr(_apply.ApplyLoop, "_commit", boom)
    from filemem._errors import StoreClosedError

    c = store.collector(max_queue=2, batch_size=1, batch_timeout=0)
    try:
        c.collect("ev", "k0", 0)
        deadline = time.monotonic() + 10
        while c.health()["writer_alive"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not c.health()["writer_alive"]
        outcome: list[BaseException] = []

        def producer() -> None:
            try:
                for i in range(5):
                    c.collect("ev", f"k{i}", i)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=producer, daemon=True)
        t.start()
        t.join(5)
        assert not t.is_alive(), "collect() blocked for ever behind a dead writer"
        assert outcome and isinstance(outcome[0], StoreClosedError)
        with pytest.raises(StoreClosedError):
            c.flush(5)
    finally:
        c.close(1)


# ---------------------------------------------------------------- 3: two dead journals, one key
_DIE_WITH_ONE_ACCEPTED = r"""
import os, signal, sys, time
import filemem

root, value, gate = sys.argv[1:4]
store = filemem.Store(root)
c = store.collector(batch_timeout=0)
store._engine.apply = lambda ops: time.sleep(3600)  # the apply stalls: the record stays journaled only
store._engine.apply_puts = lambda puts, extra=(): time.sleep(3600)
print(c.jid, flush=True)
while not os.path.exists(gate):
    time.sleep(0.001)
c.collect("cfg", "mode", value)
while c.stats()["accepted"] < 1:
    time.sleep(0.001)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_two_dead_journals_of_one_key_replay_the_newest(store_path: str) -> None:
    filemem.Store(store_path).close()
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = []
    for i in range(2):
        gate = os.path.join(os.path.dirname(store_path), f"gate{i}")
        p = subprocess.Popen(
            [sys.executable, "-c", _DIE_WITH_ONE_ACCEPTED, store_path, f"v{i}", gate],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None
        procs.append((p.stdout.readline().strip(), p, gate))
    # The journal replayed first (jid order) gets the older record: the newer must still win.
    procs.sort(key=lambda x: x[0])
    for i, (_, p, gate) in enumerate(procs):
        with open(gate, "w") as fh:
            fh.write(str(i))
        assert p.wait(30) == -9
        assert p.stdout is not None
        p.stdout.close()
        time.sleep(0.02)
    with filemem.Store(store_path) as store:  # replays both journals
        got = store.get("cfg", "mode")
    assert got == _value_of(procs[1][1]), "the older of two dead journals' records won"


def _value_of(p: subprocess.Popen[str]) -> str:
    args = p.args
    assert isinstance(args, list)
    return str(args[4])


# ---------------------------------------------------------------- 4: torn dead-letter lines
def _torn_file(store: filemem.Store) -> str:
    from filemem._collector._deadletter import append_dead_letters, letter

    eng = store._engine
    one = letter("jdead-1", 1, ("ev",), "a", "json", b"1", 1, 1.0, "dropped", "")
    path = append_dead_letters(eng, "jdead-1", [one])
    with open(path, "r+b") as fh:  # what a write cut short leaves: half a line, no newline
        data = fh.read()
        fh.seek(0)
        fh.truncate()
        fh.write(data[: len(data) // 2])
    return path


def test_append_after_a_torn_dead_letter_line_stays_readable(store: filemem.Store) -> None:
    from filemem._collector._deadletter import append_dead_letters, letter

    path = _torn_file(store)
    two = letter("jdead-1", 2, ("ev",), "b", "json", b"2", 1, 2.0, "failed", "refused")
    append_dead_letters(store._engine, "jdead-1", [two])
    assert [d.key for d in store.dead_letters()] == ["b"]
    assert store.replay_dead_letters() == {"applied": 1, "superseded": 0, "failed": 1}
    assert store.get("ev", "b") == 2
    # The torn line is kept (and reported), not deleted with the file.
    with open(path, "rb") as fh:
        assert fh.read().count(b"\n") == 1


def test_letter_glued_onto_a_torn_line_is_salvaged(store: filemem.Store) -> None:
    import json

    from filemem._collector._deadletter import letter

    path = _torn_file(store)
    two = letter("jdead-1", 2, ("ev",), "b", "json", b"2", 1, 2.0, "failed", "refused")
    with open(path, "ab") as fh:  # an append made before torn lines were ended
        fh.write(json.dumps(two).replace(", ", ",").replace(": ", ":").encode() + b"\n")
    assert [d.key for d in store.dead_letters()] == ["b"]
    assert store.replay_dead_letters()["applied"] == 1
    assert os.path.exists(path)
    assert store.dead_letters() == []


# ---------------------------------------------------------------- 5: closed collectors are forgotten
def test_store_forgets_closed_collectors(store: filemem.Store) -> None:
    for _ in range(5):
        with store.collector(journal=False) as c:
            c.collect("ev", "k", 1)
    live = store.collector(journal=False)
    assert store.__dict__["_collectors"] == [live]
    live.close()


# ---------------------------------------------------------------- 6: close / fork
def test_close_dead_letters_what_a_dead_journal_thread_held(
    store: filemem.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filemem._collector import _journal

    entered = threading.Event()
    gate = threading.Event()

    def broken(*_a: Any, **_k: Any) -> None:
        entered.set()
        assert gate.wait(10)
        raise RuntimeError("journal thread bug")

    # The journal thread dies on an unexpected error while it holds a group (the frames are
    # made by collect() itself, so the group's write is where the thread can break).
    monkeypatch.setattr(_journal.JournalFile, "append", broken)
    c = store.collector()
    c.collect("ev", "k0", 0)
    assert entered.wait(10)  # the journal thread holds k0
    c.collect("ev", "k1", 1)  # waits in incoming
    gate.set()
    deadline = time.monotonic() + 10
    while c.health()["writer_alive"] and time.monotonic() < deadline:
        time.sleep(0.01)
    c.close(1)
    letters = store.dead_letters()
    assert sorted(d.key for d in letters) == ["k0", "k1"]
    assert all(d.reason == "unfinished" for d in letters)


def test_stats_in_a_forked_child_never_block(store: filemem.Store) -> None:
    import signal

    c = store.collector()
    try:
        with c._lock, c.breaker._lock:  # a parent thread holds both at fork time
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                signal.alarm(5)  # a deadlock dies of SIGALRM
                try:
                    h = c.health()
                    s = c.stats()
                    os._exit(0 if not h["writer_alive"] and not h["ok"] and s["queue_depth"] == 0 else 3)
                except BaseException:
                    os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        c.close()


# ---------------------------------------------------------------- 7: a batch that raised after it committed
def test_batch_that_raised_after_its_commit_is_not_applied_again(
    store: filemem.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filemem._engine import Engine
    from filemem._errors import StorageError

    real = Engine.apply
    calls: list[int] = []

    def apply(engine: Engine, ops: list[Any]) -> list[Any]:
        out = real(engine, ops)
        if any(op.namespace == ("ev",) for op in ops):
            calls.append(1)
            if len(calls) == 1:
                raise StorageError("fsync_dir failed after the commit point")
        return out

    monkeypatch.setattr(Engine, "apply", apply)
    monkeypatch.setattr(Engine, "apply_puts", apply_puts_via_apply)
    with store.collector(batch_timeout=0, backoff_base=0.001) as c:
        c.collect("ev", "k", 1)
        c.flush(10)
        assert c.stats()["applied"] == 1
    assert len(calls) == 1, "the committed batch was applied again"
    assert [it.version for it in store.items("ev")] == [1]
