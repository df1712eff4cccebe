"""Search on the server: bit-for-bit the file store's scores, the postings table's upkeep, check() (issue 16)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import filemem
from filemem import Store
from tests.conformance.test_search_ranked import QUERIES, _fill
from tests.search.test_vectors import toy_embed

pytestmark = pytest.mark.postgres


def _admin(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _page(s: Store, **kw: Any) -> list[tuple[tuple[str, ...], str, float]]:
    return [(h.item.namespace, h.item.key, h.score) for h in s.search(None, limit=10, **kw)]


@pytest.mark.parametrize(
    "opts", [{}, {"embed": toy_embed}, {"index_fields": ["text"]}], ids=["bm25", "hybrid", "fields"]
)
def test_file_and_server_rank_bit_for_bit(pg_url: str, tmp_path: Path, opts: dict[str, Any]) -> None:
    """The same top-10 keys and scores, compared with ==, as the file store's on the same data."""
    with Store(str(tmp_path / "s"), **opts) as fs, Store(pg_url, **opts) as ps:
        for s in (fs, ps):
            _fill(s, 21, 300)
        for query in QUERIES:
            for flt in (None, {"n": {"$gte": 2}}):
                kw: dict[str, Any] = {"query": query, "filter": flt}
                if "embed" in opts:
                    kw["vector"] = query
                assert _page(fs, **kw) == _page(ps, **kw), (query, flt)


def test_postings_commit_with_the_records_and_go_with_them(pg_url: str) -> None:
    with Store(pg_url) as s:
        s.put("n", "a", {"text": "Deploy the API, deploy!"})
        assert sorted(_admin(pg_url, "SELECT term, key, tf FROM filemem_postings")) == [
            ("api", "a", 1),
            ("deploy", "a", 2),
            ("the", "a", 1),
        ]
        assert _admin(pg_url, "SELECT key, len FROM filemem_doclens") == [("a", 4)]
        s.put("n", "a", {"text": "sky"})
        assert _admin(pg_url, "SELECT term FROM filemem_postings") == [("sky",)]
        with pytest.raises(filemem.ConflictError), s.batch() as b:
            b.put("n", "b", {"text": "lost"})
            b.put("n", "a", {"text": "lost"}, if_version=999_999)
        assert _admin(pg_url, "SELECT term FROM filemem_postings") == [("sky",)]
        s.delete("n", "a")
        assert _admin(pg_url, "SELECT count(*) FROM filemem_postings") == [(0,)]
        assert _admin(pg_url, "SELECT count(*) FROM filemem_doclens") == [(0,)]


def test_the_sweeper_drops_postings_with_expired_records(pg_url: str) -> None:
    with Store(pg_url, embed=toy_embed) as s:
        s.put("n", "gone", {"text": "api"}, ttl=0.2)
        s.put("n", "kept", {"text": "api"})
        s.search(None, vector="api")  # vectors for both
        time.sleep(0.4)
        assert [h.item.key for h in s.search(None, query="api")] == ["kept"]
        assert s.compact()["expired_dropped"] == 1
        for table in ("filemem_postings", "filemem_doclens", "filemem_vectors"):
            assert _admin(pg_url, f"SELECT DISTINCT key FROM {table}") == [("kept",)]
        assert s.check() == []


def test_check_reports_and_fixes_orphaned_postings(pg_url: str) -> None:
    with Store(pg_url) as s:
        s.put("n", "a", {"text": "api"})
        _admin(pg_url, "INSERT INTO filemem_postings VALUES ('api', 'n', 'ghost', 1), ('x', 'n', 'ghost', 2)")
        _admin(pg_url, "INSERT INTO filemem_doclens VALUES ('n', 'ghost', 3)")
        assert [h.item.key for h in s.search(None, query="api")] == ["a"]  # an orphan is never served
        found = {f.details["table"]: f.details["rows"] for f in s.check() if f.code == "orphaned-postings"}
        assert found == {"filemem_postings": 2, "filemem_doclens": 1}
        assert _admin(pg_url, "SELECT count(*) FROM filemem_postings") == [(3,)]  # check alone changes nothing
        assert all(f.fixed for f in s.check(fix=True))
        assert s.check() == []
        assert _admin(pg_url, "SELECT key FROM filemem_postings") == [("a",)]


def test_a_store_made_before_the_index_gets_it_at_the_next_read_write_open(pg_url: str, tmp_path: Path) -> None:
    with Store(pg_url) as s:
        _fill(s, 4, 60)
    _admin(pg_url, "DROP TABLE filemem_postings, filemem_doclens, filemem_vectors")  # as an older filemem left it
    with Store(pg_url, readonly=True) as ro:
        with pytest.raises(filemem.UnsupportedFeatureError, match="read-write once"):
            ro.search(None, query="api")
        assert len(ro.search(None, filter={"tag": "x"}, limit=1000)) > 0  # filters need no index
    with Store(pg_url) as s, Store(str(tmp_path / "f")) as fs:
        _fill(fs, 4, 60)
        for query in QUERIES:
            assert _page(s, query=query) == _page(fs, query=query)


def test_two_processes_writing_keep_the_index_exact(pg_url: str, spawn_ctx: Any, tmp_path: Path) -> None:
    """Writers in other processes race on the same keys; afterwards the postings are exactly the records'."""
    from tests.helpers import reap
    from tests.pg._search_children import rewrite_child

    filemem.Store(pg_url).close()
    procs = [spawn_ctx.Process(target=rewrite_child, args=(pg_url, seed, 150)) for seed in range(3)]
    try:
        for p in procs:
            p.start()
        reap(procs, timeout=120)
    finally:
        reap(procs, timeout=1)
    assert all(p.exitcode == 0 for p in procs)
    with Store(pg_url) as s, Store(str(tmp_path / "f")) as fs:
        with fs.batch() as b:
            for ns in s.list_namespaces():
                for it in s.items(ns):
                    b.put(ns, it.key, it.value)
        for query in ["api", "sky blue", "login deploy timeout"]:
            want = [(ns, k) for ns, k, _ in _page(fs, query=query)]
            got = [(ns, k) for ns, k, _ in _page(s, query=query)]
            assert got == want
            assert [sc for *_, sc in _page(s, query=query)] == [sc for *_, sc in _page(fs, query=query)]
        assert s.check() == []
