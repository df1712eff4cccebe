"""The change feed: callback and async subscribers, prefixes, "missed", isolation, shutdown."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

import pytest

import filemem

from ._peer import Peer
from ._util import make_store, new_threads, precreate, wait_until

NS = ("agent", "facts")


class Collector:
    """A callback that records every change and lets the test wait for a condition on them."""

    def __init__(self) -> None:
        self.changes: list[filemem.Change] = []
        self._cond = threading.Condition()

    def __call__(self, change: filemem.Change) -> None:
        with self._cond:
            self.changes.append(change)
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[filemem.Change]], object], timeout: float = 10.0) -> list[filemem.Change]:
        with self._cond:
            ok = self._cond.wait_for(lambda: pred(self.changes), timeout)
            got = list(self.changes)
        assert ok, f"condition not met within {timeout} s; got {got}"
        return got

    def writes(self) -> list[filemem.Change]:
        with self._cond:
            return [c for c in self.changes if c.kind == "write"]


def _n_writes(n: int) -> Callable[[list[filemem.Change]], bool]:
    return lambda cs: sum(c.kind == "write" for c in cs) >= n


# ---------------------------------------------------------------- another process's changes


def test_subscribe_receives_another_process_changes(store_path: str) -> None:
    odd = ("Acme Corp", "notes.2024")  # segments that are escaped on disk come back as given
    with make_store(store_path) as store:
        precreate(store, ("other",), NS, odd)
        mine = Collector()
        everything = Collector()
        sub = store.subscribe(mine, namespace_prefix=("agent",))
        sub_all = store.subscribe(everything)
        with Peer(store_path, watch="off") as writer:
            steps = [
                ("put", (("other",), "x", 1), None),
                ("put", (NS, "sky", "blue"), {"sky"}),
                ("batch", (NS, {"a": 1, "b": 2, "c": 3}), {"a", "b", "c"}),
                ("delete", (NS, "a"), {"a"}),
            ]
            expected = 0
            for cmd, args, keys in steps:
                t_before = time.time()
                writer.call(cmd, *args)
                if keys is None:
                    everything.wait_for(lambda cs: any(c.namespace == ("other",) for c in cs))
                    continue
                expected += 1
                change = mine.wait_for(_n_writes(expected))[-1]
                assert change.kind == "write"
                assert change.namespace == NS
                assert set(change.shard) <= {"0", "1"}  # a shard prefix ("" for a namespace's first shard)
                assert t_before - 1 <= change.time <= time.time() + 1
                assert change.keys is not None and set(change.keys) == keys, change
            writer.call("put", odd, "k", 1)
            got = everything.wait_for(lambda cs: any(c.namespace == odd for c in cs))
        sub.close()
        sub_all.close()
    assert all(c.namespace[:1] == ("agent",) for c in mine.changes)
    assert [c.keys for c in got if c.namespace == odd] == [("k",)]


def test_prefix_matches_whole_segments(store_path: str) -> None:
    with make_store(store_path) as store, make_store(store_path, watch="off") as writer:
        precreate(
            writer,
            ("tenant", "acme-corp"),
            ("tenant", "acmex"),
            ("tenantx", "acme"),
            ("tenant", "acme"),
            ("tenant", "acme", "deep"),
        )
        acme = Collector()
        acme_str = Collector()
        tenant = Collector()
        subs = [
            store.subscribe(acme, namespace_prefix=("tenant", "acme")),
            store.subscribe(acme_str, namespace_prefix="tenant/acme"),
            store.subscribe(tenant, namespace_prefix=("tenant",)),
        ]
        writer.put(("tenant", "acme-corp"), "k", 1)
        writer.put(("tenant", "acmex"), "k", 1)
        writer.put(("tenantx", "acme"), "k", 1)
        writer.put(("tenant", "acme"), "k", 1)
        writer.put(("tenant", "acme", "deep"), "k", 1)
        writer.put(("tenant", "acme"), "done", 1)

        # Changes to different namespaces (directories) may arrive in any order:
        # wait for the last write and for the other namespace each must see.
        def done_with(*namespaces: tuple[str, ...]) -> Callable[[list[filemem.Change]], bool]:
            def done(cs: list[filemem.Change]) -> bool:
                seen = {c.namespace for c in cs}
                return any(c.keys == ("done",) for c in cs) and seen >= set(namespaces)

            return done

        for c in (acme, acme_str):
            c.wait_for(done_with(("tenant", "acme", "deep")))
        tenant.wait_for(done_with(("tenant", "acme", "deep"), ("tenant", "acme-corp"), ("tenant", "acmex")))
        time.sleep(0.2)  # a change that should not come has had its chance to arrive
        for s in subs:
            s.close()
    expected = {("tenant", "acme"), ("tenant", "acme", "deep")}
    assert {c.namespace for c in acme.changes} == expected
    assert {c.namespace for c in acme_str.changes} == expected
    assert {c.namespace for c in tenant.changes} == expected | {("tenant", "acme-corp"), ("tenant", "acmex")}


def test_async_changes_receive_another_process_write(store_path: str) -> None:
    before = set(threading.enumerate())
    with make_store(store_path) as store, Peer(store_path, watch="off") as writer:
        writer.call("put", ("elsewhere",), "k", 0)
        precreate(store, NS)

        async def main() -> list[filemem.Change]:
            got = []
            async with asyncio.timeout(20):
                sub = store.changes(("agent",))
                writer.call("put", ("elsewhere",), "k", 1)  # filtered out
                writer.call("put", NS, "sky", "blue")
                async for change in sub:
                    got.append(change)
                    if change.kind == "write":
                        break
            sub.close()
            return got

        got = asyncio.run(main())
    assert [(c.kind, c.namespace, c.keys) for c in got] == [("write", NS, ("sky",))]
    assert new_threads(before) == []


def test_store_close_ends_async_iteration(store_path: str) -> None:
    with make_store(store_path) as store:
        precreate(store, NS)

        async def main() -> list[str]:
            sub = store.changes(NS)
            store.put(NS, "k", 1)
            kinds = []
            async with asyncio.timeout(10):
                async for change in sub:
                    kinds.append(change.kind)
                    store.close()  # the iteration ends once what was queued is consumed
            return kinds

        assert asyncio.run(main())[:1] == ["write"]


def test_store_close_ends_async_iteration_with_full_queue(store_path: str) -> None:
    """close() must end an async iteration even when the subscriber's queue is full (no sentinel room)."""
    with make_store(store_path) as store:
        precreate(store, NS)

        async def main() -> list[str]:
            sub = store.changes(NS, max_queue=2)
            for i in range(6):
                store.put(NS, "k", i)
            await asyncio.sleep(0.5)  # the watcher fills the queue and overflows it
            store.close()
            await asyncio.sleep(0.1)  # the consumer is busy elsewhere for a moment
            kinds = []
            async with asyncio.timeout(3):
                async for change in sub:
                    kinds.append(change.kind)
            return kinds

        assert asyncio.run(main())[:2] == ["write", "write"]


