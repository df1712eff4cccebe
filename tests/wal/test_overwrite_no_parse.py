"""An overwrite of a put not folded yet resolves its carried created_at without decoding the key's shard (issue 13).

A plain put of a new key logs ``created_at`` as carried over; overwriting it
before the fold needs that time, from the key's shard record (none, for a new
key). Each such overwrite parsed the key's shard: in a store of 100,000
records, one cold parse per warm put, half its CPU. The shard is now read and
checked (header, checksum) and searched for the key's bytes
(``filemem._shard.lacks_key``); only a shard that may hold the key is
decoded. These tests fail if the overwrite parses a shard that cannot hold the
key, if ``lacks_key`` calls "absent" a shard that holds the key in any form a
writer may have used, or if ``created_at`` comes out wrong.
"""

from __future__ import annotations

import json
import zlib

import pytest

import filemem
from filemem._errors import CorruptShardError
from filemem._shard import Shard, encode_shard, lacks_key
from filemem.codecs import get_codec
from tests.helpers import settle

NS = ("over", "ns")


def _filled(path: str, codec: str, n: int = 300) -> None:
    with filemem.Store(path, codec=codec) as s:
        with s.batch() as b:
            for i in range(n):
                b.put(NS, f"k{i}", {"i": i, "text": "x" * 50})
        settle(s)


def test_overwriting_new_keys_before_the_fold_parses_no_shard(store_path: str, codec: str) -> None:
    _filled(store_path, codec)
    with filemem.Store(store_path, codec=codec) as s:
        for j in range(20):
            s.put(NS, f"new{j}", {"j": j})
        log = s._engine.log
        assert log is not None
        first = {j: log.overlay.get(NS, f"new{j}") for j in range(20)}
        assert all(e is not None for e in first.values())  # not folded: the overwrites resolve them
        before = s._engine.counters["shard_parses"]
        for j in range(20):
            s.put(NS, f"new{j}", {"j": j + 1})
        assert s._engine.counters["shard_parses"] == before, "an overwrite decoded a shard that cannot hold its key"
        items = {it.key: it for it in s.items(NS) if it.key.startswith("new")}
        for j in range(20):
            it = items[f"new{j}"]
            assert it.value == {"j": j + 1} and it.created_at < it.updated_at  # the first put's time, carried
        settle(s)
    with filemem.Store(store_path, codec=codec) as again:
        folded = {it.key: it for it in again.items(NS) if it.key.startswith("new")}
        assert {k: (v.created_at, v.updated_at) for k, v in folded.items()} == {
            k: (v.created_at, v.updated_at) for k, v in items.items()
        }
        assert again.check() == []


def test_a_key_in_its_shard_keeps_the_shards_created_at(store_path: str, codec: str) -> None:
    _filled(store_path, codec)
    with filemem.Store(store_path, codec=codec, readonly=True) as r:
        old = r.get_item(NS, "k7")
    assert old is not None
    with filemem.Store(store_path, codec=codec) as s:  # its cache holds no shard: the overwrite reads k7's
        s.put(NS, "k7", {"v": 1})  # carried over from the shard
        s.put(NS, "k7", {"v": 2})  # over the unfolded put: resolves it against the shard, which holds k7
        it = s.get_item(NS, "k7")
        assert it is not None and it.value == {"v": 2} and it.created_at == old.created_at


def _shard_bytes(codec: str, records: dict[str, dict[str, object]], *, splitting: bool = False) -> bytes:
    stamped = {k: {"version": 1, "created_at": 1.0, "updated_at": 1.0, **r} for k, r in records.items()}
    shard = Shard("0", codec, 1, stamped)
    shard.splitting = splitting
    return encode_shard(shard, get_codec(codec))


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_lacks_key_says_absent_only_when_it_is(codec: str) -> None:
    data = _shard_bytes(codec, {"alpha": {"value": 1}, "k10": {"value": "beta"}, "née": {"value": 2}})
    assert lacks_key(data, "p", "gamma", "0") is True
    assert lacks_key(data, "p", "alpha", "0") is False
    assert lacks_key(data, "p", "née", "0") is False
    assert lacks_key(data, "p", "k1", "0") is False  # a substring of another key: maybe, so decode
    assert lacks_key(data, "p", "beta", "0") is False  # in a value: maybe
    assert lacks_key(_shard_bytes(codec, {"alpha": {"value": 1}}, splitting=True), "p", "gamma", "0") is False
    with pytest.raises(CorruptShardError):
        lacks_key(data, "p", "gamma", "1")  # the file holds another prefix
    damaged = bytearray(data)
    damaged[-3] ^= 1
    with pytest.raises(CorruptShardError):
        lacks_key(bytes(damaged), "p", "gamma", "0")


def _json_shard(body: bytes) -> bytes:
    """A JSON shard with this exact body (as another writer might have spelled it), checksum right."""
    records = json.loads(body)
    head = json.dumps(
        {
            "filemem": 1,
            "codec": "json",
            "prefix": "0",
            "generation": 1,
            "count": len(records),
            "body_bytes": len(body),
            "splitting": False,
            "touched": None,
        },
        separators=(",", ":"),
    ).encode()[:-1]
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + b',"crc32":"' + b"%08x" % crc + b'"}\n' + body


def test_lacks_key_is_not_fooled_by_escapes() -> None:
    rec = b'{"value":1,"version":1,"created_at":1.0,"updated_at":1.0}'
    escaped = _json_shard(b'{\n"\\u0067amma":' + rec + b"\n}\n")  # "gamma", one letter escaped
    assert json.loads(escaped.split(b"\n", 1)[1]) == {"gamma": json.loads(rec)}
    assert lacks_key(escaped, "p", "gamma", "0") is False
    ascii_only = _json_shard(b'{\n"n\\u00e9e":' + rec + b"\n}\n")  # "née" as an ensure_ascii writer puts it
    assert lacks_key(ascii_only, "p", "née", "0") is False
    quoted = _json_shard(b'{\n"a\\"b":' + rec + b"\n}\n")
    assert lacks_key(quoted, "p", 'a"b', "0") is False  # a key JSON must escape: never "absent" by search
    assert lacks_key(quoted, "p", "zzz", "0") is True
