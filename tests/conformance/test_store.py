"""One conformance suite for every backend (issue 16): the same test, the same assertions, file and postgres.

Each test takes ``any_store`` (or ``location``), parametrized over the
backends by ``tests/conftest.py``; the postgres half runs on a throwaway
server and skips (or fails, with ``FILEMEM_REQUIRE_PG=1``) without one.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import filemem
from filemem import ConflictError, Store


def test_put_get_delete_and_versions(any_store: Store) -> None:
    s = any_store
    assert s.get("a/b", "k") is None
    assert s.get("a/b", "k", "dflt") == "dflt"
    v1 = s.put("a/b", "k", {"x": 1, "nested": {"y": [1, 2, None]}})
    assert s.get(("a", "b"), "k") == {"x": 1, "nested": {"y": [1, 2, None]}}
    item = s.get_item("a/b", "k")
    assert item is not None and item.version == v1 and item.namespace == ("a", "b")
    assert item.created_at <= item.updated_at and item.expires_at is None
    v2 = s.put("a/b", "k", "two")
    assert v2 > v1
    assert s.get_item("a/b", "k").created_at == item.created_at  # type: ignore[union-attr]
    assert s.delete("a/b", "k") is True
    assert s.delete("a/b", "k") is False
    assert s.get_item("a/b", "k") is None
    v3 = s.put("a/b", "k", "three")
    assert v3 > v2  # a version is never reused, even after a delete


def test_returned_values_are_copies(any_store: Store) -> None:
    value = {"list": [1, 2]}
    any_store.put("ns", "k", value)
    value["list"].append(3)
    got = any_store.get("ns", "k")
    got["list"].append(4)
    assert any_store.get("ns", "k") == {"list": [1, 2]}


def test_if_version_is_compare_and_set(any_store: Store) -> None:
    s = any_store
    v = s.put("ns", "k", 1, if_version=0)  # create only
    with pytest.raises(ConflictError) as info:
        s.put("ns", "k", 2, if_version=0)
    assert info.value.current_version == v and info.value.expected == 0
    with pytest.raises(ConflictError):
        s.put("ns", "k", 2, if_version=v + 1000)
    v2 = s.put("ns", "k", 2, if_version=v)
    with pytest.raises(ConflictError):
        s.delete("ns", "k", if_version=v)
    assert s.get("ns", "k") == 2
    assert s.delete("ns", "k", if_version=v2) is True
    with pytest.raises(ConflictError) as info:
        s.put("ns", "k", 3, if_version=v2)
    assert info.value.current_version == 0


def test_update_reads_modifies_writes(any_store: Store) -> None:
    s = any_store
    assert s.update("c", "n", lambda n: (n or 0) + 1) == 1
    assert s.update("c", "n", lambda n: (n or 0) + 1) == 2
    assert s.update("c", "d", lambda d: {**(d or {}), "a": 1}) == {"a": 1}
    assert s.get("c", "n") == 2


def test_bad_input_changes_nothing(any_store: Store) -> None:
    s = any_store
    with pytest.raises(filemem.InvalidKeyError):
        s.put("ns", "a/b", 1)
    with pytest.raises(filemem.InvalidKeyError):
        s.put(("ns", ".."), "k", 1)
    with pytest.raises(filemem.InvalidValueError):
        s.put("ns", "k", object())
    with pytest.raises(filemem.InvalidValueError):
        s.put("ns", "k", 1, ttl=-1)
    assert s.list_namespaces() == []


def test_whole_segment_prefixes_never_leak(any_store: Store) -> None:
    s = any_store
    for ns in [
        ("tenant", "acme"),
        ("tenant", "acme", "bots"),
        ("tenant", "acme-corp"),
        ("tenant", "acme0"),
        ("tenant", "acmf"),
        ("tenant", "Acme"),
        ("tenant", "acme%2F"),
        ("tenantx",),
    ]:
        s.put(ns, "k", "/".join(ns))
    assert s.list_namespaces(("tenant", "acme")) == [("tenant", "acme"), ("tenant", "acme", "bots")]
    assert s.list_namespaces("tenant/acme-corp") == [("tenant", "acme-corp")]
    assert ("tenantx",) not in s.list_namespaces("tenant")
    assert len(s.list_namespaces("tenant")) == 7
    assert s.list_namespaces("tenant", max_depth=1) == [("tenant",)]
    assert s.list_namespaces(max_depth=0) == []
    assert s.keys(("tenant", "acme")) == ["k"]


def test_listings_are_sorted_and_complete(any_store: Store) -> None:
    s = any_store
    keys = [f"k{i:03d}" for i in range(150)][::-1]
    with s.batch() as b:
        for k in keys:
            b.put("many", k, {"i": k})
    assert s.keys("many") == sorted(keys)
    items = s.items("many")
    assert [it.key for it in items] == sorted(keys)
    assert all(it.value == {"i": it.key} for it in items)
    assert ("many",) in s.list_namespaces()
    m = s.mapping("many")
    assert len(m) == 150 and "k001" in m and m["k001"] == {"i": "k001"}
    del m["k001"]
    assert "k001" not in m and len(s.keys("many")) == 149


def test_batch_is_all_or_nothing(any_store: Store) -> None:
    s = any_store
    s.put("b", "x", 0)
    v = s.get_item("b", "x").version  # type: ignore[union-attr]
    with s.batch() as b:
        b.put("b", "a", 1)
        b.put("b2", "c", 3)
        b.update("b", "x", lambda n: n + 1)
        b.delete("b", "missing")
    assert b.results[2] == 1 and b.results[3] is False
    assert s.get("b", "a") == 1 and s.get("b2", "c") == 3 and s.get("b", "x") == 1
    # A conflict in the last op: nothing of the batch lands.
    with pytest.raises(ConflictError), s.batch() as b:
        b.put("b", "new", 1)
        b.delete("b", "a")
        b.put("b", "x", 99, if_version=v)  # stale
    assert s.get("b", "new") is None and s.get("b", "a") == 1 and s.get("b", "x") == 1
    # An exception in the block: nothing is written.
    with pytest.raises(RuntimeError), s.batch() as b:
        b.put("b", "never", 1)
        raise RuntimeError("abandon")
    assert s.get("b", "never") is None


def test_batch_ops_on_one_key_apply_in_order(any_store: Store) -> None:
    s = any_store
    with s.batch() as b:
        b.put("o", "k", 1)
        b.update("o", "k", lambda n: n * 10)
        b.delete("o", "k")
        b.put("o", "k", 5)
    assert b.results[1] == 10 and b.results[2] is True
    assert b.results[3] >= b.results[0]  # one batch may share one version (a shard revision) on files
    assert s.get("o", "k") == 5
    assert s.get_item("o", "k").version == b.results[3]  # type: ignore[union-attr]


def test_snapshot_sees_one_version(any_store: Store) -> None:
    s = any_store
    s.put("snap", "a", 1)
    s.put("snap", "b", 1)
    with s.snapshot() as snap:
        first = snap.items("snap")
        # Another namespace: on files a snapshot holds shared locks on what it read.
        s.put("other", "z", 1)
        assert snap.items("snap") == first
        assert snap.get("snap", "a") == 1 and snap.get("snap", "zz", "d") == "d"
        assert snap.keys("snap") == ["a", "b"]
    with pytest.raises(filemem.StoreClosedError):
        snap.get("snap", "a")


def test_ttl_expires_records(any_store: Store) -> None:
    s = any_store
    s.put("t", "short", 1, ttl=0.5)
    s.put("t", "long", 2, ttl=3600)
    item = s.get_item("t", "long")
    assert item is not None and item.expires_at is not None and item.expires_at > time.time() + 3000
    assert s.get("t", "short") == 1
    time.sleep(0.8)
    assert s.get("t", "short") is None
    assert s.keys("t") == ["long"]
    assert s.put("t", "short", 3, if_version=0) > 0  # an expired record is absent for CAS too
    assert s.update("t", "long", lambda n: n + 1) == 3
    assert s.get_item("t", "long").expires_at == item.expires_at  # type: ignore[union-attr]  # update keeps the TTL


def test_change_feed_in_commit_order(any_store: Store) -> None:
    s = any_store
    got: list[filemem.Change] = []
    cond = threading.Condition()

    def on_change(change: filemem.Change) -> None:
        with cond:
            got.append(change)
            cond.notify_all()

    keys = [f"k{i}" for i in range(6)]
    with s.subscribe(on_change, namespace_prefix=("feed",)):
        s.put(("feed-other",), "x", 1)  # outside the prefix: never delivered
        for k in keys:
            s.put(("feed", "a"), k, 1)
        deadline = time.monotonic() + 20
        with cond:
            while not set(keys) <= {k for c in got for k in (c.keys or ())}:
                assert time.monotonic() < deadline, f"feed delivered only {got}"
                cond.wait(0.1)
    assert all(c.namespace == ("feed", "a") for c in got if c.kind == "write")
    order = []
    for c in got:
        for k in c.keys or ():
            if k not in order:
                order.append(k)
    assert order == keys


def test_closed_store_refuses(location: str) -> None:
    s = Store(location)
    s.put("ns", "k", 1)
    s.close()
    with pytest.raises(filemem.StoreClosedError):
        s.get_item("ns", "k")
    with pytest.raises(filemem.StoreClosedError):
        s.put("ns", "k", 2)


def test_reopen_keeps_everything(location: str) -> None:
    with Store(location, codec="msgpack") as s:
        s.put("r", "k", {"b": b"\x00bytes", "t": (1, 2)})
        assert s.codec == "msgpack"
    with Store(location) as s:  # an existing store keeps its codec
        assert s.codec == "msgpack"
        assert s.get("r", "k") == {"b": b"\x00bytes", "t": [1, 2]}


def test_readonly_refuses_writes(location: str) -> None:
    with Store(location) as s:
        s.put("ro", "k", 1)
    with Store(location, readonly=True) as s:
        assert s.get("ro", "k") == 1
        with pytest.raises(filemem.ReadOnlyError):
            s.put("ro", "k", 2)
        with pytest.raises(filemem.ReadOnlyError):
            s.update("ro", "k", lambda n: n + 1)
    with Store(location) as s:
        assert s.get("ro", "k") == 1


def test_async_store_on_every_backend(location: str) -> None:
    async def main() -> None:
        async with filemem.AsyncStore(location) as s:
            await s.put("aio", "k", 1)
            assert await s.update("aio", "k", lambda n: n + 1) == 2
            async with s.batch() as b:
                b.put("aio", "j", 3)
            async with s.snapshot() as snap:
                assert await snap.get("aio", "j") == 3
            assert await s.keys("aio") == ["j", "k"]
            assert await s.list_namespaces() == [("aio",)]

    asyncio.run(main())


def test_scan_pages_every_live_record_once(any_store: Store) -> None:
    s = any_store
    with s.batch() as b:
        for i in range(230):
            b.put("scan", f"k{i:04d}", i)
        b.put("scan", "gone", 1, ttl=0.2)
        b.put(("scan", "sub"), "other", 1)
    time.sleep(0.4)
    pages = list(s.scan("scan", batch_size=50))
    assert all(0 < len(p) <= 50 for p in pages)
    keys = [it.key for p in pages for it in p]
    assert sorted(keys) == [f"k{i:04d}" for i in range(230)]  # once each; no expired, no sub-namespace
    with pytest.raises(filemem.InvalidValueError):
        s.scan("scan", batch_size=0)
