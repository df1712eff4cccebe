"""Codecs round-trip what they accept and refuse the rest with InvalidValueError."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import filemem
from filemem import CorruptShardError, InvalidValueError
from filemem.codecs import Codec, JsonCodec, MsgpackCodec, available_codecs, get_codec
from tests.unit.test_store import snapshot_tree

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_json_round_trip(value: object) -> None:
    c = JsonCodec()
    assert c.decode(c.encode(value)) == value


@given(msgpack_values)
def test_msgpack_round_trip(value: object) -> None:
    c = MsgpackCodec()
    assert c.decode(c.encode(value)) == value


@given(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=10))
def test_map_join_and_split(mapping: dict[str, object]) -> None:
    for c in (JsonCodec(), MsgpackCodec()):
        pairs = [c.encode_pair(k, v) for k, v in mapping.items()]
        body = c.join_map(pairs)
        assert c.decode(body) == mapping
        split = c.split_map(body, len(mapping))
        assert split is None or split == pairs


@pytest.mark.parametrize("value", [object(), {1, 2}, math.nan, math.inf, {1: "int key"}, {"a": [{2: 3}]}, b"bytes"])
def test_json_refuses(value: object) -> None:
    with pytest.raises(InvalidValueError):
        JsonCodec().encode(value)


@pytest.mark.parametrize("value", [object(), {1, 2}, 2**70])
def test_msgpack_refuses(value: object) -> None:
    with pytest.raises(InvalidValueError):
        MsgpackCodec().encode(value)


def test_decode_errors_are_corrupt_shard() -> None:
    with pytest.raises(CorruptShardError):
        JsonCodec().decode(b"{nope")
    with pytest.raises(CorruptShardError):
        MsgpackCodec().decode(b"\xc1")


def test_registry() -> None:
    assert available_codecs() == ["json", "msgpack"]
    assert isinstance(get_codec("json"), Codec)
    c = MsgpackCodec()
    assert get_codec(c) is c
    with pytest.raises(InvalidValueError):
        get_codec("pickle")


@pytest.mark.parametrize("value", [{(1, 2): "x"}, {"ok": [{frozenset({1}): 1}]}, [{(1,): None}]])
def test_msgpack_refuses_map_keys_that_would_not_read_back(value: object, tmp_path: Path) -> None:
    """A tuple key packs as an array and reads back as an unhashable list: the shard would be unreadable."""
    with pytest.raises(filemem.InvalidValueError, match="msgpack map keys"):
        MsgpackCodec().encode(value)
    with filemem.Store(str(tmp_path / "s"), codec="msgpack") as store:
        store.put("ns", "neighbour", {1: "int keys are fine", b"k": "so are bytes", None: 0})
        before = snapshot_tree(store.path)
        with pytest.raises(filemem.InvalidValueError):
            store.put("ns", "bad", value)
        assert snapshot_tree(store.path) == before
        with filemem.Store(store.path) as other:
            assert other.get("ns", "neighbour") == {1: "int keys are fine", b"k": "so are bytes", None: 0}
