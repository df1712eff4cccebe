"""Vectors through pgvector when the server has it, else exact cosine over real[] (issue 16).

Every ranking test runs on both servers (``vec_url``: Debian's, without
pgvector, and the pgserver wheel's, with it) and compares pages with the file
store's, scores with ``==``: pgvector's float4 ``<=>`` only orders the rows
and stops the read early; the scores are computed exactly, as on files.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from pathlib import Path
from typing import Any

import psycopg
import pytest

import filemem
from filemem import Store
from tests.conformance.test_search_ranked import FILTERS, PREFIXES, QUERIES, _fill
from tests.search.test_vectors import toy_embed

pytestmark = pytest.mark.postgres

_WHOLE_SUITE_ON_PGVECTOR = bool(os.environ.get("FILEMEM_PG_BINDIR"))


def _admin(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _page(s: Store, prefix: Any = None, limit: int = 10, offset: int = 0, **kw: Any) -> list[tuple[Any, str, float]]:
    return [(h.item.namespace, h.item.key, h.score) for h in s.search(prefix, limit=limit, offset=offset, **kw)]


def _near_embed(text: str) -> list[float]:
    """64 dimensions, every vector a tiny perturbation of one direction: cosines differ in the 7th digit.

    Their float4 cosines (pgvector's) order them differently from the exact
    ones, which is what the margin in ``_pgvector.cosine_margin`` is for.
    """
    h = hashlib.sha256(text.encode()).digest()
    rnd = random.Random(h)
    return [1.0 + (i % 7) * 0.01 + rnd.choice((0.0, 0.0, 3e-7, -3e-7, 1e-6)) for i in range(64)]


def _tiny_embed(text: str) -> list[float]:
    """toy_embed scaled to 1e-20: float4 squares underflow, so the early stop must not be trusted."""
    return [x * 1e-20 for x in toy_embed(text)]


def _mixed_embed(text: str) -> list[float]:
    """A broken embedder: the vector's length depends on the text."""
    return toy_embed(text)[: 4 + len(text) % 2]


def test_the_server_with_pgvector_uses_it(pgvector_url: str) -> None:
    with Store(pgvector_url, embed=toy_embed) as s:
        assert s.stats()["vectors"].startswith("pgvector 0.")
        _fill(s, 3, 60)
        s.search(None, vector="api")  # embeds every record once
        got = _admin(
            pgvector_url,
            "SELECT count(*), count(pvec), count(vec), min(format_type(a.atttypid, a.atttypmod))"
            " FROM filemem_vectors, pg_attribute a WHERE a.attrelid = 'filemem_vectors'::regclass"
            " AND a.attname = 'pvec'",
        )
        total, pvec, vec, typ = got[0]
        assert total == 60 and pvec > 0 and vec == 0, got  # the vector column only
        assert typ.endswith("vector"), typ
        # The extension went to public, not into the store's schema (dropping a store must not drop it).
        ext = _admin(pgvector_url, "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname='vector'")
        assert ext == [("public",)]


@pytest.mark.skipif(_WHOLE_SUITE_ON_PGVECTOR, reason="FILEMEM_PG_BINDIR points pg_url at the pgvector server")
def test_a_server_without_pgvector_keeps_real_arrays(pg_url: str) -> None:
    with Store(pg_url, embed=toy_embed) as s:
        assert s.stats()["vectors"] == "real[] (the server has no pgvector)"
        _fill(s, 3, 30)
        s.search(None, vector="api")
        assert _admin(pg_url, "SELECT count(vec) > 0 FROM filemem_vectors") == [(True,)]
        assert not _admin(
            pg_url, "SELECT 1 FROM pg_attribute WHERE attrelid = 'filemem_vectors'::regclass AND attname = 'pvec'"
        )


@pytest.mark.parametrize("opts", [{"embed": toy_embed}, {"embed": toy_embed, "index_fields": ["text"]}])
def test_vector_pages_match_the_file_store_bit_for_bit(vec_url: str, tmp_path: Path, opts: dict[str, Any]) -> None:
    """Every prefix, filter and page, vector-only and hybrid: the same keys in the same order, scores ==."""
    with Store(str(tmp_path / "f"), **opts) as fs, Store(vec_url, **opts) as ps:
        for s in (fs, ps):
            _fill(s, 11, 200)
        for text in QUERIES[:4]:
            for prefix in PREFIXES:
                for flt in FILTERS:
                    for offset, limit in ((0, 1), (0, 10), (3, 4), (0, 1000)):
                        kw = {"vector": text, "filter": flt}
                        want = _page(fs, prefix, limit, offset, **kw)
                        assert _page(ps, prefix, limit, offset, **kw) == want, (text, prefix, flt, offset, limit)
                    kw = {"vector": text, "query": text, "filter": flt}
                    assert _page(ps, prefix, **kw) == _page(fs, prefix, **kw), (text, prefix, flt)


def _spread_embed(text: str) -> list[float]:
    """32 Gaussian dimensions seeded by the text: cosines far apart, so pgvector's order can stop the read."""
    rnd = random.Random(hashlib.sha256(text.encode()).digest())
    return [rnd.gauss(0.0, 1.0) for _ in range(32)]


def _docs(s: Store, n: int) -> None:
    with s.batch() as b:
        for i in range(n):
            b.put(("docs", str(i % 3)), f"k{i}", {"text": f"doc {i}", "n": i % 5})


def test_near_ties_rank_exactly(vec_url: str, tmp_path: Path) -> None:
    """Cosines 1e-7 apart (inside float4's error, so pgvector's order differs): still the file store's pages."""
    with Store(str(tmp_path / "f"), embed=_near_embed) as fs, Store(vec_url, embed=_near_embed) as ps:
        for s in (fs, ps):
            _docs(s, 600)
        for q in ("doc 7", "doc 123", "query"):
            for offset, limit in ((0, 1), (0, 5), (2, 8), (0, 40)):
                for flt in (None, {"n": {"$gt": 2}}):
                    kw = {"vector": q, "filter": flt}
                    assert _page(ps, None, limit, offset, **kw) == _page(fs, None, limit, offset, **kw)


def test_pgvector_stops_reading_once_the_page_is_certain(vec_url: str, tmp_path: Path) -> None:
    with Store(str(tmp_path / "f"), embed=_spread_embed) as fs, Store(vec_url, embed=_spread_embed) as ps:
        for s in (fs, ps):
            _docs(s, 1500)
        ps.search(None, vector="warm")  # every vector stored
        for q, prefix, flt in (("doc 99", None, None), ("x", ("docs", "1"), None), ("y", None, {"n": 3})):
            for offset, limit in ((0, 1), (0, 5), (4, 10)):
                before = ps.stats()["vector_rows_read"]
                got = _page(ps, prefix, limit, offset, vector=q, filter=flt)
                read = ps.stats()["vector_rows_read"] - before
                assert got == _page(fs, prefix, limit, offset, vector=q, filter=flt)
                in_scope = 500 if prefix is not None else 300 if flt is not None else 1500  # the SQL narrowing
                if ps.stats()["vectors"].startswith("pgvector"):
                    assert read < in_scope // 2, read  # stopped once nothing unread could place
                else:
                    assert read == in_scope, read  # real[]: every vector is read and scored here


def test_tiny_vectors_are_read_in_full_and_still_match(vec_url: str, tmp_path: Path) -> None:
    with Store(str(tmp_path / "f"), embed=_tiny_embed) as fs, Store(vec_url, embed=_tiny_embed) as ps:
        for s in (fs, ps):
            _fill(s, 5, 80)
        before = ps.stats()["vector_rows_read"]
        for text in QUERIES[:3]:
            assert _page(ps, None, 3, vector=text) == _page(fs, None, 3, vector=text)
        assert ps.stats()["vector_rows_read"] - before >= 3 * 70  # no early stop on underflowing norms


def test_dimension_errors_as_on_files(vec_url: str) -> None:
    with Store(vec_url, embed=toy_embed) as s:
        _fill(s, 2, 20)
        with pytest.raises(filemem.InvalidQueryError, match="dimensions"):
            s.search(None, vector=[1.0, 2.0, 3.0])
    with Store(vec_url, embed=_mixed_embed, embed_id="mixed") as s:
        _fill(s, 2, 20)
        # Which error depends on the first vector met (real[]); never a silent page.
        with pytest.raises((filemem.InvalidValueError, filemem.InvalidQueryError), match="dimensions"):
            s.search(None, vector=[1.0] * 4)


def test_a_role_that_may_not_create_it_falls_back_until_the_dba_does(pgvector_server_url: str) -> None:
    """pgvector is not a trusted extension: a plain role keeps real[]; after CREATE EXTENSION it switches.

    Vectors written as real[] keep serving (read as ``vec::vector``), and the
    pages stay the same across the switch.
    """
    role = f"r_{os.getpid()}_{random.randrange(10**6)}"
    db = f"d_{role}"
    admin = pgvector_server_url
    _admin(admin, f'CREATE ROLE "{role}" LOGIN')
    _admin(admin, f'CREATE DATABASE "{db}" OWNER "{role}"')
    url = admin.replace("postgresql://postgres@", f"postgresql://{role}@").rsplit("/", 1)[0] + f"/{db}"
    su_url = admin.rsplit("/", 1)[0] + f"/{db}"
    try:
        with Store(url, embed=toy_embed) as s:
            assert s.stats()["vectors"].startswith("real[] (CREATE EXTENSION vector was refused"), s.stats()["vectors"]
            _fill(s, 9, 100)
            before = [_page(s, None, 10, vector=t) for t in QUERIES[:3]]
        assert _admin(su_url, "SELECT count(vec) FROM filemem_vectors")[0][0] > 0
        _admin(su_url, "CREATE EXTENSION vector")  # the DBA's one step (docs/scale-out.md)
        with Store(url, embed=toy_embed) as s:
            assert s.stats()["vectors"].startswith("pgvector"), s.stats()["vectors"]
            assert [_page(s, None, 10, vector=t) for t in QUERIES[:3]] == before
            s.put(("a",), "new", {"text": "api api sky"})
            after = _page(s, None, 10, vector="api")
        assert any(k == "new" for _, k, _ in after)
        assert _admin(su_url, "SELECT count(pvec), count(vec) > 0 FROM filemem_vectors")[0][1]
    finally:
        _admin(admin, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        _admin(admin, f'DROP ROLE IF EXISTS "{role}"')


def test_the_margin_covers_float4_cosines() -> None:
    """pgvector's arithmetic, replayed in float4 with numpy-free struct rounding, stays inside the margin."""
    import struct

    from filemem._backends.postgres._pgvector import cosine_margin

    def f4(x: float) -> float:
        return float(struct.unpack("f", struct.pack("f", x))[0])

    rnd = random.Random(5)
    for dim in (2, 8, 64, 300):
        for _ in range(40):
            a = [f4(rnd.gauss(0, 1)) for _ in range(dim)]
            b = [f4(rnd.gauss(0, 1) * rnd.choice((1e-3, 1.0, 1e3))) for _ in range(dim)]
            dot = na = nb = 0.0
            for x, y in zip(a, b, strict=True):
                dot, na, nb = f4(dot + f4(x * y)), f4(na + f4(x * x)), f4(nb + f4(y * y))
            server = dot / math.sqrt(na * nb)
            exact = math.fsum(x * y for x, y in zip(a, b, strict=True)) / (
                math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
            )
            assert abs(server - exact) <= cosine_margin(dim), (dim, server - exact)


def _open_and_search(url: str, name: str, out: Any) -> None:
    with Store(url, embed=toy_embed) as s:
        s.put(("p",), name, {"text": f"api {name} sky"})
        keys = [h.item.key for h in s.search(None, vector="api sky", limit=50)]
        out.put((name, s.stats()["vectors"], keys))


def test_processes_opening_a_fresh_database_at_once_create_it_once(pgvector_server_url: str, spawn_ctx: Any) -> None:
    """CREATE EXTENSION and the column run under the index's advisory lock: racing openers all end on pgvector."""
    db = f"race_{os.getpid()}_{random.randrange(10**6)}"
    _admin(pgvector_server_url, f'CREATE DATABASE "{db}"')
    url = pgvector_server_url.rsplit("/", 1)[0] + f"/{db}"
    out = spawn_ctx.Queue()
    procs = [spawn_ctx.Process(target=_open_and_search, args=(url, f"w{i}", out)) for i in range(4)]
    try:
        for p in procs:
            p.start()
        got = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert all(v.startswith("pgvector") for _, v, _ in got), got
        assert all(name in keys for name, _, keys in got)  # each saw at least its own record
        assert _admin(url, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == [(1,)]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)
        _admin(pgvector_server_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_a_read_only_store_embeds_in_memory_and_matches(pgvector_url: str, tmp_path: Path) -> None:
    with Store(str(tmp_path / "f"), embed=toy_embed) as fs, Store(pgvector_url, embed=toy_embed) as ps:
        for s in (fs, ps):
            _fill(s, 4, 50)
    with Store(str(tmp_path / "f"), embed=toy_embed) as fs, Store(pgvector_url, embed=toy_embed, readonly=True) as ro:
        assert ro.stats()["vectors"] == "real[] (read-only: embeds in memory)"
        assert _page(ro, None, 5, vector="api") == _page(fs, None, 5, vector="api")
