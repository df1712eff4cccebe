"""Codecs round-trip what they accept and refuse the rest with InvalidValueError."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filemem import CorruptShardError, InvalidValueError
from filemem.codecs import Codec, JsonCodec, MsgpackCodec, available_codecs, get_codec

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
