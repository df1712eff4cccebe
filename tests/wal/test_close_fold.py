"""Which handle folds at close (issue 13): the last read-write handle, not every one.

Before, every writer folded the whole log at close under one global fold
lock: eight collectors closing together queued behind each other's backlogs
and timed out (tests/collector/test_crash.py took 3x format 1's time). Now a
writer that finds another read-write handle open leaves the fold to it, and
the last one folds everything, so a store at rest still has every record in
its shards, also when a read-only handle is open (it cannot fold) and when the
last writer is SIGKILLed (the next opener recovers). These tests count fold
work and who did it, never time; the first fails on the old code.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import filemem
from tests.helpers import reap
from tests.wal import _workers

COUNT = 300


def _unfolded_at_rest(path: str) -> int:
    with filemem.Store(path, readonly=True) as ro:
        log = ro._engine.log
        assert log is not None
        return int(log.unfolded_bytes())


def _all_there(path: str, procs: list[int]) -> None:
    with filemem.Store(path, readonly=True) as ro:
        for me in procs:
            items = {it.key: it.value for it in ro.items(("close", str(me)))}
            assert len(items) == COUNT, (me, len(items))
            assert items[f"k{COUNT - 1:05d}"] == {"me": me, "i": COUNT - 1}


def _start(ctx: Any, path: str, me: int, count: int = COUNT) -> tuple[Any, str, str, str]:
    tmp = os.path.dirname(path)
    ready, go, out = (os.path.join(tmp, f"{name}-{me}") for name in ("ready", "go", "out"))
    p = ctx.Process(target=_workers.close_counting_writer, args=(path, me, count, ready, go, out))
    p.start()
    return p, ready, go, out


def _report(out: str) -> dict[str, int]:
    with open(out) as fh:
        got: dict[str, int] = json.load(fh)
    return got


def _touch(path: str) -> None:
    with open(path, "w"):
        pass


def test_a_writer_closing_while_another_is_open_leaves_the_fold_to_it(store_path: str, spawn_ctx: Any) -> None:
    """The first closer folds nothing; the last folds everything; at rest the shards hold it all."""
    filemem.Store(store_path).close()
    a = _start(spawn_ctx, store_path, 0)
    b = _start(spawn_ctx, store_path, 1)
    procs = [a[0], b[0]]
    try:
        for _, ready, _, _ in (a, b):
            _workers.wait_for(ready)
        _touch(a[2])
        a[0].join(60)
        assert a[0].exitcode == 0
        first = _report(a[3])
        # The old code folded the whole log here, in every closing writer.
        assert first["records_folded"] == 0, first
        assert first["close_folds"] == 0, first
        _all_there(store_path, [0])  # through the log, while the other writer is open
        _touch(b[2])
        b[0].join(60)
        assert b[0].exitcode == 0
        last = _report(b[3])
        assert last["close_folds"] == 1, last
        assert last["records_folded"] >= 100, last  # at least both last batches
    finally:
        reap(procs, timeout=5)
    assert _unfolded_at_rest(store_path) == 0
    _all_there(store_path, [0, 1])


def test_the_last_writer_folds_while_a_read_only_handle_is_open(store_path: str, spawn_ctx: Any) -> None:
    """A read-only handle cannot fold after the writer: it does not count as one."""
    filemem.Store(store_path).close()
    with filemem.Store(store_path, readonly=True) as ro:
        a = _start(spawn_ctx, store_path, 0)
        try:
            _workers.wait_for(a[1])
            _touch(a[2])
            a[0].join(60)
            assert a[0].exitcode == 0
        finally:
            reap([a[0]], timeout=5)
        got = _report(a[3])
        assert got["close_folds"] == 1, got
        assert got["records_folded"] >= 100, got
        assert len(ro.items(("close", "0"))) == COUNT
    assert _unfolded_at_rest(store_path) == 0
    _all_there(store_path, [0])


def test_writers_closing_together_leave_the_store_folded(store_path: str, spawn_ctx: Any) -> None:
    """Six writers told to close at the same instant, three rounds: one of them always folds the rest."""
    filemem.Store(store_path).close()
    for rnd in range(3):
        go = os.path.join(os.path.dirname(store_path), f"go-all-{rnd}")
        started = []
        try:
            for me in range(6):
                p, ready, own_go, out = _start(spawn_ctx, store_path, me)
                started.append((p, ready, own_go, out))
            for _, ready, _, _ in started:
                _workers.wait_for(ready)
            _touch(go)
            for _, _, own_go, _ in started:
                os.link(go, own_go)  # one inode: as near to together as files allow
            reap([p for p, *_ in started], timeout=120)
            assert [p.exitcode for p, *_ in started] == [0] * 6
        finally:
            reap([p for p, *_ in started], timeout=1)
        reports = [_report(out) for *_, out in started]
        assert sum(r["close_folds"] for r in reports) >= 1, reports
        assert _unfolded_at_rest(store_path) == 0, (rnd, reports)
        _all_there(store_path, list(range(6)))
        for *_, own_go, out in started:
            os.unlink(own_go)
            os.unlink(out)
            os.unlink(os.path.join(os.path.dirname(store_path), f"ready-{own_go.rsplit('-', 1)[1]}"))


def test_the_writer_left_to_fold_is_sigkilled_and_the_next_open_recovers(store_path: str, spawn_ctx: Any) -> None:
    """A closes leaving the fold to B (which writes nothing, so has no fold thread); B dies: the next open recovers."""
    filemem.Store(store_path).close()
    a = _start(spawn_ctx, store_path, 0)
    b = _start(spawn_ctx, store_path, 1, count=0)
    procs = [a[0], b[0]]
    try:
        for _, ready, _, _ in (a, b):
            _workers.wait_for(ready)
        _touch(a[2])
        a[0].join(60)
        assert a[0].exitcode == 0
        assert _report(a[3])["records_folded"] == 0
        os.kill(b[0].pid, signal.SIGKILL)
        b[0].join(10)
    finally:
        reap(procs, timeout=5)
    assert _unfolded_at_rest(store_path) > 0  # nobody folded: the store is not at rest as it should be
    with filemem.Store(store_path) as s:  # the recovering open
        assert len(s.items(("close", "0"))) == COUNT
    assert _unfolded_at_rest(store_path) == 0
    _all_there(store_path, [0])
