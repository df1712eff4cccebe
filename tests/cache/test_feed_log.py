"""The change feed of a format-2 store: fed from the write-ahead log, not from the fold.

Each commit is one change per namespace it touched, with its keys, delivered
once, in commit order, as soon as it is durable: while folds are held off
(nothing reaches a shard file) the changes still arrive, and the fold, when it
runs, announces nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import pytest

import filemem
import filemem.admin
from tests.helpers import reap

from ._peer import Peer
from ._util import make_store, precreate, wait_until

pytestmark = pytest.mark.store_format(2)

NS = ("agent", "facts")
OTHER = ("agent", "notes")


class Seen:
    """Records every change; thread-safe."""

    def __init__(self) -> None:
        self.changes: list[filemem.Change] = []
        self._lock = threading.Lock()

    def __call__(self, change: filemem.Change) -> None:
        with self._lock:
            self.changes.append(change)

    def writes(self) -> list[filemem.Change]:
        with self._lock:
            return [c for c in self.changes if c.kind == "write"]

    def wait_writes(self, n: int, timeout: float = 20.0) -> list[filemem.Change]:
        wait_until(lambda: len(self.writes()) >= n, timeout=timeout)
        return self.writes()


def _shard_bytes(store: filemem.Store) -> bytes:
    out = []
    for d, _, files in os.walk(os.path.join(store.path, "ns")):
        for f in sorted(files):
            if f.endswith(".shard"):
                with open(os.path.join(d, f), "rb") as fh:
                    out.append(fh.read())
    return b"".join(out)


def test_changes_arrive_while_folds_are_held_off(store_path: str) -> None:
    """The feed does not wait for a fold: with folds held off by a snapshot, no shard has the write, the change came."""
    with make_store(store_path) as store:
        precreate(store, NS)
        filemem.admin.fold(store)
        seen = Seen()
        sub = store.subscribe(seen, namespace_prefix=NS)
        with store.snapshot(), Peer(store_path, watch="off") as writer:
            writer.call("put", NS, "sky", "blue-unfolded")
            writer.call("delete", NS, "_seed")
            got = seen.wait_writes(2)
            assert b"blue-unfolded" not in _shard_bytes(store)  # still only in the log
        sub.close()
    assert [(c.namespace, c.keys, c.shard) for c in got] == [(NS, ("sky",), ""), (NS, ("_seed",), "")]


def test_a_batch_is_one_change_per_namespace_with_its_keys(store_path: str) -> None:
    with make_store(store_path) as store:
        precreate(store, NS, OTHER)
        seen = Seen()
        sub = store.subscribe(seen, namespace_prefix=("agent",))
        with store.batch() as b:
            b.put(NS, "a", 1)
            b.put(OTHER, "x", 1)
            b.put(NS, "b", 2)
            b.put(NS, "a", 3)  # a key written twice in one batch is named once
        got = seen.wait_writes(2)
        time.sleep(0.3)  # nothing more may come: not the fold, not a second copy
        filemem.admin.fold(store)
        time.sleep(0.3)
        sub.close()
    assert {c.namespace: c.keys for c in seen.writes()} == {NS: ("a", "b"), OTHER: ("x",)}
    assert len(seen.changes) == 2
    assert got[0].time == got[1].time  # one commit


def test_changes_carry_the_records_each_commit_left(store_path: str) -> None:
    """``Change.items``: what each key held right after that commit (from the log), not what a read finds later."""
    with make_store(store_path) as store:
        precreate(store, NS)
        seen = Seen()
        sub = store.subscribe(seen, namespace_prefix=NS)
        store.put(NS, "sky", {"colour": "blue"})
        v2 = store.put(NS, "sky", {"colour": "grey"}, ttl=3600)
        store.delete(NS, "_seed")
        got = seen.wait_writes(3)
        sub.close()
        now = store.get_item(NS, "sky")
    assert now is not None and now.version == v2
    first, second, gone = got
    assert first.items is not None and second.items is not None and gone.items is not None
    (a,), (b,), (c,) = first.items, second.items, gone.items
    assert a is not None and a.value == {"colour": "blue"} and a.version < v2  # not the later write's record
    assert a.namespace == NS and a.key == "sky" and a.updated_at == first.time and a.expires_at is None
    assert b == now  # the same record a read returns: value, version, times
    assert b is not None and b.expires_at is not None
    assert c is None  # deleted


def _writer(path: str, tag: str, n: int, ready: mp.synchronize.Event) -> None:
    store = filemem.Store(path, watch="off")
    try:
        ready.wait(30)
        for i in range(n):
            store.put(NS, f"{tag}-{i}", i)
    finally:
        store.close()


def test_commits_of_racing_processes_arrive_once_each_in_commit_order(
    store_path: str, spawn_ctx: mp.context.SpawnContext
) -> None:
    """Two processes race puts: every commit is delivered exactly once, in log order (versions ascend)."""
    n = 40
    with make_store(store_path) as store:
        precreate(store, NS)
        seen = Seen()
        sub = store.subscribe(seen, namespace_prefix=NS, max_queue=10_000)
        go = spawn_ctx.Event()
        procs = [spawn_ctx.Process(target=_writer, args=(store_path, tag, n, go)) for tag in ("p", "q")]
        try:
            for p in procs:
                p.start()
            go.set()
            got = seen.wait_writes(2 * n, timeout=60)
        finally:
            reap(procs)
        sub.close()
        keys = [k for c in got for k in (c.keys or ())]
        assert sorted(keys) == sorted(f"{t}-{i}" for t in ("p", "q") for i in range(n))  # each once
        versions = []
        for k in keys:
            item = store.get_item(NS, k)
            assert item is not None
            versions.append(item.version)
        assert versions == sorted(versions)  # the order the log holds them
        for tag in ("p", "q"):
            mine = [int(k.split("-")[1]) for k in keys if k.startswith(tag + "-")]
            assert mine == list(range(n))


def test_polling_watcher_feeds_from_the_log_too(store_path: str) -> None:
    with make_store(store_path, watch="polling", poll_interval_s=0.02) as store:
        precreate(store, NS)
        seen = Seen()
        sub = store.subscribe(seen, namespace_prefix=NS)
        with Peer(store_path, watch="off") as writer:
            for i in range(3):
                writer.call("put", NS, f"k{i}", i)
            got = seen.wait_writes(3)
        sub.close()
    assert [c.keys for c in got] == [("k0",), ("k1",), ("k2",)]


def test_async_changes_from_the_log(store_path: str) -> None:
    import asyncio

    async def main(store: filemem.Store, writer: filemem.Store) -> list[tuple[str, ...] | None]:
        keys: list[tuple[str, ...] | None] = []
        with store.changes(NS) as changes:
            for i in range(3):
                writer.put(NS, f"k{i}", i)
            async for change in changes:
                keys.append(change.keys)
                if len(keys) == 3:
                    break
        return keys

    with make_store(store_path) as store, make_store(store_path, watch="off") as writer:
        precreate(store, NS)
        assert asyncio.run(asyncio.wait_for(main(store, writer), 20)) == [("k0",), ("k1",), ("k2",)]


def test_internal_records_are_not_announced(store_path: str) -> None:
    """Store-internal namespaces (journal replay marks) go through the log too, but are nobody's change."""
    from filemem._engine import INTERNAL_NS, Op

    with make_store(store_path) as store:
        precreate(store, NS)
        seen = Seen()
        sub = store.subscribe(seen)
        store._engine.apply([Op((INTERNAL_NS, "x"), "k", "put", value=1)])
        store.put(NS, "after", 1)
        got = seen.wait_writes(1)
        time.sleep(0.2)
        sub.close()
    assert [(c.namespace, c.keys) for c in got] == [(NS, ("after",))]


def test_the_last_subscriber_leaving_stops_following_the_log(store_path: str) -> None:
    with make_store(store_path) as store:
        precreate(store, NS)
        first = Seen()
        sub = store.subscribe(first, namespace_prefix=NS)
        store.put(NS, "one", 1)
        first.wait_writes(1)
        sub.close()
        store.put(NS, "unheard", 1)  # nobody listens: not kept for a later subscriber
        second = Seen()
        sub = store.subscribe(second, namespace_prefix=NS)
        store.put(NS, "two", 1)
        got = second.wait_writes(1)
        time.sleep(0.2)
        sub.close()
    assert [c.keys for c in got] == [("two",)]
