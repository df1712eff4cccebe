"""Keys and namespaces: validation and escaping that can never collide or escape."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filemem import InvalidKeyError
from filemem._names import escape_segment, hash_bits, normalize_namespace, unescape_segment, validate_key


@pytest.mark.parametrize("key", ["", "a/b", "a\x00b", ".", "..", "x" * 1025, 3, None])
def test_bad_keys(key: object) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


@pytest.mark.parametrize(
    "ns", ["", (), ("a", ""), ("a", ".."), ("..",), ("a\x00",), "a//b", "../x", ("a", 3), 5, ("x" * 300,)]
)
def test_bad_namespaces(ns: object) -> None:
    with pytest.raises(InvalidKeyError):
        normalize_namespace(ns)


def test_string_and_tuple_forms() -> None:
    assert (
        normalize_namespace("a/b") == ("a", "b") == normalize_namespace(("a", "b")) == normalize_namespace(["a", "b"])
    )


def test_escaped_names_are_safe() -> None:
    for seg in ["..x", "a/b", "A", "ü", "con", " ", "%41"]:
        name = escape_segment(seg)
        assert "/" not in name and "." not in name and name not in (".", "..")
        assert unescape_segment(name) == seg


def test_case_is_kept_apart() -> None:
    assert escape_segment("Acme").lower() != escape_segment("acme").lower()


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_escaping_is_injective(a: str, b: str) -> None:
    if a != b:
        assert escape_segment(a) != escape_segment(b)
    assert unescape_segment(escape_segment(a)) == a


def test_non_canonical_names_are_foreign() -> None:
    assert unescape_segment("%61") is None  # "a" escaped needlessly
    assert unescape_segment("a.b") is None
    assert unescape_segment("%zz") is None


def test_hash_bits_is_stable() -> None:
    # Part of the on-disk format: must never change.
    assert hash_bits("ep-42") == hash_bits("ep-42")
    assert len(hash_bits("x")) == 64 and set(hash_bits("x")) <= {"0", "1"}
    assert hash_bits("hello") == format(
        int.from_bytes(__import__("hashlib").blake2b(b"hello", digest_size=8).digest(), "big"), "064b"
    )


def test_builtin_digests_equal_hashlibs() -> None:
    """Shard names, index ids and lock ids are on-disk format: the builtin digests must be hashlib's bytes."""
    import hashlib
    import os

    from filemem._digest import blake2b, sha256

    for n in (0, 1, 7, 64, 1000):
        raw = os.urandom(n)
        for size in (8, 10, 12, 16):
            assert blake2b(raw, digest_size=size).digest() == hashlib.blake2b(raw, digest_size=size).digest()
        assert sha256(raw).hexdigest() == hashlib.sha256(raw).hexdigest()
