"""The JSON codec on orjson behaves exactly as on the stdlib json alone (issue 13).

The codec takes orjson's fast path only where the two libraries agree, and
falls back to ``json`` everywhere else. These tests compare the two engines
side by side: the same refusals with the same error types, the same values
read back (type-exact: an int stays an int), and every body the stdlib
reads decodes to the same value.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filemem.codecs import JsonCodec

orjson = pytest.importorskip("orjson")


def fast_codec() -> JsonCodec:
    c = JsonCodec()
    assert c.fast is orjson, "orjson is a dependency: the fast path must be on"
    return c


def stdlib_codec() -> JsonCodec:
    c = JsonCodec()
    c.fast = None
    return c


def same(a: Any, b: Any) -> bool:
    """Deep equality that also compares types (1 == 1.0 == True in Python) and NaN to itself."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return bool(a == b)


class StrSub(str):
    pass


class IntSub(int):
    pass


class FloatSub(float):
    pass


class DictSub(dict):  # type: ignore[type-arg]
    pass


class ListSub(list):  # type: ignore[type-arg]
    pass


class Plain(enum.Enum):
    A = "a"


class Number(enum.IntEnum):
    ONE = 1


class Text(enum.StrEnum):
    A = "a"


@dataclasses.dataclass
class Point:
    x: int


def outcome(codec: JsonCodec, value: Any) -> tuple[str, Any]:
    """("ok", the value read back by the stdlib) or ("error", the exception type)."""
    try:
        data = codec.encode(value)
    except Exception as exc:
        return "error", type(exc)
    return "ok", json.loads(data)


leaves = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.floats()  # NaN and infinities too
    | st.text()  # lone surrogates too
    | st.sampled_from(
        [StrSub("s"), IntSub(7), FloatSub(1.5), Number.ONE, Text.A, Plain.A, uuid.UUID(int=1), Point(1), b"x"]
    )
    | st.sampled_from([datetime.datetime(2026, 1, 1), datetime.date(2026, 1, 1), {1, 2}, 2**64, -(2**63) - 1])
)
keys = st.text(max_size=6) | st.sampled_from([StrSub("k"), 1, 1.5, None, True, (1, 2)])
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(keys, children, max_size=4)
        | st.dictionaries(st.text(max_size=4), children, max_size=3).map(DictSub)
        | st.lists(children, max_size=3).map(ListSub)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_encode_accepts_and_refuses_exactly_as_the_stdlib(value: Any) -> None:
    fast, std = outcome(fast_codec(), value), outcome(stdlib_codec(), value)
    assert fast[0] == std[0], (value, fast, std)
    if fast[0] == "ok":
        assert same(fast[1], std[1]), (value, fast, std)
    else:
        assert fast[1] is std[1]


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text().filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(plain_values)
def test_round_trip_matches_the_stdlib(value: Any) -> None:
    fast = fast_codec()
    data = fast.encode(value)
    assert same(json.loads(data), json.loads(json.dumps(value))), "a person's stdlib reads it back identically"
    assert same(fast.decode(data), json.loads(data))
    pair = fast.encode_pair("k", value)
    assert same(fast.decode(fast.join_map([pair])), {"k": json.loads(json.dumps(value))})


@settings(max_examples=400, deadline=None)
@given(values, st.booleans(), st.sampled_from([None, 1]))
def test_decode_reads_whatever_the_stdlib_reads_the_same_way(value: Any, ascii_only: bool, indent: int | None) -> None:
    """Bodies written by any stdlib json (old stores, other tools): both engines give the same value or error."""
    try:
        text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    except (TypeError, ValueError):
        return
    data = text.encode("utf-8", "surrogatepass")
    got = []
    for codec in (fast_codec(), stdlib_codec()):
        try:
            got.append(("ok", codec.decode(data)))
        except Exception as exc:
            got.append(("error", type(exc)))
    assert got[0][0] == got[1][0]
    assert same(got[0][1], got[1][1]) if got[0][0] == "ok" else got[0][1] is got[1][1]


@pytest.mark.parametrize(
    "data",
    [
        b"123456789012345678901234567890",
        b"-9223372036854775809",
        b"18446744073709551616",
        b'{"id":"1234567890123456789012"}',
        b"NaN",
        b"[Infinity,-Infinity]",
        b"1e400",
        b'"\\ud800"',
        b'{"\\udc00":1}',
        b"\xef\xbb\xbf{}",
        '{"a":1}'.encode("utf-16"),
        b'{"a":1,"a":2}',
        b"-0",
        b"-0.0",
        b" [1.5e-7, 0.1, 1E5] ",
        b'"\\u2028\xe2\x80\xa9"',
        b"\xed\xa0\x80",
        b"{nope",
        b"",
        b"[" * 3000 + b"]" * 3000,
    ],
)
def test_decode_edge_cases_match_the_stdlib(data: bytes) -> None:
    got = []
    for codec in (fast_codec(), stdlib_codec()):
        try:
            got.append(("ok", codec.decode(data)))
        except Exception as exc:
            got.append(("error", type(exc)))
    assert got[0][0] == got[1][0], got
    assert same(got[0][1], got[1][1]) if got[0][0] == "ok" else got[0][1] is got[1][1]


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        [math.inf],
        {"a": -math.inf},
        {1: "int key"},
        {(1, 2): "tuple key"},
        {None: 1},
        "\ud800",
        {"\udc00": 1},
        uuid.UUID(int=5),
        datetime.datetime(2026, 1, 1),
        Point(1),
        Plain.A,
        {1, 2},
        b"bytes",
        object(),
    ],
)
def test_same_refusals_same_error_types(value: Any) -> None:
    fast, std = outcome(fast_codec(), value), outcome(stdlib_codec(), value)
    assert fast[0] == std[0] == "error", (fast, std)
    assert fast[1] is std[1]


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        [2**70, {"big": -(2**100)}],
        (1, (2, 3)),
        StrSub("x"),
        {StrSub("k"): 1},
        DictSub(a=1),
        ListSub([1]),
        IntSub(3),
        FloatSub(1.5),
        Number.ONE,
        Text.A,
        [[[[]]]],
    ],
)
def test_accepted_values_read_back_the_same(value: Any) -> None:
    fast, std = fast_codec(), stdlib_codec()
    assert same(fast.decode(fast.encode(value)), std.decode(std.encode(value)))
    assert same(json.loads(fast.encode(value)), json.loads(std.encode(value)))


def test_cycles_are_refused_as_before() -> None:
    loop: list[Any] = []
    loop.append(loop)
    fast, std = outcome(fast_codec(), loop), outcome(stdlib_codec(), loop)
    assert fast == std and fast[0] == "error"
