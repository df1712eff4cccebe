"""batch() and the collector encode each value once: the check's bytes go into the log (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest

import filemem
from filemem._engine import UNDECODED, Op
from filemem.codecs import get_codec
from tests.helpers import settle


def _count_encodes(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    codec = store._engine.codec
    calls: list[Any] = []
    real = codec.encode

    def counting(value: Any) -> bytes:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(codec, "encode", counting)
    return calls


def test_batch_encodes_each_value_once_and_reads_it_back(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_encodes(store, monkeypatch)
    values = {f"k{i}": {"i": i, "text": "x" * i, "nested": [i, {"f": i / 3}]} for i in range(50)}
    with store.batch() as b:
        for k, v in values.items():
            b.put("ns", k, v)
    assert len(calls) == len(values)  # at the check; the commit logs those bytes
    assert {k: store.get("ns", k) for k in values} == values
    settle(store)
    with filemem.Store(store.path) as again:
        assert {k: again.get("ns", k) for k in values} == values


def test_bytes_of_another_codec_are_not_logged(store: filemem.Store) -> None:
    # A store whose codec changed since the check (or a caller's mistake) must
    # never log bytes of the wrong codec: the commit encodes the value itself.
    other = "msgpack" if store._engine.codec.name == "json" else "json"
    store._engine.apply([Op(("ns",), "k", "put", {"a": [1, 2]}, encoded=(other, b"\xc1 not those bytes"))])
    assert store.get("ns", "k") == {"a": [1, 2]}
    settle(store)
    with filemem.Store(store.path) as again:
        assert again.get("ns", "k") == {"a": [1, 2]}
        assert again.check() == []


def test_an_update_in_a_batch_encodes_its_new_value(store: filemem.Store) -> None:
    store.put("ns", "n", 1)
    with store.batch() as b:
        b.put("ns", "p", {"v": 1})
        b.update("ns", "n", lambda v: v + 41)
    assert store.get("ns", "n") == 42 and store.get("ns", "p") == {"v": 1}


def test_collector_logs_collect_bytes_without_encoding_again(
    store: filemem.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store.collector() as c:
        calls = _count_encodes(store, monkeypatch)
        for i in range(20):
            c.collect("events", f"e{i}", {"i": i})
        c.flush()
        # 20 at collect(), plus the applied-ids marker of each batch: never the records again.
        assert sum(1 for v in calls if isinstance(v, dict) and "i" in v) == 20
    assert [store.get("events", f"e{i}") for i in range(20)] == [{"i": i} for i in range(20)]


def _undecoded(ns: str, key: str, payload: bytes, codec: str = "json") -> Op:
    return Op((ns,), key, "put", UNDECODED, encoded=(codec, payload))


def test_undecoded_puts_are_logged_as_given_and_never_decoded_to_write(
    store: filemem.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector's puts come as codec bytes alone: logged as they are, decoded only by a read."""
    engine = store._engine
    codec = engine.codec
    decodes: list[bytes] = []
    real = codec.decode
    monkeypatch.setattr(codec, "decode", lambda data: decodes.append(bytes(data)) or real(data))
    store.put("ns", "old", {"v": 0})
    first = store.items("ns")[0]
    settle(store)  # in the shards, not in the log: the undecoded put over it carries created_at over
    payloads = {f"k{i}": codec.encode({"i": i}) for i in range(5)}
    decodes.clear()
    versions = engine.apply([_undecoded("ns", k, p, codec.name) for k, p in payloads.items()])
    engine.apply([_undecoded("ns", "old", codec.encode({"v": 1}), codec.name)])
    assert decodes == [] and len(versions) == 5
    assert [store.get("ns", k) for k in payloads] == [{"i": i} for i in range(5)]  # this process, from the log
    item = next(it for it in store.items("ns") if it.key == "old")
    assert item.value == {"v": 1} and item.created_at == first.created_at  # carried over, as a put's
    settle(store)
    with filemem.Store(store.path) as again:
        assert [again.get("ns", k) for k in payloads] == [{"i": i} for i in range(5)]
        again_old = next(it for it in again.items("ns") if it.key == "old")
        assert again_old.created_at == first.created_at and again.check() == []


def test_an_undecoded_put_then_an_update_of_its_key_in_one_batch(store: filemem.Store) -> None:
    """A later op of the same key in the batch sees the undecoded put's value (decoded then)."""
    codec = store._engine.codec
    store._engine.apply(
        [_undecoded("ns", "n", codec.encode(41), codec.name), Op(("ns",), "n", "update", fn=lambda v: v + 1)]
    )
    assert store.get("ns", "n") == 42
    store._engine.apply(
        [
            _undecoded("ns", "m", codec.encode(41), codec.name),
            _undecoded("ns", "m", codec.encode(1), codec.name),  # the same key twice: the later wins
        ]
    )
    assert store.get("ns", "m") == 1
    settle(store)
    assert store.get("ns", "n") == 42 and store.get("ns", "m") == 1 and store.check() == []


def test_undecoded_bytes_of_another_codec_are_decoded_and_encoded_again(store: filemem.Store) -> None:
    other = "msgpack" if store._engine.codec.name == "json" else "json"
    data = get_codec(other).encode({"a": [1, 2]})
    store._engine.apply([_undecoded("ns", "k", data, other)])
    assert store.get("ns", "k") == {"a": [1, 2]}
    settle(store)
    with filemem.Store(store.path) as again:
        assert again.get("ns", "k") == {"a": [1, 2]} and again.check() == []
