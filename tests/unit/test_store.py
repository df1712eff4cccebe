"""The Store API, one behaviour per test, in both codecs."""

from __future__ import annotations

import os
import time

import pytest

import filemem
from filemem import ConflictError, InvalidKeyError, InvalidValueError, Item, ReadOnlyError, StoreClosedError
from tests.helpers import file_mode, settle

NS = ("agent-1", "episodic")


def snapshot_tree(path: str) -> dict[str, bytes]:
    """Every file under path with its bytes (lock files excluded: they are empty and harmless)."""
    out = {}
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            if f.endswith(".lock"):
                continue
            full = os.path.join(dirpath, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out


def test_put_get_round_trip(store: filemem.Store) -> None:
    v = store.put(NS, "ep-42", {"task": "login", "ok": True}, ttl=None)
    assert v >= 1
    assert store.get(NS, "ep-42") == {"task": "login", "ok": True}
    assert store.get("agent-1/episodic", "ep-42") == {"task": "login", "ok": True}
    assert store.get(NS, "missing") is None
    assert store.get(NS, "missing", default=7) == 7


def test_get_item_fields(store: filemem.Store) -> None:
    before = time.time()
    store.put(NS, "k", 1)
    item = store.get_item("agent-1/episodic", "k")
    assert isinstance(item, Item)
    assert item.namespace == NS and item.key == "k" and item.value == 1
    assert before <= item.created_at <= item.updated_at <= time.time()
    assert item.expires_at is None
    store.put(NS, "k", 2)
    item2 = store.get_item(NS, "k")
    assert item2 is not None
    assert item2.version > item.version and item2.created_at == item.created_at
    assert store.get_item(NS, "nope") is None


def test_update_and_delete(store: filemem.Store) -> None:
    for _ in range(5):
        store.update(NS, "counter", lambda v: (v or 0) + 1)
    assert store.get(NS, "counter") == 5
    assert store.delete(NS, "counter") is True
    assert store.delete(NS, "counter") is False
    assert store.get(NS, "counter") is None


def test_update_exception_changes_nothing(store: filemem.Store) -> None:
    store.put(NS, "k", 1)
    before = snapshot_tree(store.path)

    def boom(_v: object) -> object:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.update(NS, "k", boom)
    assert snapshot_tree(store.path) == before


def test_returned_values_do_not_alias_the_cache(store: filemem.Store) -> None:
    value = {"list": [1, 2]}
    store.put(NS, "k", value)
    value["list"].append(3)  # caller mutates what it passed
    got = store.get(NS, "k")
    assert got == {"list": [1, 2]}
    got["list"].append(99)  # caller mutates what it got
    assert store.get(NS, "k") == {"list": [1, 2]}


def test_keys_items_namespaces(store: filemem.Store) -> None:
    for i in range(20):
        store.put(NS, f"k{i:02d}", i)
    store.put(("agent-1", "facts"), "f", 1)
    store.put(("agent-2",), "x", 1)
    assert store.keys(NS) == [f"k{i:02d}" for i in range(20)]
    assert [it.value for it in store.items(NS)] == list(range(20))
    assert store.list_namespaces() == [("agent-1", "episodic"), ("agent-1", "facts"), ("agent-2",)]
    assert store.list_namespaces(prefix=("agent-1",)) == [("agent-1", "episodic"), ("agent-1", "facts")]
    assert store.list_namespaces(max_depth=1) == [("agent-1",), ("agent-2",)]
    assert store.keys(("nobody",)) == [] and store.items("nobody") == []


def test_prefix_matches_whole_segments(store: filemem.Store) -> None:
    store.put(("tenant", "acme"), "k", 1)
    store.put(("tenant", "acme-corp"), "k", 2)
    store.put(("tenant", "acme", "sub"), "k", 3)
    assert store.list_namespaces(prefix=("tenant", "acme")) == [("tenant", "acme"), ("tenant", "acme", "sub")]
    assert store.list_namespaces(prefix="tenant/acme-corp") == [("tenant", "acme-corp")]


@pytest.mark.parametrize(
    ("a", "b"),
    [(("con",), ("%63on",)), (("Acme",), ("acme",)), (("a b",), ("a_b",)), (("%41",), ("A",)), (("x.y",), ("x%2Ey",))],
)
def test_distinct_namespaces_never_share_files(store: filemem.Store, a: tuple[str, ...], b: tuple[str, ...]) -> None:
    store.put(a, "k", "A")
    store.put(b, "k", "B")
    assert store.get(a, "k") == "A" and store.get(b, "k") == "B"
    assert sorted(store.list_namespaces()) == sorted([a, b])


def test_if_version(store: filemem.Store) -> None:
    v1 = store.put(NS, "k", "a", if_version=0)
    with pytest.raises(ConflictError) as err:
        store.put(NS, "k", "b", if_version=0)
    assert err.value.current_version == v1
    v2 = store.put(NS, "k", "b", if_version=v1)
    with pytest.raises(ConflictError):
        store.put(NS, "k", "c", if_version=v1)
    with pytest.raises(ConflictError):
        store.delete(NS, "k", if_version=v1)
    assert store.delete(NS, "k", if_version=v2)
    assert store.get(NS, "k") is None


def test_versions_are_never_reused_after_delete(store: filemem.Store) -> None:
    v1 = store.put(NS, "k", "a")
    store.delete(NS, "k")
    v2 = store.put(NS, "k", "b")
    assert v2 > v1  # no ABA: an if_version=v1 writer cannot be fooled
    with pytest.raises(ConflictError):
        store.put(NS, "k", "c", if_version=v1)


def test_ttl(store: filemem.Store) -> None:
    # A TTL of a second, not milliseconds: two fsync'd puts on a loaded CI box
    # can take longer than a short TTL, and the record must still be live here.
    store.put(NS, "short", 1, ttl=1.0)
    store.put(NS, "long", 2, ttl=60)
    item = store.get_item(NS, "long")
    assert item is not None and item.expires_at is not None
    short = store.get_item(NS, "short")
    assert short is not None and short.value == 1 and short.expires_at is not None
    time.sleep(max(0.0, short.expires_at - time.time()) + 0.05)
    assert store.get(NS, "short") is None
    assert store.keys(NS) == ["long"]
    with pytest.raises(ConflictError):
        store.put(NS, "short", 3, if_version=1)  # expired means absent
    store.put(NS, "other", 3)  # a write of the shard drops the expired record from disk
    settle(store)  # format 2: that write reaches the shard at the fold
    shards = [v for k, v in snapshot_tree(store.path).items() if k.endswith(".shard")]
    assert all(b"short" not in v for v in shards)


def test_compact_drops_expired(store: filemem.Store) -> None:
    store.put(NS, "short", 1, ttl=0.01)
    time.sleep(0.03)
    assert store.compact()["expired_dropped"] == 1
    shards = [v for k, v in snapshot_tree(store.path).items() if k.endswith(".shard")]
    assert len(shards) == 1 and b'"count":0' in shards[0]


@pytest.mark.parametrize("ttl", [0, -1, "1", True])
def test_bad_ttl(store: filemem.Store, ttl: object) -> None:
    with pytest.raises(InvalidValueError):
        store.put(NS, "k", 1, ttl=ttl)  # type: ignore[arg-type]


def test_batch_all_or_nothing(store: filemem.Store) -> None:
    store.put(NS, "b", 0)
    with store.batch() as b:
        b.put(NS, "a", 1)
        b.delete(NS, "b")
        b.put(("other",), "x", 2)
        b.update(NS, "c", lambda v: (v or 0) + 10)
    assert b.results[1] is True and b.results[3] == 10
    assert store.get(NS, "a") == 1 and store.get(NS, "b") is None and store.get(("other",), "x") == 2

    with pytest.raises(ValueError, match="inside"), store.batch() as b2:
        b2.put(NS, "never", 1)
        raise ValueError("inside")
    assert store.get(NS, "never") is None

    store.put(NS, "guard", 1)
    with pytest.raises(ConflictError), store.batch() as b3:
        b3.put(NS, "x1", 1)
        b3.put(("other",), "x2", 2)
        b3.put(NS, "guard", 2, if_version=0)  # fails: the whole batch fails
    assert store.get(NS, "x1") is None and store.get(("other",), "x2") is None


def test_batch_across_many_shards(store_path: str, codec: str) -> None:
    with filemem.Store(store_path, codec=codec, shard_max_bytes=2048) as s:
        for i in range(200):
            s.put(NS, f"k{i}", "x" * 40)
        with s.batch() as b:
            for i in range(200):
                b.put(NS, f"k{i}", i)
        assert [s.get(NS, f"k{i}") for i in range(200)] == list(range(200))
        settle(s)  # format 2: the fold writes the shards, many of them in batches of its own
        assert (
            not os.path.exists(os.path.join(store_path, "batches"))
            or os.listdir(os.path.join(store_path, "batches")) == []
        )
        assert s.check() == []


def test_snapshot(store: filemem.Store) -> None:
    store.put(NS, "a", 1)
    store.put(NS, "b", 2)
    with store.snapshot() as snap:
        assert snap.get(NS, "a") == 1
        assert [it.key for it in snap.items(NS)] == ["a", "b"]
        assert snap.keys("nobody") == [] and snap.get("nobody", "k", 5) == 5
    with pytest.raises(StoreClosedError):
        snap.get(NS, "a")


def test_mapping(store: filemem.Store) -> None:
    m = store.mapping(NS)
    m["x"] = {"a": 1}
    assert m["x"] == {"a": 1} and "x" in m and len(m) == 1 and list(m) == ["x"]
    del m["x"]
    with pytest.raises(KeyError):
        m["x"]
    with pytest.raises(KeyError):
        del m["x"]


def test_splits_keep_every_record(store_path: str, codec: str) -> None:
    with filemem.Store(store_path, codec=codec, shard_max_bytes=1024, durability="flush") as s:
        for i in range(500):
            s.put(NS, f"key-{i}", {"i": i, "pad": "p" * 30})
        settle(s)  # format 2: the shards grow and split at the fold
        shard_files = [
            f for f in os.listdir(os.path.join(store_path, "ns", "agent-1", "episodic")) if f.endswith(".shard")
        ]
        assert len(shard_files) > 10
        for f in shard_files:
            assert os.path.getsize(os.path.join(store_path, "ns", "agent-1", "episodic", f)) < 2048
        assert s.keys(NS) == sorted(f"key-{i}" for i in range(500))
        assert all(s.get(NS, f"key-{i}")["i"] == i for i in range(500))
    with filemem.Store(store_path) as fresh:  # a new process view sees the same
        assert len(fresh.keys(NS)) == 500
        assert fresh.check() == []


@pytest.mark.parametrize("bad", [object(), {1, 2}, float("nan")])
def test_unencodable_values_change_nothing(store: filemem.Store, bad: object) -> None:
    if isinstance(bad, float) and store.codec == "msgpack":
        pytest.skip("NaN is a valid msgpack float")
    store.put(NS, "k", 1)
    before = snapshot_tree(store.path)
    with pytest.raises(InvalidValueError):
        store.put(NS, "k", bad)
    with pytest.raises(InvalidValueError), store.batch() as b:
        b.put(NS, "k2", 1)
        b.put(("zz",), "k3", bad)
    assert snapshot_tree(store.path) == before
    assert store.get(NS, "k") == 1


def test_oversize_value(store_path: str) -> None:
    with filemem.Store(store_path, max_value_bytes=1000) as s:
        with pytest.raises(InvalidValueError, match="limit"):
            s.put(NS, "k", "x" * 2000)
        assert s.get(NS, "k") is None


@pytest.mark.parametrize(
    ("ns", "key"), [(NS, "a/b"), (NS, ""), (NS, ".."), (("..",), "k"), ("../../etc", "k"), (("a", ""), "k"), ((), "k")]
)
def test_bad_names_change_nothing(store: filemem.Store, ns: object, key: str) -> None:
    before = snapshot_tree(store.path)
    with pytest.raises(InvalidKeyError):
        store.put(ns, key, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        store.get(ns, key)  # type: ignore[arg-type]
    assert snapshot_tree(store.path) == before
    assert not os.path.exists(os.path.join(os.path.dirname(store.path), "etc"))


def test_msgpack_only_values(store_path: str) -> None:
    with filemem.Store(store_path, codec="msgpack") as s:
        s.put(NS, "b", {"raw": b"\x00\xff", 1: "int key"})
        assert s.get(NS, "b") == {"raw": b"\x00\xff", 1: "int key"}
    with filemem.Store(store_path + "-json", codec="json") as j, pytest.raises(InvalidValueError):
        j.put(NS, "b", b"\x00")


def test_permissions(store: filemem.Store) -> None:
    store.put(NS, "k", 1)
    for dirpath, dirs, files in os.walk(store.path):
        for d in dirs:
            assert file_mode(os.path.join(dirpath, d)) == 0o700, d
        for f in files:
            assert file_mode(os.path.join(dirpath, f)) == 0o600, f
    assert file_mode(store.path) == 0o700


def test_reopen_keeps_codec_and_refuses_mismatch(store_path: str) -> None:
    filemem.Store(store_path, codec="msgpack").close()
    with filemem.Store(store_path) as s:
        assert s.codec == "msgpack"
    with pytest.raises(InvalidValueError, match="codec"):
        filemem.Store(store_path, codec="json")


def test_unknown_format_version_is_refused(store_path: str) -> None:
    filemem.Store(store_path).close()
    marker = os.path.join(store_path, "filemem.json")
    with open(marker, "w") as fh:
        fh.write('{"filemem": 99, "codec": "json"}')
    with pytest.raises(filemem.UnsupportedFormatError, match="99"):
        filemem.Store(store_path)


def test_refuses_foreign_directory(tmp_path: object) -> None:
    d = os.path.join(str(tmp_path), "notastore")
    os.makedirs(d)
    open(os.path.join(d, "precious.txt"), "w").close()
    with pytest.raises(filemem.FileMemError, match="not empty"):
        filemem.Store(d)
    with pytest.raises(filemem.FileMemError, match="no filemem store"):
        filemem.Store(os.path.join(str(tmp_path), "missing"), create=False)


def test_readonly_and_closed(store_path: str) -> None:
    with filemem.Store(store_path) as s:
        s.put(NS, "k", 1)
    ro = filemem.Store(store_path, readonly=True)
    assert ro.get(NS, "k") == 1
    with pytest.raises(ReadOnlyError):
        ro.put(NS, "k", 2)
    ro.close()
    with pytest.raises(StoreClosedError):
        ro.get(NS, "k")


def test_bad_settings(store_path: str) -> None:
    with pytest.raises(InvalidValueError):
        filemem.Store(store_path, durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        filemem.Store(store_path, codec="pickle")
    assert not os.path.exists(store_path)


def test_flush_durability_round_trips(store_path: str) -> None:
    with filemem.Store(store_path, durability="flush") as s:
        s.put(NS, "k", 1)
        assert s.durability == "flush"
    with filemem.Store(store_path) as s:
        assert s.get(NS, "k") == 1


def test_cross_instance_visibility(store_path: str) -> None:
    a = filemem.Store(store_path)
    b = filemem.Store(store_path, consistency="strict")  # another process, as far as caches go
    try:
        a.put(NS, "k", 1)
        assert b.get(NS, "k") == 1
        a.put(NS, "k", 2)
        assert b.get(NS, "k") == 2  # same size, same second: the stat key still changes
        b.delete(NS, "k")
        assert a.get(NS, "k") is None
    finally:
        a.close()
        b.close()
