"""Filter semantics and bad input (InvalidQueryError, nothing read or written)."""

from __future__ import annotations

import os
from typing import Any

import pytest

import filemem
from filemem import InvalidQueryError


@pytest.fixture
def filled(store: filemem.Store) -> filemem.Store:
    store.put("t", "a", {"n": 1, "tag": "x", "meta": {"lang": "en", "score": 0.9}, "ok": True})
    store.put("t", "b", {"n": 2.5, "tag": "y", "meta": {"lang": "fr", "score": 0.2}, "ok": False})
    store.put("t", "c", {"n": "3", "tag": ["x", "y"], "ok": 1})
    store.put("t", "d", "plain text")
    return store


def keys(store: filemem.Store, flt: dict[str, Any]) -> list[str]:
    return [h.item.key for h in store.search("t", filter=flt, limit=100)]


@pytest.mark.parametrize(
    ("flt", "want"),
    [
        ({"tag": "x"}, ["a"]),
        ({"tag": ["x", "y"]}, ["c"]),  # a list equals a list, element-wise
        ({"n": {"$gt": 1}}, ["b"]),  # "3" is a string: never ordered against a number
        ({"n": {"$gte": 1, "$lt": 2.5}}, ["a"]),
        ({"n": {"$lte": 2.5}}, ["a", "b"]),
        ({"n": {"$gt": "2"}}, ["c"]),
        ({"n": {"$ne": 1}}, ["b", "c", "d"]),  # a missing field is "not equal"
        ({"n": {"$in": [1, "3"]}}, ["a", "c"]),
        ({"meta.lang": "en"}, ["a"]),
        ({"meta.score": {"$lt": 0.5}}, ["b"]),
        ({"meta": {"lang": "fr", "score": 0.2}}, ["b"]),  # a dict without $ keys: equality
        ({"ok": True}, ["a"]),  # True is not 1
        ({"ok": 1}, ["c"]),
        ({"ok": {"$eq": False}}, ["b"]),
        ({"missing": None}, []),
        ({}, ["a", "b", "c", "d"]),
    ],
)
def test_filter_semantics(filled: filemem.Store, flt: dict[str, Any], want: list[str]) -> None:
    assert keys(filled, flt) == want


@pytest.mark.parametrize(
    "flt",
    [
        {"n": {"$regex": "x"}},
        {"n": {"$in": 3}},
        {"n": {"$gt": [1]}},
        {"n": {"$gt": 1, "plain": 2}},
        {"$or": [{"n": 1}]},
        {"": 1},
        {"a..b": 1},
        {3: 1},
        ["n", 1],
    ],
)
def test_bad_filters_raise_and_touch_nothing(filled: filemem.Store, flt: Any) -> None:
    before = sorted(os.listdir(filled.path))
    with pytest.raises(InvalidQueryError) as info:
        filled.search("t", filter=flt)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, filemem.FileMemError)
    assert sorted(os.listdir(filled.path)) == before  # no index written for a refused search


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": -1}, {"offset": -2}, {"limit": True}, {"limit": 1.5}, {"query": 3}, {"vector": [1.0, 2.0]}],
)
def test_bad_arguments(filled: filemem.Store, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidQueryError):
        filled.search("t", **kwargs)


def test_error_pickles() -> None:
    import pickle

    exc = InvalidQueryError("bad", field="n")
    back = pickle.loads(pickle.dumps(exc))
    assert back.field == "n" and str(back) == "bad"
