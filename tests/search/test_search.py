"""Store.search behaviour: ranking, prefixes, expiry, paging, the shared index files, check()."""

from __future__ import annotations

import glob
import os
import threading
import time
from typing import Any

import pytest

import filemem
from tests.helpers import settle

from ..helpers import file_mode
from ._reference import assert_same, reference


def idx_files(store: filemem.Store) -> list[str]:
    return sorted(glob.glob(os.path.join(store.path, "index", "**", "*.idx"), recursive=True))


def test_bm25_ranks_and_prefix_matches_whole_segments(store: filemem.Store) -> None:
    store.put("acme/ep", "1", {"task": "deploy the api", "ok": True})
    store.put("acme/ep", "2", {"task": "api api timeout", "notes": ["api"]})
    store.put("acme/facts", "3", "the sky is blue")
    store.put("acme-corp", "4", "api")
    hits = store.search("acme", query="API")
    assert [h.item.key for h in hits] == ["2", "1"]
    assert hits[0].score > hits[1].score > 0
    assert hits[0].item.namespace == ("acme", "ep")
    assert_same(hits, reference(store, ("acme",), "API"), 0, 10, store)
    assert [h.item.key for h in store.search(None, "api")] == ["2", "4", "1"]
    assert store.search("acme", query="!!!") == []  # no word: matches nothing
    assert store.search("nobody", query="api") == []
    every = store.search(("acme",), limit=100)
    assert [(h.item.key, h.score) for h in every] == [("1", 1.0), ("2", 1.0), ("3", 1.0)]


def test_paging(store: filemem.Store) -> None:
    for i in range(30):
        store.put("p", f"k{i:02d}", {"text": "word " * (i % 7 + 1) + "other " * (i % 3)})
    full = reference(store, ("p",), "word other")
    seen = []
    for offset in range(0, 30, 7):
        page = store.search("p", "word other", limit=7, offset=offset)
        assert_same(page, full, offset, 7, store)
        seen += [h.item.key for h in page]
    assert sorted(seen) == sorted(f"k{i:02d}" for i in range(30))
    assert store.search("p", "word", limit=0) == []


def test_index_fields_restrict_the_text(store_path: str) -> None:
    with filemem.Store(store_path, index_fields=["title", "meta.summary"], watch="off") as s:
        s.put("n", "a", {"title": "login", "body": "deploy", "meta": {"summary": ["deploy now"]}})
        s.put("n", "b", {"title": "x", "body": "login"})
        assert [h.item.key for h in s.search("n", "login")] == ["a"]
        assert [h.item.key for h in s.search("n", "deploy")] == ["a"]
        assert_same(
            s.search("n", "login deploy"),
            reference(s, ("n",), "login deploy", fields=["title", "meta.summary"]),
            0,
            10,
            s,
        )
    with pytest.raises(filemem.InvalidQueryError):
        filemem.Store(store_path, index_fields=["a..b"])


def test_expired_records_are_not_found(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("e", "short", "api", ttl=60)
    store.put("e", "long", "api deploy")
    assert {h.item.key for h in store.search("e", "api")} == {"short", "long"}
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 120)  # the short one has expired
    hits = store.search("e", "api")
    assert [h.item.key for h in hits] == ["long"]
    assert_same(hits, reference(store, ("e",), "api"), 0, 10, store)  # N counts live records only


def test_fresh_store_reuses_the_index_files(store_path: str) -> None:
    with filemem.Store(store_path, shard_max_bytes=1024, watch="off") as s:
        with s.batch() as b:
            for i in range(200):
                b.put("big", f"k{i}", {"text": f"word{i % 13} common"})
        settle(s)  # format 2: index files hold shards' segments; the log's records reach shards at the fold
        first = s.search("big", "word3 common", limit=5)
        assert s._searcher.counters["segments_built"] > 1
        assert idx_files(s)
        assert all(file_mode(f) == 0o600 for f in idx_files(s))
        assert file_mode(os.path.dirname(idx_files(s)[0])) == 0o700
    with filemem.Store(store_path, watch="off") as fresh:
        again = fresh.search("big", "word3 common", limit=5)
        assert [(h.item.key, h.score) for h in again] == [(h.item.key, h.score) for h in first]
        c = fresh._searcher.counters
        assert c["segments_built"] == 0 and c["segments_from_file"] > 1 and c["index_writes"] == 0
        assert fresh.check() == []


