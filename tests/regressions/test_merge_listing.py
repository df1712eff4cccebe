"""A compaction merge racing the listing loops: items/keys, scan and search must miss nothing and repeat nothing.

The loops assumed shards only ever get deeper. A merge (filemem/_maintain.py
``_merge_pair``: 1. write ``p`` flagged holding both leaves, 2. unlink the
leaves, 3. rewrite ``p`` unflagged) broke that two ways:

* *miss*: a reader lists after step 1, reads the flagged ``p`` (its leaves
  own every key, so it takes nothing), then the merge finishes; the leaves
  are gone and ``p`` was "visited": every record of the leaves was missed;
* *duplicate*: a reader reads leaf ``p0`` whole, then the whole merge runs;
  the new ``p`` is no descendant of anything read, so it was read whole and
  ``p0``'s records came out again.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import filemem
from filemem import _maintain
from filemem._shard import Shard
from filemem._view import View
from tests.helpers import reap

NS = ("agent", "mem")

# Format 1's write path (each put writes its shards, multi-shard batches, splits at the put).
# On format 2 the fold does this; not yet re-checked there.
pytestmark = pytest.mark.store_format(1)


def _merge_candidate(path: str) -> tuple[filemem.Store, View, str]:
    """A store with two tiny sibling leaves; returns the merging store, its view and the leaves' parent."""
    w = filemem.Store(path, shard_max_bytes=1024, watch="off")
    for i in range(12):
        w.put(NS, f"k{i}", {"task": f"alpha word{i}", "n": i})
    for i in range(12):
        if i % 3:
            w.delete(NS, f"k{i}")
    w.close()
    c = filemem.Store(path, watch="off")
    v = c._engine.view(NS)
    v.refresh()
    ex = v.existing

    def records(p: str) -> int:
        shard = c._engine.load(v.shard_path(p), p)
        return 0 if shard is None else len(shard.records)

    parents = sorted({p[:-1] for p in ex if p} - ex, key=lambda p: (-len(p), p))
    parent = next(
        p
        for p in parents
        if p + "0" in ex and p + "1" in ex and not {p + "0", p + "1"} & v.internal and records(p + "0") > 0
    )
    return c, v, parent


def _scan(r: filemem.Store) -> list[str]:
    return sorted(it.key for b in r.scan(NS, batch_size=2) for it in b)


def _items(r: filemem.Store) -> list[str]:
    return sorted(it.key for it in r.items(NS))


def _keys(r: filemem.Store) -> list[str]:
    return r.keys(NS)


def _search(r: filemem.Store) -> list[str]:
    return sorted(h.item.key for h in r.search(("agent",), filter={"n": {"$gte": 0}}, limit=100))


def _search_text(r: filemem.Store) -> list[str]:
    return sorted(h.item.key for h in r.search(("agent",), query="alpha", limit=100))


@pytest.mark.parametrize("reader", [_scan, _items, _keys, _search, _search_text], ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("mode", ["flagged", "leaf"])
def test_listing_during_a_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, reader: Callable[[filemem.Store], list[str]]
) -> None:
    """Pin the two interleavings: the reader reads the flagged parent (or a leaf), then the merge finishes."""
    path = str(tmp_path / "store")
    c, v, parent = _merge_candidate(path)
    r = filemem.Store(path, watch="off", consistency="strict")
    expected = sorted(r.keys(NS))
    assert len(expected) == 4
    step1, go, done = threading.Event(), threading.Event(), threading.Event()
    orig_unlink = _maintain._unlink
    first = [True]

    def unlink(p: str) -> None:
        if first[0]:  # between merge steps 1 and 2
            first[0] = False
            step1.set()
            assert go.wait(10)
        orig_unlink(p)

    monkeypatch.setattr(_maintain, "_unlink", unlink)
    merged: list[bool] = []

    def merger() -> None:
        try:
            merged.append(_maintain._merge_pair(c._engine, v, parent, 1 << 20))
        finally:
            done.set()

    t = threading.Thread(target=merger)
    # flagged: the reader lists after step 1 and reads the flagged parent, then the merge finishes.
    # leaf: the reader lists before the merge and reads leaf p0, then the whole merge runs.
    trigger = parent if mode == "flagged" else parent + "0"
    fired = [False]

    def hook(prefix: str) -> None:
        if not fired[0] and prefix == trigger:
            fired[0] = True
            go.set()
            if mode == "leaf":
                t.start()
            assert done.wait(10)

    eng = r._engine
    orig_load = eng.load

    def load(p: str, prefix: str | None, **kw: Any) -> Shard | None:
        s = orig_load(p, prefix, **kw)
        if prefix is not None:
            hook(prefix)
        return s

    orig_scan_load = r._backend._scan_load

    def scan_load(p: str, prefix: str) -> Shard | None:
        s = orig_scan_load(p, prefix)
        hook(prefix)
        return s

    monkeypatch.setattr(eng, "load", load)
    monkeypatch.setattr(r._backend, "_scan_load", scan_load)
    if mode == "flagged":
        t.start()
        assert step1.wait(10)
    try:
        got = reader(r)
    finally:
        go.set()
        if t.ident is not None:
            t.join(10)
    assert fired[0], "the interleaving was not reached"
    assert merged == [True]
    assert got == expected
    assert parent in r._engine.view(NS).existing  # the merge did happen under the reader
    r.close()
    c.close()


