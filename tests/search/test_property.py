"""Search against a brute-force reference on random data (hypothesis).

Each example builds a store with small shards (so splits happen), runs random
searches, changes records, and searches again from the same Store (warm
index) and from a second Store (fresh: reads the shared index files).
"""

from __future__ import annotations

import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import filemem

from ._reference import assert_same, reference

WORDS = ["api", "login", "deploy", "timeout", "sky", "blue", "Red", "LOGIN", "déjà", "x1"]
NAMESPACES = [("a",), ("a", "x"), ("ab",), ("b",)]
PREFIXES: list[Any] = [None, ("a",), ("a", "x"), ("ab",), ("b",), ("c",)]

text = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
scalar = st.one_of(
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False),
    st.booleans(),
    st.sampled_from(["x", "y", "api"]),
    st.none(),
)
value = st.one_of(
    st.fixed_dictionaries(
        {"text": text},
        optional={
            "n": scalar,
            "tag": st.sampled_from(["x", "y", "z"]),
            "meta": st.fixed_dictionaries({}, optional={"lang": st.sampled_from(["en", "fr"]), "score": scalar}),
            "tags": st.lists(st.sampled_from(WORDS), max_size=3),
        },
    ),
    text,
    st.integers(0, 5),
)
record = st.tuples(st.sampled_from(NAMESPACES), st.sampled_from([f"k{i}" for i in range(12)]), value)

op_cond = st.one_of(
    scalar,
    st.dictionaries(
        st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
        st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y"])),
        min_size=1,
        max_size=2,
    ),
    st.builds(lambda xs: {"$in": xs}, st.lists(scalar, max_size=3)),
)
flt = st.none() | st.dictionaries(
    st.sampled_from(["n", "tag", "meta.lang", "meta.score", "missing", "text"]), op_cond, max_size=2
)
query = st.none() | st.lists(st.sampled_from([*WORDS, "nothing"]), min_size=1, max_size=3).map(" ".join)
search = st.tuples(st.sampled_from(PREFIXES), query, flt, st.integers(0, 8), st.integers(0, 5))


def _check(store: filemem.Store, s: tuple[Any, ...]) -> None:
    prefix, q, f, limit, offset = s
    got = store.search(prefix, query=q, filter=f, limit=limit, offset=offset)
    assert_same(got, reference(store, prefix, q, f), offset, limit, store)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(record, max_size=40),
    changes=st.lists(record, max_size=10),
    deletes=st.lists(st.tuples(st.sampled_from(NAMESPACES), st.sampled_from([f"k{i}" for i in range(12)]))),
    searches=st.lists(search, min_size=1, max_size=4),
    codec=st.sampled_from(["json", "msgpack"]),
)
def test_search_matches_reference(
    records: list[Any], changes: list[Any], deletes: list[Any], searches: list[Any], codec: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/store"
        with filemem.Store(path, codec=codec, shard_max_bytes=1024, watch="off") as store:
            with store.batch() as b:
                for ns, key, v in records:
                    b.put(ns, key, v)
            for s in searches:
                _check(store, s)
            for ns, key, v in changes:
                store.put(ns, key, v)
            for ns, key in deletes:
                store.delete(ns, key)
            for s in searches:
                _check(store, s)  # warm: segments of changed shards must be rebuilt
            with filemem.Store(path, watch="off") as fresh:
                for s in searches:
                    _check(fresh, s)  # fresh: from the index files
            assert store.check() == []