def test_a_stale_entry_is_detected_by_shard_identity(store_path: str) -> None:
    with filemem.Store(store_path, shard_max_bytes=1024, watch="off") as s:
        for i in range(40):
            s.put("n", f"k{i}", f"alpha {i}")
        settle(s)  # format 2: shards' segments need the records in the shards (the fold)
        s.search("n", "alpha")
        built = s._searcher.counters["segments_built"]
        assert built > 1
    with filemem.Store(store_path, watch="off", index_on_write=False) as writer:  # leaves the index alone
        writer.put("n", "k7", "beta only")
    with filemem.Store(store_path, watch="off") as fresh:
        hits = fresh.search("n", "beta")
        assert [h.item.key for h in hits] == ["k7"]
        assert "k7" not in {h.item.key for h in fresh.search("n", "alpha", limit=100)}
        assert fresh._searcher.counters["segments_built"] == 1  # only the changed shard
        assert_same(fresh.search("n", "alpha 7", limit=50), reference(fresh, ("n",), "alpha 7"), 0, 50, fresh)


def test_writers_update_an_existing_index(store_path: str) -> None:
    with filemem.Store(store_path, watch="off") as s:
        s.put("nobody-searches", "k", "text")
        s.put("n", "a", "alpha")
        s.search("n", "alpha")
        # Re-indexed when the write reaches its shard (format 2: at the fold);
        # the file waits (rewritten at most once a second).
        s.put("n", "b", "alpha beta")
        settle(s)
        s.put("n", "c", "gamma")
        settle(s)
        assert s._searcher.counters["segments_built_on_write"] == 2
        assert not os.path.isdir(os.path.join(s.path, "index", "nobody-searches"))
    # close() wrote what was pending
    with filemem.Store(store_path, watch="off") as fresh:
        assert [h.item.key for h in fresh.search("n", "beta")] == ["b"]
        assert [h.item.key for h in fresh.search("n", "gamma")] == ["c"]
        assert fresh._searcher.counters["segments_built"] == 0


def _search_in_child(path: str, out: str) -> None:
    with filemem.Store(path, watch="off") as s:
        keys = [h.item.key for h in s.search("n", "alpha")]
    with open(out, "w") as fh:
        fh.write(",".join(keys))


