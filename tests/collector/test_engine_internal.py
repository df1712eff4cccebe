"""The two small engine/checker additions the collector needs: internal namespaces, check hooks."""

from __future__ import annotations

import dataclasses
import json
import os
import zlib

import pytest

import filemem
from filemem._check import _EXTRA_CHECKS, register_check
from filemem._collector._apply import _PUT_ARGS
from filemem._engine import INTERNAL_NS, UNDECODED, Engine, Op, _parse_intent
from filemem._names import normalize_namespace
from filemem._types import Finding
from tests.helpers import settle


def test_internal_namespace_lives_under_internal_and_is_never_listed(store: filemem.Store) -> None:
    eng = store._engine
    ns = (INTERNAL_NS, "collector", "j1-ab")
    assert eng.ns_dir(ns) == os.path.join(store.path, "internal", "collector", "j1-ab")
    # One atomic batch across a user namespace and an internal one.
    eng.apply([Op(("user",), "k", "put", 1), Op(ns, "applied", "put", {"ranges": [[1, 1]]})])
    assert eng.read(ns, "applied")["value"] == {"ranges": [[1, 1]]}
    assert store.list_namespaces() == [("user",)]
    settle(store)  # format 2: the shard files (and their directory) are written at the fold
    assert os.path.isdir(os.path.join(store.path, "internal", "collector", "j1-ab"))
    assert store.check() == []


def test_users_cannot_name_an_internal_namespace() -> None:
    with pytest.raises(filemem.InvalidKeyError):
        normalize_namespace((INTERNAL_NS, "collector"))


def _intent(renames: list[list[str]]) -> bytes:
    body = json.dumps({"renames": renames}).encode()
    return b"%08x\n" % zlib.crc32(body) + body


def test_batch_intents_may_name_internal_shards_but_nothing_outside() -> None:
    ok = "internal/collector/j1/s.shard"
    assert _parse_intent(_intent([[ok + ".tmp-1-ab", ok]])) is not None
    assert _parse_intent(_intent([["ns/a/s.shard.tmp-1-ab", "ns/a/s.shard"]])) is not None
    bad = "internal/../etc/s.shard"
    assert _parse_intent(_intent([[bad + ".tmp-1-ab", bad]])) is None
    assert _parse_intent(_intent([["other/s.shard.tmp-1", "other/s.shard"]])) is None


def test_register_check_adds_findings(store: filemem.Store) -> None:
    def extra(engine: Engine, fix: bool) -> list[Finding]:
        return [Finding("extra", engine.root, f"fix={fix}", severity="info")]

    register_check(extra)
    register_check(extra)  # once only
    try:
        assert [(f.code, f.message) for f in store.check(fix=True)] == [("extra", "fix=True")]
    finally:
        _EXTRA_CHECKS.remove(extra)
    assert store.check() == []


def test_the_collectors_positional_put_is_the_keyword_one() -> None:
    """The apply thread builds its puts positionally (issue 13): a field added to Op must not shift them."""
    positional = Op(("a",), "k", "put", UNDECODED, *_PUT_ARGS, ("json", b"1"))
    assert positional == Op(("a",), "k", "put", UNDECODED, encoded=("json", b"1"))
    assert [f.name for f in dataclasses.fields(Op)][-1] == "encoded"
