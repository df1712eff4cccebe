"""FileMemStore unit behaviour: keys, filters, TTL, vectors, async, update, bad input, a compiled graph."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.store.base")

from hypothesis import given
from hypothesis import strategies as st
from langgraph.store.base import BaseStore, GetOp, InvalidNamespaceError, PutOp, SearchOp

import filemem
from filemem.integrations.langgraph import FileMemStore, escape_key, unescape_key
from tests.integrations._langgraph_common import DIMS, toy_embed


@pytest.fixture
def lg(location: str) -> Any:
    """A LangGraph store over a fresh filemem store on each backend (a directory, a postgresql:// URL)."""
    with FileMemStore(location) as s:
        yield s


# ------------------------------------------------------------------ keys and values


@given(st.text(max_size=40))
def test_key_escaping_is_a_bijection(key: str) -> None:
    name = escape_key(key)
    assert unescape_key(name) == key
    assert name and "/" not in name and "\x00" not in name and name not in (".", "..")


@given(st.lists(st.text(max_size=6), min_size=2, max_size=6, unique=True))
def test_distinct_keys_never_share_a_name(keys: list[str]) -> None:
    assert len({escape_key(k) for k in keys}) == len(keys)


@pytest.mark.parametrize("key", ["", ".", "..", "a/b", "/", "%", "%2F", "%25", "a\x00b", "ü/ß", "x" * 300])
def test_any_key_round_trips(lg: FileMemStore, key: str) -> None:
    lg.put(("ns",), key, {"k": key})
    item = lg.get(("ns",), key)
    assert item is not None and item.key == key and item.value == {"k": key}
    assert [i.key for i in lg.search(("ns",))] == [key]
    lg.delete(("ns",), key)
    assert lg.get(("ns",), key) is None


def test_items_are_langgraph_items_with_aware_times(lg: FileMemStore) -> None:
    before = time.time()
    lg.put(("users", "42"), "prefs", {"theme": "dark"})
    first = lg.get(("users", "42"), "prefs")
    time.sleep(0.01)
    lg.put(("users", "42"), "prefs", {"theme": "light"})
    item = lg.get(("users", "42"), "prefs")
    assert item is not None and first is not None
    assert item.namespace == ("users", "42") and item.value == {"theme": "light"}
    assert item.created_at.tzinfo is not None and item.updated_at.tzinfo is not None
    assert item.created_at == first.created_at  # creation is kept across updates
    assert item.updated_at > first.updated_at
    assert item.created_at.timestamp() >= before - 1
    assert isinstance(lg, BaseStore)


def test_filter_keys_with_dots_and_nested_subsets(lg: FileMemStore) -> None:
    lg.put(("d",), "1", {"a.b": 1, "a": {"b": 2, "c": 3}, "n": 10, "s": "10"})
    lg.put(("d",), "2", {"a.b": 2, "a": {"b": 1}, "n": 8, "s": "abc"})

    def keys(flt: dict[str, Any]) -> list[str]:
        return [i.key for i in lg.search(("d",), filter=flt)]

    assert keys({"a.b": 1}) == ["1"]  # the literal key "a.b", not the path a -> b
    assert keys({"a": {"b": 1}}) == ["2"]  # a nested dict matches as a subset
    assert keys({"a": {"b": 2}}) == ["1"]
    assert keys({"n": {"$gt": 8}}) == ["1"]  # numbers as numbers (Postgres' $gt: 8 misses 10)
    assert keys({"s": {"$gt": 8}}) == ["1"]  # a numeric string compares as InMemoryStore's float()
    assert keys({"n": {"$gte": 8, "$lt": 10}}) == ["2"]
    assert keys({"n": {"$ne": 8}}) == ["1"]
    assert keys({"missing": {"$gt": 1}}) == []  # InMemoryStore raises TypeError here


@pytest.mark.parametrize(
    "flt",
    [{"n": {"$regex": "x"}}, {"n": {"$gt": "abc"}}, {"n": {"$gt": 1, "plain": 2}}, ["n"]],
)
def test_bad_filters_raise_before_anything_runs(lg: FileMemStore, flt: Any) -> None:
    lg.put(("d",), "1", {"n": 1})
    with pytest.raises(filemem.InvalidQueryError):
        lg.batch([PutOp(("d",), "2", {"n": 2}), SearchOp(("d",), flt)])
    assert lg.get(("d",), "2") is None  # the batch's put did not happen


def test_bad_input_changes_nothing(lg: FileMemStore) -> None:
    lg.put(("d",), "keep", {"v": 1})
    with pytest.raises(filemem.InvalidValueError):
        lg.batch([PutOp(("d",), "a", {"v": 2}), PutOp(("d",), "b", {"v": object()})])
    with pytest.raises(InvalidNamespaceError):
        lg.batch([PutOp(("d",), "a", {"v": 2}), GetOp(("a.b",), "k")])
    with pytest.raises(InvalidNamespaceError):
        lg.batch([PutOp((), "a", {"v": 2})])
    with pytest.raises(filemem.InvalidValueError):
        lg.batch([PutOp(("d",), "a", ["not", "a", "mapping"])])  # type: ignore[arg-type]
    with pytest.raises(filemem.InvalidKeyError):  # filemem's key limit, after escaping
        lg.put(("d",), "/" * 400, {"v": 3})
    assert [i.key for i in lg.search(("d",))] == ["keep"]
    assert lg.store.check() == []


def test_batch_reads_before_puts_and_last_put_wins(lg: FileMemStore) -> None:
    lg.put(("b",), "k", {"v": 0})
    got = lg.batch(
        [
            PutOp(("b",), "k", {"v": 1}),
            GetOp(("b",), "k"),
            PutOp(("b",), "k", {"v": 2}),
            PutOp(("b",), "gone", {"v": 9}),
            PutOp(("b",), "gone", None),
        ]
    )
    assert got[0] is None and got[1].value == {"v": 0}  # type: ignore[union-attr]
    assert lg.get(("b",), "k").value == {"v": 2}  # type: ignore[union-attr]
    assert lg.get(("b",), "gone") is None


def test_list_namespaces_skips_emptied_ones(lg: FileMemStore) -> None:
    lg.put(("a", "b", "c"), "k", {})
    lg.put(("a", "b", "d", "e"), "k", {})
    lg.put(("a", "c", "f"), "k", {})
    lg.put(("a", "x"), "k", {})
    lg.delete(("a", "x"), "k")
    assert lg.list_namespaces(prefix=("a", "b"), max_depth=3) == [("a", "b", "c"), ("a", "b", "d")]
    assert lg.list_namespaces(suffix=("*", "f")) == [("a", "c", "f")]
    assert lg.list_namespaces(prefix=("a", "*", "d")) == [("a", "b", "d", "e")]
    assert lg.list_namespaces(limit=2, offset=1) == [("a", "b", "d", "e"), ("a", "c", "f")]
    assert ("a", "x") not in lg.list_namespaces()


# ------------------------------------------------------------------ TTL


def test_ttl_expires_and_is_swept(tmp_path: Path) -> None:
    with FileMemStore(str(tmp_path / "s")) as lg:
        assert lg.supports_ttl
        lg.put(("t",), "short", {"v": 1}, ttl=0.3 / 60)  # minutes: 0.3 s
        lg.put(("t",), "long", {"v": 2}, ttl=60)
        lg.put(("t",), "none", {"v": 3})
        time.sleep(0.5)
        assert lg.get(("t",), "short") is None
        assert sorted(i.key for i in lg.search(("t",), refresh_ttl=False)) == ["long", "none"]
        assert _shard_holds(lg, b'"short":{')  # hidden at once, still on disk
        assert lg.sweep_ttl() == 1
        assert not _shard_holds(lg, b'"short":{')


def test_reads_refresh_the_ttl_unless_told_not_to(tmp_path: Path) -> None:
    # default_ttl 0.5 minutes: a read restarts the clock once 1% of it (0.3 s) has passed.
    with FileMemStore(str(tmp_path / "s"), ttl={"default_ttl": 0.5}) as lg:
        lg.put(("t",), "k", {"v": 1})
        first = lg.store.get_item(("t",), "k")
        assert first is not None and first.expires_at is not None
        assert first.expires_at == pytest.approx(first.updated_at + 30, abs=1)
        time.sleep(0.4)
        item0 = lg.get(("t",), "k", refresh_ttl=False)
        assert lg.store.get_item(("t",), "k").expires_at == first.expires_at  # type: ignore[union-attr]
        item1 = lg.get(("t",), "k")  # refresh_on_read defaults to True
        after_get = lg.store.get_item(("t",), "k").expires_at  # type: ignore[union-attr]
        assert after_get > first.expires_at + 0.3
        lg.get(("t",), "k")  # restarted moments ago: no write
        assert lg.store.get_item(("t",), "k").expires_at == after_get  # type: ignore[union-attr]
        time.sleep(0.4)
        lg.search(("t",))
        assert lg.store.get_item(("t",), "k").expires_at > after_get  # type: ignore[union-attr]
        # A refresh is not an update: LangGraph's updated_at stays.
        assert item0 is not None and item1 is not None
        assert lg.get(("t",), "k").updated_at == item0.updated_at == item1.updated_at  # type: ignore[union-attr]
    with FileMemStore(str(tmp_path / "s"), ttl={"refresh_on_read": False}) as lg:
        before = lg.store.get_item(("t",), "k").expires_at  # type: ignore[union-attr]
        lg.get(("t",), "k")
        assert lg.store.get_item(("t",), "k").expires_at == before  # type: ignore[union-attr]
        lg.put(("t",), "no-ttl", {"v": 1}, ttl=None)
        assert lg.store.get_item(("t",), "no-ttl").expires_at is None  # type: ignore[union-attr]


def test_sweeper_thread_runs_and_stops_on_close(tmp_path: Path) -> None:
    lg = FileMemStore(str(tmp_path / "s"), ttl={"sweep_interval_minutes": 0.2 / 60})  # every 0.2 s
    try:
        lg.put(("t",), "k", {"v": 1}, ttl=0.1 / 60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _shard_holds(lg, b'"k":{'):
            time.sleep(0.1)
        assert not _shard_holds(lg, b'"k":{')
        assert any(t.name == "filemem-langgraph-ttl" for t in threading.enumerate())
    finally:
        lg.close()
    assert lg.stop_ttl_sweeper(timeout=5)


def _shard_holds(lg: FileMemStore, needle: bytes) -> bool:
    # Expired records are hidden at once; sweeping removes them from the files.
    return any(needle in p.read_bytes() for p in Path(lg.store.path).rglob("*.shard"))


# ------------------------------------------------------------------ vectors


def _indexed(tmp_path: Path, **extra: Any) -> FileMemStore:
    index = {"dims": DIMS, "embed": toy_embed, **extra}
    return FileMemStore(str(tmp_path / "v"), index=index)  # type: ignore[arg-type]


def test_without_an_index_query_is_ignored(lg: FileMemStore) -> None:
    lg.put(("d",), "a", {"text": "aaa"})
    lg.put(("d",), "b", {"text": "ooo"})
    got = lg.search(("d",), query="aaa")
    assert [(i.key, i.score) for i in got] == [("a", None), ("b", None)]


def test_semantic_search_ranks_by_filemem_vectors(tmp_path: Path) -> None:
    with _indexed(tmp_path, fields=["text"]) as lg:
        lg.put(("d",), "a", {"text": "aaaa", "kind": "x"})
        lg.put(("d",), "o", {"text": "oooo", "kind": "x"})
        lg.put(("d",), "skip", {"text": "aaaa", "kind": "y"}, index=False)
        lg.put(("d",), "other", {"text": "zzz", "title": "aaaaa"}, index=["title"])
        got = lg.search(("d",), query="aaa", limit=10)
        assert [i.key for i in got][:2] == ["other", "a"] or [i.key for i in got][:2] == ["a", "other"]
        assert got[0].score is not None and got[0].score > got[2].score  # type: ignore[operator]
        assert [(i.key, i.score) for i in got][-1] == ("skip", None)  # no vector: after the ranked ones
        assert [i.key for i in lg.search(("d",), query="ooo", filter={"kind": "x"}, limit=1)] == ["o"]
        # The vectors are filemem's: its own search answers the same query.
        hits = lg.store.search(("d",), vector=toy_embed(["aaa"])[0], limit=10)
        assert {h.item.key for h in hits} == {"a", "o", "other"}


def test_async_only_embed_is_refused(tmp_path: Path) -> None:
    async def aembed(texts: list[str]) -> list[list[float]]:
        return toy_embed(texts)

    with pytest.raises(filemem.InvalidValueError, match="async-only"):
        FileMemStore(str(tmp_path / "s"), index={"dims": DIMS, "embed": aembed})


def test_abatch_runs_store_work_off_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _indexed(tmp_path) as lg:
        seen: list[str] = []
        put = lg.store.put

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(threading.current_thread().name)
            return put(*args, **kwargs)

        monkeypatch.setattr(lg.store, "put", spy)

        async def main() -> list[Any]:
            await lg.aput(("a",), "k", {"text": "aaa"})
            await lg.aput(("a",), "j", {"text": "ooo"})
            return await lg.asearch(("a",), query="aa")

        got = asyncio.run(main())
        assert [i.key for i in got] == ["k", "j"]
        assert seen and threading.main_thread().name not in seen
        assert asyncio.run(lg.aget(("a",), "k")).value == {"text": "aaa"}  # type: ignore[union-attr]
        assert asyncio.run(lg.alist_namespaces()) == [("a",)]


# ------------------------------------------------------------------ update, sharing


def test_update_is_an_exact_read_modify_write(lg: FileMemStore) -> None:
    def bump(v: dict[str, Any] | None) -> dict[str, Any]:
        return {"n": (v or {"n": 0})["n"] + 1}

    threads = [threading.Thread(target=lambda: [lg.update(("c",), "hot", bump) for _ in range(25)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lg.get(("c",), "hot").value == {"n": 100}  # type: ignore[union-attr]
    assert asyncio.run(lg.aupdate(("c",), "hot", bump)) == {"n": 101}
    with pytest.raises(filemem.InvalidValueError):
        lg.update(("c",), "hot", lambda v: 5)  # type: ignore[arg-type,return-value]
    assert lg.get(("c",), "hot").value == {"n": 101}  # type: ignore[union-attr]


def test_a_given_store_is_shared_and_left_open(tmp_path: Path) -> None:
    with filemem.Store(str(tmp_path / "s")) as store:
        store.put(("plain",), "raw", 42)  # a record not written by the adapter
        lg = FileMemStore(store)
        lg.put(("lg",), "k", {"v": 1})
        lg.close()
        assert store.get(("lg",), "k") == {"value": {"v": 1}}
        again = FileMemStore(store)
        assert again.get(("plain",), "raw") is None  # not a LangGraph item: never served as one
        assert [i.key for i in again.search(())] == ["k"]


def test_update_keeps_or_restarts_the_ttl(lg: FileMemStore) -> None:
    lg.put(("c",), "t", {"n": 1}, ttl=60)
    before = lg.store.get_item(("c",), "t").expires_at  # type: ignore[union-attr]
    lg.update(("c",), "t", lambda v: {"n": 2})
    after = lg.store.get_item(("c",), "t")
    assert after is not None and after.expires_at == before and after.value["ttl"] == 60
    lg.update(("c",), "t", lambda v: {"n": 3}, ttl=120)
    again = lg.store.get_item(("c",), "t")
    assert again is not None and again.expires_at > before + 3000  # type: ignore[operator]
    assert again.value == {"value": {"n": 3}, "ttl": 120}


def test_foreign_records_never_take_a_place_in_a_ranked_page(tmp_path: Path) -> None:
    index = {"dims": DIMS, "embed": toy_embed}
    with filemem.Store(str(tmp_path / "s"), **FileMemStore.store_options(index)) as store:  # type: ignore[arg-type]
        store.put(("d",), "foreign", {"text": "aaaa"})  # has a vector, is not a LangGraph item
        lg = FileMemStore(store, index=index)  # type: ignore[arg-type]
        lg.put(("d",), "mine", {"text": "ooo"})
        got = lg.search(("d",), query="aaaa", limit=1)
        assert [(i.key, i.score is not None) for i in got] == [("mine", True)]


def test_namespace_labels_with_slash_and_percent_round_trip(lg: FileMemStore) -> None:
    ns = ("tenant/acme", "50%", "x%2F")
    lg.put(ns, "k/1", {"v": 1})
    lg.put(("tenant",), "k", {"v": 2})
    assert lg.get(ns, "k/1").namespace == ns  # type: ignore[union-attr]
    assert [i.namespace for i in lg.search(("tenant/acme",))] == [ns]
    assert lg.list_namespaces() == [("tenant",), ns]
    assert lg.list_namespaces(prefix=("tenant/acme", "*")) == [ns]
    assert lg.update(ns, "k/1", lambda v: {"v": (v or {"v": 0})["v"] + 1}) == {"v": 2}
