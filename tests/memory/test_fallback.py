"""The scan fallback (for stores without search) agrees with Store.search on random data."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import filemem
from filemem.memory._core import run_sync
from filemem.memory._search import fallback_search

WORDS = ["login", "timeout", "cart", "search", "tea", "paris", "deploy"]
records = st.lists(
    st.fixed_dictionaries(
        {
            "n": st.integers(0, 5),
            "tag": st.sampled_from(["a", "b", "c"]),
            "text": st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
        }
    ),
    min_size=1,
    max_size=25,
)
filters = st.one_of(
    st.none(),
    st.fixed_dictionaries({"tag": st.sampled_from(["a", "b"])}),
    st.fixed_dictionaries({"n": st.fixed_dictionaries({"$gte": st.integers(0, 5)})}),
    st.fixed_dictionaries({"n": st.fixed_dictionaries({"$ne": st.integers(0, 5)})}),
    st.fixed_dictionaries({"tag": st.fixed_dictionaries({"$in": st.lists(st.sampled_from("abc"), max_size=2)})}),
    st.just({"missing": {"$ne": 1}}),  # a missing field matches $ne only
    st.just({"n": True}),  # a bool never equals a number
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=records, flt=filters, query=st.one_of(st.none(), st.sampled_from(WORDS)))
def test_fallback_matches_store_search(tmp_path: Path, recs: list[dict[str, Any]], flt: Any, query: str | None) -> None:
    # One fresh directory per hypothesis example, inside this test's tmp_path.
    with tempfile.TemporaryDirectory(dir=tmp_path) as d, filemem.Store(d + "/s", durability="flush") as store:
        for i, r in enumerate(recs):
            store.put(("p", "ns", str(i % 3)), f"k{i:02d}", r)
        want = store.search(("p",), query=query, filter=flt, limit=100)
        got = run_sync(store, fallback_search(("p",), query, flt, 100, 0))
        assert {(h.namespace, h.key) for h in got} == {(h.item.namespace, h.item.key) for h in want}
        if query:  # same BM25: same scores
            theirs = {(h.item.namespace, h.item.key): h.score for h in want}
            for h in got:
                assert abs(h.score - theirs[(h.namespace, h.key)]) < 1e-6
