"""A batch's plain puts are queued as their codec bytes (no copy of the value, no Op) and mean what they meant.

``Batch.put`` without ``ttl`` or ``if_version`` on a file store keeps only
(namespace, key, codec, bytes) and commits through ``Engine.apply_puts``, as
the collector does (issue 13: a 1,000-record batch spent about 2 us a record
copying values and building Ops, half of it in the garbage collector). The
value is taken when it is queued, refused then if it cannot be stored, and
read back as its codec round trip, on both store formats.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

import filemem
from filemem._engine import MAX_DEPTH, check_nesting, copy_value

NS = ("agent", "facts")


def _nested(depth: int, flat_leaf: bool) -> Any:
    value: Any = {"leaf": 1} if flat_leaf else {"leaf": [1]}
    for i in range(depth):
        value = {"d": value, "n": i} if i % 2 else [value, i]
    return value


def _raises(fn: Any, value: Any) -> bool:
    try:
        fn(value)
    except filemem.InvalidValueError:
        return True
    return False


@pytest.mark.parametrize("depth", [0, 1, MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 5])
@pytest.mark.parametrize("flat_leaf", [True, False])
def test_check_nesting_refuses_exactly_what_copy_value_refuses(depth: int, flat_leaf: bool) -> None:
    value = _nested(depth, flat_leaf)
    assert _raises(check_nesting, value) == _raises(copy_value, value)


def test_check_nesting_agrees_with_copy_value_on_random_shapes() -> None:
    rng = random.Random(13)
    seen = set()
    for _ in range(300):
        depth = rng.choice([MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, rng.randrange(0, MAX_DEPTH + 3)])
        value: Any = rng.choice([1, "s", None, b"x", {"a": 1}, [1, 2], ()])
        for _ in range(depth):
            kind = rng.choice(["dict", "list", "tuple", "wide"])
            if kind == "dict":
                value = {"k": value}
            elif kind == "list":
                value = [value]
            elif kind == "tuple":
                value = (value, 1)
            else:
                value = {"a": 1, "b": value, "c": [1, 2]}
        got = _raises(check_nesting, value)
        assert got == _raises(copy_value, value)
        seen.add(got)
    assert seen == {True, False}


class _ValuesLie(dict):  # type: ignore[type-arg]
    """A dict subclass whose values() hides its nesting (copy_value walks items())."""

    def values(self) -> Any:
        return [1]


def test_check_nesting_walks_a_dict_subclass_as_copy_value_does() -> None:
    value = _ValuesLie(a=_nested(MAX_DEPTH + 2, False))
    assert _raises(copy_value, value)
    assert _raises(check_nesting, value)


@pytest.mark.parametrize("fmt", ["1", "2"])
def test_a_plain_put_takes_its_value_when_queued(store_path: str, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILEMEM_STORE_FORMAT", fmt)
    with filemem.Store(store_path) as store:
        value = {"n": 1, "tags": ["a"]}
        with store.batch() as b:
            b.put(NS, "k", value)
            value["n"] = 2  # after queueing: not what was stored
            value["tags"].append("b")
            b.put(NS, "t", (1, 2))
        assert store.get(NS, "k") == {"n": 1, "tags": ["a"]}
        assert store.get(NS, "t") == [1, 2]  # the codec's round trip, as a plain put() stores it
        assert b.results[0] == store.get_item(NS, "k").version  # type: ignore[union-attr]


@pytest.mark.parametrize("fmt", ["1", "2"])
def test_plain_and_other_writes_of_one_batch_apply_in_order(
    store_path: str, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FILEMEM_STORE_FORMAT", fmt)
    with filemem.Store(store_path) as store:
        store.put(NS, "x", {"n": 0})
        with store.batch() as b:
            b.put(NS, "a", {"n": 1})
            b.delete(NS, "a")
            b.put(NS, "a", {"n": 3})
            b.update(NS, "x", lambda v: {"n": v["n"] + 10})
            b.put(NS, "x", {"n": 99}, ttl=3600)
            b.put(NS, "y", {"n": 5})
        assert store.get(NS, "a") == {"n": 3}
        assert store.get(NS, "x") == {"n": 99}
        assert store.get(NS, "y") == {"n": 5}
        assert b.results[1] is True and b.results[3] == {"n": 10}
    with filemem.Store(store_path, readonly=True) as r:
        assert {k: r.get(NS, k) for k in r.keys(NS)} == {"a": {"n": 3}, "x": {"n": 99}, "y": {"n": 5}}


def test_a_bad_plain_put_is_refused_when_queued_and_nothing_is_written(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        with store.batch() as b:
            b.put(NS, "ok", {"n": 1})
            with pytest.raises(filemem.InvalidValueError):
                b.put(NS, "deep", _nested(MAX_DEPTH + 2, False))
            with pytest.raises(filemem.InvalidValueError):
                b.put(NS, "nan", float("nan"))
            with pytest.raises(filemem.InvalidKeyError):
                b.put(NS, "", {"n": 1})
        assert store.keys(NS) == ["ok"]


def test_a_plain_put_repeated_in_one_batch_keeps_the_last(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        with store.batch() as b:
            for i in range(5):
                b.put(NS, "k", {"n": i})
        assert store.get(NS, "k") == {"n": 4}
        item = store.get_item(NS, "k")
        assert item is not None and len(b.results) == 5 and b.results[-1] == item.version
