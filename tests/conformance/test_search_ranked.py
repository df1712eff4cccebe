"""Keyword (BM25) and vector search, the same on every backend (issue 16), checked against the brute-force reference.

The reference (tests/search/_reference.py) reads every record with
``items()`` and scores from the definitions in docs/search.md; each backend's
search must give the same page. ``test_file_and_server_rank_bit_for_bit``
(tests/pg) additionally compares the two backends' scores with ``==``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
from filemem import Store
from tests.search._reference import assert_same, reference
from tests.search.test_vectors import toy_embed

WORDS = ["api", "login", "deploy", "timeout", "sky", "blue", "Red", "LOGIN", "déjà", "x1", "cache", "retry"]
NAMESPACES: list[tuple[str, ...]] = [("a",), ("a", "x"), ("a-x",), ("ab",), ("b",), ("a", "x", "deep")]
PREFIXES: list[Any] = [None, ("a",), ("a", "x"), ("ab",), ("b",), ("c",)]
QUERIES = ["api", "login deploy", "LOGIN timeout sky", "déjà x1", "nothing", "retry retry cache", "api, the api!"]
FILTERS: list[dict[str, Any] | None] = [
    None,
    {"n": {"$gt": 3}},
    {"tag": "x"},
    {"meta.lang": {"$in": ["en"]}},
    {"n": {"$lte": 2}, "tag": {"$ne": "y"}},
]


def _value(rnd: random.Random) -> Any:
    text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 8)))
    kind = rnd.random()
    if kind < 0.15:
        return text  # a bare string is text too
    if kind < 0.2:
        return rnd.randint(0, 5)  # no text at all
    value: dict[str, Any] = {"text": text, "n": rnd.randint(0, 6), "tag": rnd.choice("xyz")}
    if rnd.random() < 0.5:
        value["meta"] = {"lang": rnd.choice(["en", "fr"]), "note": rnd.choice(WORDS)}
    return value


def _fill(store: Store, seed: int, count: int = 120) -> None:
    rnd = random.Random(seed)
    with store.batch() as b:
        for i in range(count):
            b.put(rnd.choice(NAMESPACES), f"k{i}", _value(rnd))


@pytest.fixture
def filled(any_store: Store) -> Store:
    _fill(any_store, 7)
    return any_store


@pytest.mark.parametrize("query", QUERIES)
def test_bm25_with_filters_prefixes_and_pages_matches_the_reference(filled: Store, query: str) -> None:
    for prefix in PREFIXES:
        for flt in FILTERS:
            full = reference(filled, prefix, query, flt)
            for offset, limit in ((0, 10), (3, 4), (0, 1000), (len(full), 5)):
                got = filled.search(prefix, query=query, filter=flt, limit=limit, offset=offset)
                assert_same(got, full, offset, limit, filled)


def test_the_index_follows_puts_updates_deletes_and_batches(filled: Store) -> None:
    rnd = random.Random(11)
    for round_ in range(4):
        with filled.batch() as b:
            for _ in range(15):
                key = f"k{rnd.randrange(140)}"
                ns = rnd.choice(NAMESPACES)
                if rnd.random() < 0.3:
                    b.delete(ns, key)
                else:
                    b.put(ns, key, _value(rnd))
        filled.update(("a",), "counter", lambda v, r=round_: {"text": f"api {r}", "n": (v or {}).get("n", 0) + 1})
        for query in QUERIES[:4]:
            full = reference(filled, None, query)
            assert_same(filled.search(None, query=query, limit=10), full, 0, 10, filled)


def test_a_failed_batch_leaves_the_index_as_it_was(filled: Store) -> None:
    before = [(h.item.key, h.score) for h in filled.search(None, query="api login", limit=50)]
    with pytest.raises(filemem.ConflictError), filled.batch() as b:
        b.put(("a",), "new", {"text": "api api api login"})
        b.put(("a",), "k0", {"text": "api"}, if_version=10**9)
    assert [(h.item.key, h.score) for h in filled.search(None, query="api login", limit=50)] == before


def test_expired_records_are_neither_hits_nor_counted(any_store: Store) -> None:
    any_store.put("t", "short", {"text": "api api"}, ttl=0.3)
    any_store.put("t", "long", {"text": "api sky"})
    any_store.put("t", "other", {"text": "blue"})
    assert {h.item.key for h in any_store.search("t", query="api")} == {"short", "long"}
    import time

    time.sleep(0.5)
    hits = any_store.search("t", query="api")
    assert [h.item.key for h in hits] == ["long"]
    assert_same(hits, reference(any_store, "t", "api"), 0, 10, any_store)


def test_whole_segment_prefixes_never_leak(any_store: Store) -> None:
    any_store.put(("tenant", "acme"), "a", {"text": "secret plan"})
    any_store.put(("tenant", "acme-corp"), "b", {"text": "secret plan"})
    any_store.put(("tenant", "acme", "sub"), "c", {"text": "secret"})
    got = {(h.item.namespace, h.item.key) for h in any_store.search(("tenant", "acme"), query="secret")}
    assert got == {(("tenant", "acme"), "a"), (("tenant", "acme", "sub"), "c")}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"query": 3}, filemem.InvalidQueryError),
        ({"query": "x", "limit": -1}, filemem.InvalidQueryError),
        ({"query": "x", "offset": -2}, filemem.InvalidQueryError),
        ({"query": "x", "filter": {"n": {"$regex": "a"}}}, filemem.InvalidQueryError),
        ({"vector": [1.0, 0.0]}, filemem.InvalidQueryError),  # no embed= on this store
    ],
)
def test_bad_queries_raise_and_write_nothing(any_store: Store, kwargs: dict[str, Any], error: type[Exception]) -> None:
    any_store.put("q", "a", {"text": "x"})
    with pytest.raises(error):
        any_store.search(None, **kwargs)
    assert any_store.list_namespaces() == [("q",)] and any_store.keys("q") == ["a"]


def test_empty_query_and_zero_limit(filled: Store) -> None:
    assert filled.search(None, query="!!! ,,,") == []
    assert filled.search(None, query="api", limit=0) == []


@pytest.fixture
def embedded(location: str) -> Iterator[Store]:
    s = Store(location, embed=toy_embed)
    _fill(s, 3, 80)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("query", [None, "api login", "sky"])
def test_vector_and_hybrid_search_match_the_reference(embedded: Store, query: str | None) -> None:
    for text in ("api login", "blue sky cache"):
        vec = toy_embed(text)
        for prefix in (None, ("a",)):
            for flt in (None, {"n": {"$gt": 2}}):
                full = reference(embedded, prefix, query, flt, vec, toy_embed)
                got = embedded.search(prefix, query=query, filter=flt, vector=vec, limit=10)
                assert_same(got, full, 0, 10, embedded)
                assert_same(
                    embedded.search(prefix, query=query, filter=flt, vector=text, limit=10), full, 0, 10, embedded
                )


def test_vectors_follow_writes_and_readonly_stores_search_too(embedded: Store, location: str) -> None:
    embedded.search(None, vector="api")  # embeds everything once
    embedded.put(("a",), "k1", {"text": "sky sky blue"})
    embedded.delete(("a",), "k2")
    vec = toy_embed("sky blue")
    assert_same(
        embedded.search(None, vector=vec, limit=10),
        reference(embedded, None, None, None, vec, toy_embed),
        0,
        10,
        embedded,
    )
    with Store(location, embed=toy_embed, readonly=True) as ro:
        assert_same(ro.search(None, vector=vec, limit=10), reference(ro, None, None, None, vec, toy_embed), 0, 10, ro)


def test_vector_of_the_wrong_dimension_is_refused(embedded: Store) -> None:
    with pytest.raises(filemem.InvalidQueryError):
        embedded.search(None, vector=[1.0, 2.0, 3.0])


@pytest.fixture
def fielded(location: str) -> Iterator[Store]:
    s = Store(location, index_fields=["meta.note", "text"])
    _fill(s, 5, 80)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("query", QUERIES[:4])
def test_index_fields_rank_only_those_fields(fielded: Store, query: str) -> None:
    fields = ["meta.note", "text"]
    for prefix in (None, ("a",)):
        for flt in (None, {"tag": "x"}):
            full = reference(fielded, prefix, query, flt, fields=fields)
            assert_same(fielded.search(prefix, query=query, filter=flt, limit=10), full, 0, 10, fielded)
