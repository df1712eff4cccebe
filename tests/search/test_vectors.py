"""Vector search with a toy deterministic embedding, and hybrid (keyword + vector) ranking."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import filemem
from tests.helpers import settle

from ._reference import assert_same, reference

DIM = 8


def toy_embed(text: str) -> list[float]:
    """Bag of words hashed into 8 buckets: deterministic in every process."""
    vec = [0.0] * DIM
    for word in text.lower().split():
        h = hashlib.sha256(word.encode()).digest()
        vec[h[0] % DIM] += 1.0 + h[1] / 255
    return vec


CALLS: list[str] = []


def counting_embed(text: str) -> list[float]:
    CALLS.append(text)
    return toy_embed(text)


WORDS = ["api", "login", "deploy", "timeout", "sky", "blue", "red", "cache"]


def test_vector_and_hybrid_rankings(store_path: str) -> None:
    with filemem.Store(store_path, embed=toy_embed, watch="off") as s:
        s.put("v", "a", {"text": "api login"})
        s.put("v", "b", {"text": "sky blue"})
        s.put("v", "c", {"text": "api api deploy"})
        s.put("v", "n", {"count": 3})  # no text: no vector, never a vector hit
        hits = s.search("v", vector="api login")
        assert hits[0].item.key == "a" and hits[0].score == pytest.approx(1.0)
        assert {h.item.key for h in hits} == {"a", "b", "c"}
        assert_same(hits, reference(s, ("v",), vector=toy_embed("api login"), embed=toy_embed), 0, 10, s)
        both = s.search("v", query="deploy", vector="api login")
        assert_same(both, reference(s, ("v",), "deploy", vector=toy_embed("api login"), embed=toy_embed), 0, 10, s)
        raw = s.search("v", vector=toy_embed("sky"), filter={"text": {"$ne": "sky blue"}})
        assert "b" not in {h.item.key for h in raw}
        with pytest.raises(filemem.InvalidQueryError):
            s.search("v", vector=[1.0, 2.0])  # wrong dimension
        with pytest.raises(filemem.InvalidQueryError):
            s.search("v", vector=[0.0] * DIM)
    with filemem.Store(store_path, watch="off") as plain, pytest.raises(filemem.InvalidQueryError):
        plain.search("v", vector=[1.0] * DIM)  # no embed=: no vectors


def test_vectors_are_shared_and_unchanged_records_not_embedded_again(store_path: str) -> None:
    with filemem.Store(store_path, embed=counting_embed, embed_id="toy-v1", watch="off") as s:
        for i in range(20):
            s.put("v", f"k{i}", f"{WORDS[i % 8]} {WORDS[(i * 3) % 8]}")
        CALLS.clear()
        s.search("v", vector="api")
        assert len(CALLS) == 21  # 20 records + the query text
        CALLS.clear()
        s.put("v", "k3", "cache cache")  # re-indexed when it reaches its shard: one record embedded
        settle(s)  # format 2: that is the fold
        s.search("v", vector="api")
        assert CALLS == ["cache cache", "api"]  # only the changed record, then the query
    CALLS.clear()
    with filemem.Store(store_path, embed=counting_embed, embed_id="toy-v1", watch="off") as fresh:
        fresh.search("v", vector="api")
        assert CALLS == ["api"]  # vectors came from the index file
    with filemem.Store(store_path, embed=counting_embed, embed_id="toy-v2", watch="off") as other:
        CALLS.clear()
        other.search("v", vector="api")
        assert len(CALLS) == 21  # another model: its own index, never the v1 vectors


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.lists(st.sampled_from(WORDS), max_size=4).map(" ".join), max_size=25),
    q=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join),
    query=st.none() | st.sampled_from(WORDS),
    limit=st.integers(1, 8),
    offset=st.integers(0, 4),
)
def test_vector_search_matches_reference(texts: list[str], q: str, query: str | None, limit: int, offset: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        filemem.Store(f"{tmp}/s", embed=toy_embed, shard_max_bytes=1024, watch="off") as s,
    ):
        for i, t in enumerate(texts):
            s.put(("v", str(i % 3)), f"k{i}", {"text": t, "i": i})
        got = s.search("v", query=query, vector=q, limit=limit, offset=offset)
        qv: Sequence[float] = toy_embed(q)
        want: Any = reference(s, ("v",), query, vector=qv, embed=toy_embed)
        assert_same(got, want, offset, limit, s)


def test_a_failing_embed_never_fails_a_committed_write(store_path: str) -> None:
    state = {"fail": False}

    def flaky(text: str) -> list[float]:
        if state["fail"]:
            raise RuntimeError("model down")
        return toy_embed(text)

    with filemem.Store(store_path, embed=flaky, watch="off") as s:
        s.put("v", "a", "api")
        s.search("v", vector="api")
        state["fail"] = True
        s.put("v", "b", "login")  # re-indexing on write fails: the put still succeeds
        settle(s)  # format 2: the fold re-indexes (and the fold succeeds too)
        assert s.get("v", "b") == "login"
        assert s._searcher.counters["index_write_errors"] == 1
        with pytest.raises(RuntimeError):
            s.search("v", vector=[1.0] * DIM)  # a search that must embed reports the failure
        state["fail"] = False
        assert {h.item.key for h in s.search("v", vector="login")} == {"a", "b"}
