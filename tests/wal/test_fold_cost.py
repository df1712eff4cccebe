"""What a fold step costs per shard it rewrites: the records it did not change are not encoded again.

A fold step rewrites every shard its records land in. With keys spread by
hash, that is every shard of the namespace, so the records a shard already
held outnumber the new ones many times (issue 13: folding 30,000 keys into
one namespace encoded 238,000 records, 8 per folded record, and forgot
570,000 cache paths one ``os.path.join`` each). The fold's own parse of a
shard keeps each record's encoded bytes, and the cache forgets a folded key's
shards in one pass over its entries.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

import filemem
from filemem._cache import ShardCache
from filemem._shard import Shard, shard_name

NS = ("agent", "facts")


def test_a_fold_encodes_only_the_records_it_installs(
    store_path: str, no_background_fold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with filemem.Store(store_path) as store:
        engine: Any = store._backend.engine
        with store.batch() as b:
            for i in range(300):
                b.put(NS, f"old-{i}", {"n": i, "text": "x" * 40})
        engine.settle()
        codec = engine.codec
        encoded: list[str] = []
        real = codec.encode_pair

        def counting(key: str, record: Any) -> bytes:
            encoded.append(key)
            return real(key, record)

        monkeypatch.setattr(codec, "encode_pair", counting)
        for i in range(5):
            store.put(NS, f"new-{i}", {"n": i})
        writes = engine.counters["shard_writes"]
        engine.settle()
        assert engine.counters["shard_writes"] > writes, "the fold rewrote no shard"
        assert sorted(encoded) == [f"new-{i}" for i in range(5)]  # not the 300 the shards held
        monkeypatch.undo()
    with filemem.Store(store_path, readonly=True) as again:
        assert again.get(NS, "old-7") == {"n": 7, "text": "x" * 40} and again.get(NS, "new-3") == {"n": 3}
        assert again.check() == []


def _naive_forget(cache: ShardCache, directory: str, bits: list[str], deepest: int) -> None:
    """What _forget_folded did before: every prefix of every key's bits, one path each."""
    for b in bits:
        for depth in range(deepest + 1):
            cache.forget(os.path.join(directory, shard_name(b[:depth])))


@pytest.mark.parametrize("seed", range(20))
def test_forget_covering_drops_what_forgetting_every_prefix_drops(seed: int) -> None:
    rng = random.Random(seed)

    def bits() -> str:
        return "".join(rng.choice("01") for _ in range(24))

    def filled() -> ShardCache:
        cache = ShardCache(ttl_s=30.0, max_entries=10_000, max_bytes=1 << 30)
        r = random.Random(seed * 7919)
        for directory in ("/s/a", "/s/b", "/s/a/x"):
            for _ in range(60):
                prefix = "".join(r.choice("01") for _ in range(r.randint(0, 12)))
                cache.store(os.path.join(directory, shard_name(prefix)), Shard(prefix, "json", 1, {}), 10)
        return cache

    keys = sorted(bits() for _ in range(rng.randint(0, 40)))
    deepest = rng.randint(0, 14)
    want, got = filled(), filled()
    _naive_forget(want, "/s/a", keys, deepest)
    dropped = got.forget_covering("/s/a", keys, deepest)
    assert sorted(got._entries) == sorted(want._entries)
    assert dropped == len(filled()) - len(got) and got.bytes == want.bytes