def test_forked_child_searches(store_path: str, tmp_path: Any) -> None:
    import multiprocessing as mp

    with filemem.Store(store_path, watch="off") as s:
        s.put("n", "a", "alpha")
        s.search("n", "alpha")
        out = str(tmp_path / "out")

        def child() -> None:
            s.put("n", "b", "alpha two")  # the inherited Store keeps working in the child
            _search_in_child(store_path, out)
            with open(out, "a") as fh:
                fh.write("|" + ",".join(h.item.key for h in s.search("n", "alpha")))

        p = mp.get_context("fork").Process(target=child)
        p.start()
        p.join(30)
        assert p.exitcode == 0
        with open(out) as fh:
            assert fh.read() == "a,b|a,b"
        assert [h.item.key for h in s.search("n", "alpha")] == ["a", "b"]


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip", "empty"])
def test_a_damaged_index_is_rebuilt_reported_and_fixed(store_path: str, damage: str) -> None:
    with filemem.Store(store_path, shard_max_bytes=1024, watch="off") as s:
        for i in range(60):
            s.put("n", f"k{i}", f"alpha {i % 5}")
        settle(s)  # format 2: index files hold shards' segments (the fold puts the records there)
        s.search("n", "alpha")
        path = idx_files(s)[0]
        assert len(idx_files(s)) > 1  # many shards: the index is spread over bucket files
    with open(path, "rb") as fh:
        data = fh.read()
    bad = {
        "garbage": b"not an index\n",
        "truncate": data[: len(data) // 2],
        "flip": data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:],
        "empty": b"",
    }[damage]
    with open(path, "wb") as fh:
        fh.write(bad)
    with filemem.Store(store_path, watch="off") as s:
        found = s.check()
        assert [f.code for f in found] == ["corrupt-index"] and found[0].path == path
        fixed = s.check(fix=True)
        assert fixed[0].fixed and not os.path.exists(path)
        assert s.check() == []
    with open(path, "wb") as fh:
        fh.write(bad)
    with filemem.Store(store_path, watch="off") as s:
        hits = s.search("n", "alpha 3", limit=100)
        assert_same(hits, reference(s, ("n",), "alpha 3"), 0, 100, s)
        assert s._searcher.counters["index_files_damaged"] == 1
        assert s.check() == []  # rewritten whole by the search


def test_check_removes_a_dead_writers_temp_file(store: filemem.Store) -> None:
    store.put("n", "a", "alpha")
    settle(store)  # format 2: an index file needs the record in its shard (the fold)
    store.search("n", "alpha")
    (path,) = idx_files(store)
    tmp = path + ".tmp-99999999-abcd"
    with open(tmp, "wb") as fh:
        fh.write(b"half")
    assert [f.code for f in store.check()] == ["temp-file"]
    assert store.check(fix=True)[0].fixed and not os.path.exists(tmp)
    assert store.check() == []


def test_readonly_store_searches_without_writing(store_path: str) -> None:
    with filemem.Store(store_path) as s:
        s.put("n", "a", "alpha")
    with filemem.Store(store_path, readonly=True) as ro:
        assert [h.item.key for h in ro.search("n", "alpha")] == ["a"]
    assert not os.path.exists(os.path.join(store_path, "index"))


def test_threads_search_while_others_write(store_path: str) -> None:
    with filemem.Store(store_path, shard_max_bytes=1024, durability="flush", watch="off") as s:
        errors: list[BaseException] = []

        def write(t: int) -> None:
            try:
                for i in range(40):
                    s.put("n", f"t{t}-{i}", f"alpha t{t}")
            except BaseException as exc:
                errors.append(exc)

        def search() -> None:
            try:
                for _ in range(20):
                    for h in s.search("n", "alpha", limit=5):
                        assert "alpha" in h.item.value
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(t,)) for t in range(2)]
        threads += [threading.Thread(target=search) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(s.search("n", "alpha", limit=1000)) == 80
        assert_same(s.search("n", "t1", limit=100), reference(s, ("n",), "t1"), 0, 100, s)


def test_closed_store_refuses(store_path: str) -> None:
    s = filemem.Store(store_path)
    s.close()
    with pytest.raises(filemem.StoreClosedError):
        s.search("n", "x")


def test_large_term_counts_use_wide_postings(store_path: str) -> None:
    with filemem.Store(store_path, watch="off") as s:
        s.put("w", "big", "alpha " * 70_000)  # a count past uint16
        s.put("w", "small", "alpha beta")
        settle(s)  # format 2: the index file holds shards' segments (the fold)
        hits = s.search("w", "alpha")
        assert [h.item.key for h in hits] == ["big", "small"]
        assert_same(hits, reference(s, ("w",), "alpha"), 0, 10, s)
    with filemem.Store(store_path, watch="off") as fresh:
        again = fresh.search("w", "alpha")
        assert fresh._searcher.counters["segments_from_file"] >= 1
        assert [(h.item.key, h.score) for h in again] == [(h.item.key, h.score) for h in hits]
