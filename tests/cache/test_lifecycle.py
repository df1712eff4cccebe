"""Threads and descriptors: started lazily, stopped by close(), rebuilt after fork."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import threading
import time
import warnings
from typing import Any

import pytest

import filemem

from ._util import make_store, new_threads, open_fds, precreate, spin_get

NS = ("agent", "facts")


@pytest.mark.parametrize("watch", ["auto", "polling"])
def test_close_joins_watcher_and_subscriber_threads(store_path: str, watch: str) -> None:
    before = set(threading.enumerate())
    store = make_store(store_path, watch=watch)
    store.put(NS, "k", 1)
    assert not new_threads(before)  # writing starts nothing
    assert store.get(NS, "k") == 1
    assert len(new_threads(before)) == 1  # the watcher
    subs = [store.subscribe(lambda c: None, namespace_prefix=NS) for _ in range(3)]
    assert len(new_threads(before)) == 4
    subs[0].close()
    assert len(new_threads(before)) == 3  # joined at once
    store.close()
    assert new_threads(before) == []  # joined, not merely asked to stop
    with pytest.raises(filemem.StoreClosedError):
        store.get(NS, "k")
    store.close()  # idempotent
    subs[1].close()  # closing an already ended subscription is harmless


def test_many_open_use_close_cycles_leak_nothing(store_path: str) -> None:
    make_store(store_path).close()
    before = set(threading.enumerate())
    fds = open_fds()
    started = time.monotonic()
    for i in range(30):
        watch = "polling" if i % 5 == 4 else "auto"
        with make_store(store_path, watch=watch, poll_interval_s=0.02) as store:
            store.put(NS, "k", i)
            assert store.get(NS, "k") == i
            sub = store.subscribe(lambda c: None)
            store.put(NS, "k", i + 1)
            assert store.get(NS, "k") == i + 1
            if i % 2:
                sub.close()  # the other half are ended by store.close()
        assert new_threads(before) == [], f"cycle {i}"
    elapsed = time.monotonic() - started
    assert open_fds() <= fds + 2, "file descriptors (inotify instances, pipes) leaked"
    assert elapsed < 30, elapsed


def test_write_only_store_starts_no_thread(store_path: str) -> None:
    before = set(threading.enumerate())
    with make_store(store_path) as store:
        store.put(NS, "a", 1)
        store.update(NS, "n", lambda v: (v or 0) + 1)
        with store.batch() as b:
            b.put(NS, "b", 2)
            b.put(("other",), "c", 3)
        store.delete(NS, "a")
        assert store.get(NS, "b", consistency="strict") == 2
        assert store.keys(NS) == ["b", "n"]
        assert [it.key for it in store.items(NS)] == ["b", "n"]
        assert store.list_namespaces() == [NS, ("other",)]
        with store.snapshot() as snap:
            assert snap.get(NS, "b") == 2
        assert store.check() == []
        store.compact()
        assert new_threads(before) == []
        assert store.stats()["watcher"]["backend"] == "none"
    # A strict store reads without a watcher; watch="off" never starts one.
    with make_store(store_path, consistency="strict") as strict, make_store(store_path, watch="off") as off:
        assert strict.get(NS, "b") == 2
        assert off.get(NS, "b") == 2
        assert new_threads(before) == []


def test_async_changes_leave_no_threads_after_loop(store_path: str) -> None:
    before = set(threading.enumerate())

    async def main(store: filemem.Store) -> list[str]:
        sub = store.changes(NS)
        store.put(NS, "k", 1)
        async with asyncio.timeout(10):
            change = await anext(sub)
        sub.close()
        return [change.kind]

    with make_store(store_path) as store:
        precreate(store, NS)
        assert asyncio.run(main(store)) == ["write"]
    assert new_threads(before) == []


# ---------------------------------------------------------------- fork


def _child(store: filemem.Store, to_parent: int, from_parent: int) -> dict[str, Any]:
    """In the forked child: use the inherited store, wait for the parent's write, see it."""
    out: dict[str, Any] = {"first": store.get(NS, "k")}
    os.write(to_parent, b"r")
    ready, _, _ = select.select([from_parent], [], [], 30)
    if not ready:
        return {**out, "error": "parent never wrote"}
    os.read(from_parent, 1)
    start = time.monotonic()
    value = store.get(NS, "k")
    while value != 1 and time.monotonic() - start < 5:  # TTL is 30 s: only a watcher explains < 5 s
        value = store.get(NS, "k")
    out["seen"] = value
    out["latency"] = time.monotonic() - start
    out["backend"] = store.stats()["watcher"]["backend"]
    out["threads"] = threading.active_count()
    store.put(NS, "child", "hello")  # the parent must see this through its own watcher
    out["own"] = store.get(NS, "child")
    store.close()
    out["threads_after_close"] = threading.active_count()
    return out


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_forked_child_gets_its_own_watcher(store_path: str, warm: bool) -> None:
    """The parent's watcher thread does not survive fork: the child must start its own and see new values.

    "warm": the parent had the key cached (and in the Store's hot-key table)
    when it forked; the child must not keep serving that entry for the TTL.
    """
    with make_store(store_path) as store:
        store.put(NS, "k", 0)
        if warm:
            for _ in range(3):
                assert store.get(NS, "k") == 0  # the parent's watcher runs, the key is cached
        else:
            store.subscribe(lambda c: None)  # the parent's watcher runs; the key is not cached
        assert store.stats()["watcher"]["backend"] == "inotify"
        child_r, parent_w = os.pipe()
        parent_r, child_w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns into pytest
            code = 1
            try:
                os.close(child_r)
                os.close(child_w)
                report = _child(store, parent_w, parent_r)
                os.write(parent_w, json.dumps(report).encode())
                code = 0
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    os.write(parent_w, json.dumps({"error": repr(exc)}).encode())
            finally:
                os._exit(code)
        os.close(parent_w)
        os.close(parent_r)
        try:
            ready, _, _ = select.select([child_r], [], [], 60)
            assert ready and os.read(child_r, 1) == b"r", "child never got ready"
            store.put(NS, "k", 1)
            os.write(child_w, b"w")
            chunks = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ready, _, _ = select.select([child_r], [], [], 1)
                if ready:
                    chunk = os.read(child_r, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            report = json.loads(b"".join(chunks) or b"{}")
        finally:
            os.close(child_r)
            os.close(child_w)
            _reap_fork(pid)
        assert "error" not in report, report
        assert report["first"] == 0
        assert report["backend"] != "none", report
        assert report["seen"] == 1, report
        assert report["latency"] < 5, report
        assert report["own"] == "hello"
        assert report["threads_after_close"] < report["threads"]
        # The parent's watcher still works after the fork.
        assert spin_get(store, NS, "child", "hello", timeout=10) < 10
        assert store.get(NS, "k") == 1


def _reap_fork(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, status
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("forked child did not exit")