# ---------------------------------------------------------------- slow, failing and closed subscribers


def test_slow_subscriber_misses_but_slows_neither_writers_nor_others(store_path: str) -> None:
    n = 150
    with make_store(store_path, durability="flush") as store:
        precreate(store, ("agent", "warmup"), ("agent", "base"), ("agent", "loaded"))
        store.get(NS, "k")  # the watcher runs in both measurements

        def timed(ns: tuple[str, ...]) -> float:
            start = time.perf_counter()
            for i in range(n):
                store.put(ns, "k", i)
            return time.perf_counter() - start

        timed(("agent", "warmup"))
        base = timed(("agent", "base"))
        slow_seen: list[filemem.Change] = []

        def slow(change: filemem.Change) -> None:
            slow_seen.append(change)
            time.sleep(0.2)  # n changes would take 30 s to consume

        fast = Collector()
        loaded_ns = ("agent", "loaded")
        s_slow = store.subscribe(slow, namespace_prefix=loaded_ns, max_queue=3)
        s_fast = store.subscribe(fast, namespace_prefix=loaded_ns, max_queue=100_000)
        loaded = timed(loaded_ns)
        # The fast subscriber gets every change long before the slow one could have passed them on.
        fast.wait_for(_n_writes(n), timeout=15)
        wait_until(lambda: any(c.kind == "missed" for c in slow_seen), timeout=10)
        s_fast.close()
        s_slow.close()
    assert loaded < 3 * base + 2.0, (base, loaded)
    assert not any(c.kind == "missed" for c in fast.changes)
    assert s_fast.missed == 0
    assert s_slow.missed > 0
    assert len(slow_seen) < n / 2  # it lost most of them


