"""What a format-2 put waits for, and what it does under the append lock.

A put reads other writers' frames before it takes the append lock, takes it
once (the publish of its sync holds only the page lock), does not wake the
fold thread each time, encodes its value once and decodes nobody else's.
The append lock is polled (try, sleep, try again): a helper thread blocked
in ``flock`` on the writer's behalf was tried and measured slower once the
publish left the append lock.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from typing import Any

import pytest

import filemem
from filemem._errors import LockTimeout
from filemem._wal import _platform
from filemem._wal._log import APPEND_LOCK, WAL_DIR


def _hold_append_lock(root: str, ready: mp.synchronize.Event, release: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    fd = os.open(os.path.join(root, WAL_DIR, APPEND_LOCK), os.O_RDWR)
    _platform.lock(fd, exclusive=True, blocking=True)
    ready.set()
    release.wait(60)
    _platform.unlock(fd)
    os.close(fd)


@pytest.mark.store_format(2)
def test_a_put_behind_another_processes_append_lock(store_path: str) -> None:
    """Across real processes: a put times out with nothing written, then waits and succeeds when the lock frees."""
    ctx = mp.get_context("spawn")
    with filemem.Store(store_path, lock_timeout_s=0.3) as s:
        s.put(("w",), "before", 1)
        ready, release = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_hold_append_lock, args=(store_path, ready, release))
        child.start()
        try:
            assert ready.wait(60)
            with pytest.raises(LockTimeout):
                s.put(("w",), "timed-out", 1)
            threading.Timer(0.1, release.set).start()
            # A second handle with a longer timeout waits for the same lock and gets it.
            with filemem.Store(store_path, lock_timeout_s=30) as patient:
                assert patient.put(("w",), "waited", 2) > 0
            assert s.put(("w",), "after", 3) > 0
        finally:
            release.set()
            child.join(30)
        assert s.get(("w",), "timed-out") is None
        assert s.get(("w",), "waited") == 2
        assert s.get(("w",), "after") == 3


@pytest.mark.store_format(2)
def test_puts_do_not_wake_the_fold_thread_each_time(store_path: str) -> None:
    """The fold timer moves later on each write without waking its thread (a thread switch per put, before).

    The thread is woken when it has no due time, or to fold at once; a write
    while a fold is already due only moves the due time.
    """
    with filemem.Store(store_path, durability="flush") as s:
        s.put(("w",), "first", 0)  # starts the folder, with a fold due soon
        folder = s._engine._folder
        assert folder is not None
        woken: list[int] = []
        real_notify = folder._cond.notify
        folder._cond.notify = lambda n=1: (woken.append(n), real_notify(n))[1]  # type: ignore[method-assign]
        for i in range(200):
            s.put(("w",), f"k{i}", i)
        # A fold that ran in between clears the due time, and the next write
        # wakes the thread once: a handful at most, never one per put.
        assert len(woken) < 20, len(woken)
        assert s.get(("w",), "k199") == 199


@pytest.mark.store_format(2)
def test_a_put_whose_frame_another_writer_published_takes_the_lock_once(store_path: str) -> None:
    """A writer finds its frame published as synced by a later writer's sync: no second turn on the lock.

    Two handles stand for two processes (flock belongs to the open file
    description). While the first handle syncs its frame, the second appends,
    syncs and publishes a later frame, which covers the first.
    """
    with filemem.Store(store_path) as a, filemem.Store(store_path) as b:
        a.put(("w",), "warm", 0)
        log = a._engine.log
        assert log is not None and log.writer is not None
        real_sync = log.writer.sync
        turns: list[str] = []
        real_locked = log._append_locked

        def counting_locked() -> Any:
            turns.append("lock")
            return real_locked()

        def sync_while_b_writes(end: int) -> None:
            real_sync(end)
            b.put(("w",), "later", 2)  # appended after a's frame, synced and published

        log.writer.sync = sync_while_b_writes  # type: ignore[method-assign]
        log._append_locked = counting_locked  # type: ignore[method-assign]
        try:
            version = a.put(("w",), "first", 1)
        finally:
            log.writer.sync = real_sync  # type: ignore[method-assign]
            log._append_locked = real_locked  # type: ignore[method-assign]
        assert turns == ["lock"]
        assert b.get(("w",), "first") == 1 and a.get(("w",), "later") == 2
        assert version < b.put(("w",), "last", 3)


@pytest.mark.store_format(2)
def test_a_sync_publishes_the_frames_appended_before_it_began(store_path: str) -> None:
    """One sync publishes (and announces) every frame of its segment written before it started.

    ``fdatasync`` flushes the file whoever wrote it, so a writer publishes
    the page's ``appended`` as read just before its sync, not only its own
    frame. Here ``b`` appends right after ``a``'s frame and then stalls
    before its own sync: ``a``'s put returns with ``b``'s frame synced and
    readable, and ``b``, let go, finds its frame published: it neither
    writes the page nor wakes the watchers. Before, ``synced`` stopped at
    ``a``'s frame and ``b`` published its own.
    """
    with filemem.Store(store_path) as a, filemem.Store(store_path) as b, filemem.Store(store_path) as reader:
        a.put(("w",), "warm-a", 0)
        b.put(("w",), "warm-b", 0)
        la, lb = a._engine.log, b._engine.log
        assert la is not None and lb is not None and lb.writer is not None
        announced = {"a": 0, "b": 0}
        real_a_announce, real_b_announce = la.on_published, lb.on_published
        la.on_published = lambda: (announced.__setitem__("a", announced["a"] + 1), real_a_announce())[1]
        lb.on_published = lambda: (announced.__setitem__("b", announced["b"] + 1), real_b_announce())[1]
        b_in_sync, release_b = threading.Event(), threading.Event()
        real_b_sync = lb.writer.sync

        def b_stalls_before_its_sync(end: int) -> None:
            b_in_sync.set()
            assert release_b.wait(30)
            real_b_sync(end)

        lb.writer.sync = b_stalls_before_its_sync  # type: ignore[method-assign]
        real_read_once = la.control.read_once
        b_put = threading.Thread(target=b.put, args=(("w",), "later", 2))

        def b_appends_first() -> Any:
            # a's frame is written and the append lock free: b appends behind it.
            b_put.start()
            assert b_in_sync.wait(30)
            return real_read_once()

        la.control.read_once = b_appends_first  # type: ignore[method-assign]
        try:
            a.put(("w",), "first", 1)
            la.control.read_once = real_read_once  # type: ignore[method-assign]
            assert b_put.is_alive()  # b has not synced yet
            assert la.control.synced() == la.control.appended()  # b's frame is synced, by a's sync
            assert reader.get(("w",), "later") == 2
            commits = la.control.commits()
            release_b.set()
            b_put.join(30)
            assert not b_put.is_alive()
            assert la.control.commits() == commits  # b found its frame published: no page write
            assert announced == {"a": 1, "b": 0}
        finally:
            la.control.read_once = real_read_once  # type: ignore[method-assign]
            release_b.set()
            if b_put.is_alive():
                b_put.join(30)
            lb.writer.sync = real_b_sync  # type: ignore[method-assign]
        assert b.get(("w",), "first") == 1 and a.get(("w",), "later") == 2


@pytest.mark.store_format(2)
def test_a_synced_put_publishes_without_waiting_for_the_append_lock(store_path: str) -> None:
    """Publishing a sync takes the page lock only: an appender holding the append lock does not delay it.

    Another open file description (another process, as far as flock goes)
    takes the append lock right after this put's frame is synced and keeps
    it: the put still returns, visible to readers, well inside its lock
    timeout. Before, the put waited for the append lock a second time (a
    quarter of a put's time with four writers) and timed out here.
    """
    with filemem.Store(store_path, lock_timeout_s=1.0) as a, filemem.Store(store_path) as reader:
        a.put(("w",), "warm", 0)
        log = a._engine.log
        assert log is not None and log.writer is not None
        other = os.open(os.path.join(store_path, WAL_DIR, APPEND_LOCK), os.O_RDWR)
        real_sync = log.writer.sync

        def sync_then_someone_appends(end: int) -> None:
            real_sync(end)
            assert _platform.lock(other, exclusive=True, blocking=False)

        log.writer.sync = sync_then_someone_appends  # type: ignore[method-assign]
        try:
            version = a.put(("w",), "k", 1)
            assert reader.get(("w",), "k") == 1
            item = reader.get_item(("w",), "k")
            assert item is not None and item.version == version
        finally:
            log.writer.sync = real_sync  # type: ignore[method-assign]
            _platform.unlock(other)
            os.close(other)
        assert a.put(("w",), "after", 2) > version


@pytest.mark.store_format(2)
def test_a_put_encodes_its_value_once(store_path: str) -> None:
    """The size check's bytes are the bytes logged: one encode per put (two before)."""
    with filemem.Store(store_path) as s:
        s.put(("w",), "warm", 0)
        engine = s._engine
        real = engine.codec
        calls: list[int] = []

        class Counting:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def encode(self, value: Any) -> bytes:
                calls.append(1)
                return bytes(real.encode(value))

        engine.codec = Counting()  # type: ignore[assignment]
        try:
            s.put(("w",), "k", {"a": [1, 2, 3]})
        finally:
            engine.codec = real
        assert len(calls) == 1
        assert s.get(("w",), "k") == {"a": [1, 2, 3]}


@pytest.mark.store_format(2)
def test_a_writer_does_not_decode_other_writers_values_under_the_lock(store_path: str) -> None:
    """Bringing the overlay to the log's end (under the append lock) decodes no values; a read decodes its own."""
    with filemem.Store(store_path) as a, filemem.Store(store_path) as b:
        a.put(("w",), "warm", 0)
        log = a._engine.log
        assert log is not None
        decoded: list[bytes] = []
        me = threading.get_ident()
        real = dict(log.codecs)

        class Counting:
            def __init__(self, codec: Any) -> None:
                self.codec = codec

            def __getattr__(self, name: str) -> Any:
                return getattr(self.codec, name)

            def decode(self, data: bytes) -> Any:
                # This thread's decodes only: the handle's own fold thread may
                # fold (and decode) b's frames meanwhile, which is not the
                # writer's work under the append lock.
                if threading.get_ident() == me:
                    decoded.append(data)
                return self.codec.decode(data)

        log.codecs.update({name: Counting(c) for name, c in real.items()})  # type: ignore[misc]
        try:
            for i in range(50):
                b.put(("w",), f"b{i}", {"i": i})
            a.put(("w",), "mine", 1)  # advances over b's 50 frames under the append lock
            assert decoded == []
            assert a.get(("w",), "b7") == {"i": 7}
            assert len(decoded) == 1
        finally:
            log.codecs.clear()
            log.codecs.update(real)


@pytest.mark.store_format(2)
def test_a_writer_reads_other_writers_frames_before_it_takes_the_append_lock(store_path: str) -> None:
    """Frames below the page's appended end are read outside the lock; under it, only what lands meanwhile.

    With four writers, reading the other three's frames was the longest part
    of a put's hold on the append lock (every other writer waited through it).
    A conditional write reads them (it decides against them); a plain put
    reads none (tests/wal/test_blind_puts.py).
    """
    with filemem.Store(store_path) as a, filemem.Store(store_path) as b:
        a.put(("w",), "warm", 0)
        log = a._engine.log
        assert log is not None
        real_scan = log.reader.scan
        scanned: list[tuple[bool, int]] = []  # (append lock held, frames read)

        def spying_scan(start: int, end: int | None) -> Any:
            got = real_scan(start, end)
            scanned.append((log._append_mu.locked(), len(got.frames)))
            return got

        for i in range(20):
            b.put(("w",), f"b{i}", i)
        log.reader.scan = spying_scan  # type: ignore[method-assign]
        try:
            a.put(("w",), "mine", 1, if_version=0)
        finally:
            log.reader.scan = real_scan  # type: ignore[method-assign]
        assert sum(n for held, n in scanned if not held) == 20
        assert sum(n for held, n in scanned if held) == 0
        # And what was read is what a decision under the lock needs: b's latest versions.
        assert a.get(("w",), "b19") == 19
        item = b.get_item(("w",), "b19")
        assert item is not None
        assert a.put(("w",), "b19", 20, if_version=item.version) > item.version


@pytest.mark.store_format(2)
def test_a_codec_change_between_the_check_and_the_commit_logs_the_new_codecs_bytes(store_path: str) -> None:
    """`convert` can switch the store's codec while a writer runs: the checked bytes of the old codec are not logged.

    Found by tests/cli/test_live.py (a msgpack store converted to json while
    processes wrote): the commit reused the check's msgpack bytes under the
    json codec's name, and every later fold failed to decode them.
    """
    from filemem.codecs import get_codec

    with filemem.Store(store_path, codec="msgpack") as s, filemem.Store(store_path) as reader:
        engine = s._engine
        real_check = engine.check_value

        def check_then_switch(value: Any, key: str | None = None) -> Any:
            got = real_check(value, key)
            engine.codec = get_codec("json")  # what following the marker's codec does after a convert
            return got

        engine.check_value = check_then_switch  # type: ignore[method-assign]
        s.put(("w",), "k", {"a": [1, 2, 3]})
        assert reader.get(("w",), "k") == {"a": [1, 2, 3]}  # another handle decodes the logged frame
        reader._engine.fold(wait=True)
        assert reader.get(("w",), "k") == {"a": [1, 2, 3]}


@pytest.mark.store_format(2)
def test_a_read_write_open_prepares_what_the_first_put_needs(store_path: str) -> None:
    """The log's first segment and the fold thread exist after the open: a new store's first put creates neither.

    Both were made by the first put, inside the timed window of every
    benchmark and of an agent's first write: the segment (temp file, space
    reserved, a synced header, a rename, a directory sync) under the append
    lock with every other writer waiting, the thread with a wait until it ran.
    """
    wal = os.path.join(store_path, WAL_DIR)
    with filemem.Store(store_path) as s:
        engine = s._engine
        segment = os.path.join(wal, "0000000000000001.log")
        assert os.path.exists(segment)
        assert engine._folder is not None and engine._folder._thread.is_alive()
        log = engine.log
        assert log is not None and log.writer is not None
        created: list[int] = []
        real_create = log.writer.create_segment
        log.writer.create_segment = lambda seg: (created.append(seg), real_create(seg))[1]  # type: ignore[method-assign]
        folder = engine._folder
        before = sorted(os.listdir(wal))
        assert s.put(("w",), "first", 1) > 0
        assert created == [] and sorted(os.listdir(wal)) == before
        assert engine._folder is folder
        thread = folder._thread
    assert not thread.is_alive()  # stopped by the close
    with filemem.Store(store_path, readonly=True) as ro:
        assert ro._engine._folder is None  # a read-only handle never folds
        assert ro.get(("w",), "first") == 1


@pytest.mark.store_format(2)
def test_an_open_behind_a_busy_append_lock_does_not_create_a_segment_without_it(store_path: str) -> None:
    """Creating a segment needs the append lock; an open that finds none waits for the lock, not around it."""
    filemem.Store(store_path).close()
    wal = os.path.join(store_path, WAL_DIR)
    os.remove(os.path.join(wal, "0000000000000001.log"))  # as a store created before this release left it
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_append_lock, args=(store_path, ready, release))
    child.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LockTimeout):
            filemem.Store(store_path, lock_timeout_s=0.3)
        assert not os.path.exists(os.path.join(wal, "0000000000000001.log"))
    finally:
        release.set()
        child.join(30)
    with filemem.Store(store_path) as s:
        assert os.path.exists(os.path.join(wal, "0000000000000001.log"))
        assert s.put(("w",), "k", 1) > 0 and s.get(("w",), "k") == 1