# ---------------------------------------------------------------------- real processes

STABLE = [f"s{i}" for i in range(8)]


def churn_child(path: str, stop_path: str, result_path: str) -> None:
    """Split shards by writing, shrink them by deleting, merge them back with compact(); until told to stop."""
    w = filemem.Store(path, shard_max_bytes=1024, durability="flush", watch="off")
    c = filemem.Store(path, durability="flush", watch="off")
    merges = rounds = 0
    while not os.path.exists(stop_path):
        for i in range(16):
            w.put(NS, f"f{i}", {"f": i, "pad": "x" * 40})
        for i in range(16):
            w.delete(NS, f"f{i}")
        merges += c.compact().get("merges", 0)
        rounds += 1
        if rounds == 1:
            with open(stop_path + ".ready", "w"):
                pass
    w.close()
    c.close()
    with open(result_path + ".tmp", "w") as fh:
        fh.write(f"{rounds} {merges}")
    os.replace(result_path + ".tmp", result_path)


def _anomalies(keys: list[str]) -> Iterator[str]:
    counts = collections.Counter(keys)
    yield from (f"missing {k}" for k in STABLE if k not in counts)
    yield from (f"twice {k}" for k, n in counts.items() if n > 1)


def test_listings_under_live_merges(tmp_path: Path, spawn_ctx: Any) -> None:
    """Another process splits and merges all the time: every listing shows each stable key exactly once."""
    path = str(tmp_path / "store")
    with filemem.Store(path, shard_max_bytes=1024, watch="off") as s:
        for k in STABLE:
            s.put(NS, k, {"s": 1, "pad": "v" * 40})
    stop_path = str(tmp_path / "stop")
    result_path = str(tmp_path / "result")
    proc = spawn_ctx.Process(target=churn_child, args=(path, stop_path, result_path), daemon=True)
    proc.start()
    found: collections.Counter[str] = collections.Counter()
    rounds = 0
    try:
        with filemem.Store(path, durability="flush", watch="off", consistency="strict") as r:
            # The window starts once the child churns: on a loaded machine its
            # start (a fresh interpreter importing filemem) can take seconds.
            ready_by = time.monotonic() + 60
            while not os.path.exists(stop_path + ".ready") and time.monotonic() < ready_by and proc.is_alive():
                time.sleep(0.01)
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                listings = {
                    "scan": [it.key for b in r.scan(NS, batch_size=3) for it in b],
                    "items": [it.key for it in r.items(NS)],
                    "keys": r.keys(NS),
                    "search": [h.item.key for h in r.search(("agent",), filter={"s": 1}, limit=100)],
                }
                for name, keys in listings.items():
                    found.update(f"{name}: {a}" for a in _anomalies(keys))
                if name == "search":
                    found.update(f"search: extra {k}" for k in listings["search"] if k not in STABLE)
                rounds += 1
    finally:
        with open(stop_path, "w"):
            pass
        reap([proc], timeout=60)
    assert proc.exitcode == 0
    with open(result_path) as fh:
        churned, merges = map(int, fh.read().split())
    assert merges > 0 and rounds > 10, (churned, merges, rounds)
    assert not found, f"{sum(found.values())} anomalies in {rounds} rounds ({merges} merges): {found.most_common(8)}"