def test_raising_callback_does_not_stop_delivery(store_path: str) -> None:
    calls: list[filemem.Change] = []

    def flaky(change: filemem.Change) -> None:
        calls.append(change)
        if len(calls) % 2:
            raise RuntimeError("a bug in the subscriber")

    with make_store(store_path) as store:
        precreate(store, NS)
        other = Collector()
        sub = store.subscribe(flaky, namespace_prefix=NS)
        store.subscribe(other, namespace_prefix=NS)
        for i in range(10):
            store.put(NS, f"k{i}", i)
        wait_until(lambda: sum(c.kind == "write" for c in calls) >= 10)
        other.wait_for(_n_writes(10))
        assert sub.errors >= 5
        assert sub.delivered >= 5
    # store.close() ended both subscriptions (the leak check sees their threads gone).


def test_closed_subscription_gets_nothing_more(store_path: str) -> None:
    before = set(threading.enumerate())
    with make_store(store_path) as store:
        precreate(store, NS)
        first = Collector()
        keep = Collector()
        sub = store.subscribe(first, namespace_prefix=NS)
        store.subscribe(keep, namespace_prefix=NS)
        store.put(NS, "k", 1)
        first.wait_for(_n_writes(1))
        sub.close()
        # The watcher and the remaining subscriber (and, on a format-2 store, the fold's thread).
        assert len(new_threads(before)) == 2
        count = len(first.changes)
        store.put(NS, "k", 2)
        keep.wait_for(_n_writes(2))
        assert len(first.changes) == count
        async_before = set(threading.enumerate())

        async def main() -> None:
            with store.changes(NS):
                pass

        asyncio.run(main())
        assert new_threads(async_before) == []
    assert new_threads(before) == []


def test_events_lost_tells_every_subscriber_missed(store_path: str) -> None:
    with make_store(store_path) as store:
        cb = Collector()
        store.subscribe(cb, namespace_prefix=NS)

        async def main() -> filemem.Change:
            sub = store.changes(NS)
            store._fresh.events_lost()
            async with asyncio.timeout(10):
                change = await anext(sub)
            sub.close()
            return change

        assert asyncio.run(main()).kind == "missed"
        cb.wait_for(lambda cs: any(c.kind == "missed" for c in cs))


def test_async_subscriber_overflow_reports_missed(store_path: str) -> None:
    with make_store(store_path) as store:
        precreate(store, NS)

        async def main() -> list[str]:
            sub = store.changes(NS, max_queue=2)
            for i in range(8):
                store.put(NS, "k", i)
            await asyncio.sleep(0.5)  # the queue overflows
            kinds = []
            async with asyncio.timeout(10):
                kinds.append((await anext(sub)).kind)
                kinds.append((await anext(sub)).kind)
                store.put(NS, "k", 99)
                kinds.append((await anext(sub)).kind)
                kinds.append((await anext(sub)).kind)
            sub.close()
            return kinds

        assert asyncio.run(main()) == ["write", "write", "missed", "write"]


def test_async_subscriber_learns_missed_without_a_later_change(store_path: str) -> None:
    """An async subscriber that overflowed is told "missed" once it drains, not only when a later change comes."""
    with make_store(store_path) as store:
        precreate(store, NS)

        async def main() -> list[str]:
            sub = store.changes(NS, max_queue=2)
            for i in range(8):
                store.put(NS, "k", i)
            await asyncio.sleep(0.5)
            kinds = []
            try:
                async with asyncio.timeout(3):
                    for _ in range(3):
                        kinds.append((await anext(sub)).kind)
            finally:
                sub.close()
            return kinds

        assert asyncio.run(main()) == ["write", "write", "missed"]


@pytest.mark.store_format(1)  # format 2 reports commits; a fold's splits change no record and feed nothing
def test_split_reports_a_delete_change(store_path: str) -> None:
    with make_store(store_path, shard_max_bytes=1024) as store:
        precreate(store, NS)
        seen = Collector()
        store.subscribe(seen, namespace_prefix=NS)
        for i in range(40):
            store.put(NS, f"k{i}", "x" * 40)
        assert store.stats()["splits"] > 0
        got = seen.wait_for(lambda cs: any(c.kind == "delete" for c in cs))
    deletes = [c for c in got if c.kind == "delete"]
    assert all(c.namespace == NS and set(c.shard) <= {"0", "1"} for c in deletes)