@pytest.mark.store_format(2)
def test_an_append_takes_no_page_lock_inside_the_append_lock(store_path: str) -> None:
    """``appended`` and ``last_lsn`` have their own seqlock (layout 2): the append lock's hold has no page-lock turn.

    Layout 1 took the page lock for every append (two ``flock`` calls and a
    copy of the page inside the append lock's hold, issue 13).
    """
    with filemem.Store(store_path) as s:
        s.put(("w",), "warm", 0)
        log = s._engine.log
        assert log is not None
        held: list[str] = []
        inside: list[str] = []
        real_append, real_page = log._append_locked, log._page_locked

        class Tracked:
            def __init__(self, name: str, real: Any) -> None:
                self.name, self.real = name, real

            def __enter__(self) -> None:
                if held:
                    inside.append(f"{self.name} inside {held[-1]}")
                self.real.__enter__()
                held.append(self.name)

            def __exit__(self, *exc: object) -> None:
                held.pop()
                self.real.__exit__(*exc)

        log._append_locked = lambda: Tracked("append", real_append())  # type: ignore[method-assign]
        log._page_locked = lambda: Tracked("page", real_page())  # type: ignore[method-assign]
        try:
            for i in range(20):
                s.put(("w",), f"k{i}", i)
        finally:
            log._append_locked = real_append  # type: ignore[method-assign]
            log._page_locked = real_page  # type: ignore[method-assign]
        assert inside == []
        assert s.get(("w",), "k19") == 19