def test_change_keys_belong_to_their_own_write(store_path: str) -> None:
    """A lagging subscriber must not report a later write's keys for an earlier change."""
    with make_store(store_path) as store:
        precreate(store, NS)
        seen: list[filemem.Change] = []

        def lagging(change: filemem.Change) -> None:
            seen.append(change)
            time.sleep(0.3)

        store.subscribe(lagging, namespace_prefix=NS)
        keys = [f"k{i}" for i in range(6)]
        for k in keys:
            store.put(NS, k, 1)
            time.sleep(0.03)
        wait_until(lambda: sum(c.kind == "write" for c in seen) >= len(keys), timeout=15)
    reported = [k for c in seen if c.kind == "write" and c.keys for k in c.keys]
    # Each key was written once: no change may claim another write's key.
    assert sorted(reported) == sorted(set(reported)), reported


def test_unknown_change_keys_are_not_filled_in_from_a_later_write(store_path: str) -> None:
    gate = threading.Event()
    seen: list[filemem.Change] = []

    def lagging(change: filemem.Change) -> None:
        seen.append(change)
        gate.wait(10)  # stuck on the first change until the test has written everything

    with make_store(store_path) as store:
        precreate(store, NS)
        store.subscribe(lagging, namespace_prefix=NS)
        store.put(NS, "first", 1)
        wait_until(lambda: seen)
        with store.batch() as b:
            for i in range(20):  # more than the header names: its touched list says "many" (null)
                b.put(NS, f"b{i}", i)
        wait_until(lambda: store.stats()["feed"]["published"] >= 2)  # seen by the watcher as it was
        store.put(NS, "solo", 1)
        wait_until(lambda: store.stats()["feed"]["published"] >= 3)
        gate.set()
        wait_until(lambda: sum(c.kind == "write" for c in seen) >= 3)
    batch_change = [c for c in seen if c.kind == "write"][1]
    assert batch_change.keys is None or "solo" not in batch_change.keys, batch_change


def test_callback_may_close_the_store(store_path: str) -> None:
    """A subscriber that stops everything from inside its callback: no deadlock, no thread left."""
    before = set(threading.enumerate())
    closed = threading.Event()
    store = make_store(store_path)
    precreate(store, NS)

    def stop_all(change: filemem.Change) -> None:
        store.close()
        closed.set()

    store.subscribe(stop_all, namespace_prefix=NS)
    store.subscribe(lambda c: None, namespace_prefix=NS)
    with make_store(store_path, watch="off") as writer:
        writer.put(NS, "k", 1)
        assert closed.wait(10)
    wait_until(lambda: not new_threads(before))
    with pytest.raises(filemem.StoreClosedError):
        store.get(NS, "k")


def test_async_subscription_abandoned_with_its_loop_is_dropped(store_path: str) -> None:
    with make_store(store_path) as store, make_store(store_path, watch="off") as writer:
        precreate(store, NS)

        async def main() -> None:
            store.changes(NS)  # never closed; the loop ends

        asyncio.run(main())
        assert store.stats()["feed"]["subscribers"] == 1
        writer.put(NS, "k", 1)  # offering it a change finds its loop closed
        wait_until(lambda: store.stats()["feed"]["subscribers"] == 0)


@pytest.mark.store_format(1)  # shard headers feed format 1 only (format 2 reads every commit from the log)
def test_writes_hidden_before_the_first_header_read_are_announced(store_path: str) -> None:
    """A shard written 5 times after subscribe() whose first header the watcher reads late: 5 writes, not 1.

    The writes all set one key, so its record holds only the last version: without the
    shard's generation noted at subscribe() nothing tells the 4 hidden writes apart.
    """
    from filemem._feed import ChangeFeed

    with make_store(store_path) as store:
        precreate(store, NS)
        store.put(NS, "k", 0)
        feed = ChangeFeed(store._engine.ns_root)
        got: list[filemem.Change] = []
        sub = feed.subscribe(got.append, NS, 100)
        try:
            for i in range(1, 6):
                store.put(NS, "k", i)
            shard = next(
                os.path.join(d, f) for d, _, fs in os.walk(store._engine.ns_dir(NS)) for f in fs if f.endswith(".shard")
            )
            feed.publish(os.path.dirname(shard), os.path.basename(shard), "write")  # only the last write's event
            wait_until(lambda: sum(c.kind == "write" for c in got) >= 5, timeout=10)
        finally:
            sub.close()