@pytest.mark.store_format(2)
def test_a_control_page_of_another_layout_is_refused_under_live_handles_and_rebuilt_when_alone(
    store_path: str,
) -> None:
    """A page an earlier build wrote (layout 1: every field under one seqlock) is never written around.

    While a handle has the store open, a read-write opener refuses it (rebuilding
    it would break the live handles' seqlocks) and a writer whose page changed
    layout under it refuses to append; an opener alone rebuilds it in layout 2.
    """
    from filemem._errors import StorageError

    page = os.path.join(store_path, WAL_DIR, "control")
    with filemem.Store(store_path) as live:
        live.put(("w",), "before", 1)
        with open(page, "r+b") as fh:  # what an earlier build's rebuild leaves: its layout in the header
            fh.seek(8)
            fh.write((1).to_bytes(4, "little"))
        with pytest.raises(StorageError, match="layout 1"):
            filemem.Store(store_path)
        with pytest.raises(StorageError, match="layout 1"):
            live.put(("w",), "refused", 2)
        with filemem.Store(store_path, readonly=True) as ro:  # a read-only handle reads the log itself
            assert ro.get(("w",), "before") == 1
    with filemem.Store(store_path) as alone:
        with open(page, "rb") as fh:
            head = fh.read(16)
        assert int.from_bytes(head[8:12], "little") == 2
        assert alone.get(("w",), "before") == 1 and alone.get(("w",), "refused") is None
        assert alone.put(("w",), "after", 3) > 0
