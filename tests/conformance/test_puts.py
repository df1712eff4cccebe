"""Plain puts and batches of puts, on every backend (issue 16).

On PostgreSQL these take one round trip (the server-side function of
``filemem/_backends/postgres/_put_fn.py``) instead of the statement path
that updates, deletes and batches naming a key twice still take: the same
assertions hold on both backends, so the short path keeps every promise
of the long one (conditional writes, all or nothing, expired records,
versions, real processes racing and being SIGKILLed mid-write).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import filemem
from filemem import ConflictError, InvalidValueError, Store
from tests.concurrency import _workers as w
from tests.helpers import reap


def test_a_batch_of_puts_with_one_stale_condition_writes_nothing(any_store: Store) -> None:
    s = any_store
    va = s.put("ns", "a", "a1")
    vb = s.put("other/deep", "b", "b1")
    with pytest.raises(ConflictError) as info, s.batch() as b:
        b.put("ns", "a", "a2", if_version=va)  # holds
        b.put("other/deep", "b", "b2", if_version=vb + 7)  # stale: the whole batch is refused
        b.put("ns", "new", "n1")
    err = info.value
    assert (err.namespace, err.key, err.expected, err.current_version) == (("other", "deep"), "b", vb + 7, vb)
    assert (s.get("ns", "a"), s.get("other/deep", "b"), s.get("ns", "new")) == ("a1", "b1", None)
    # A refused batch consumed nothing a later write could notice: versions still grow.
    v = s.put("ns", "a", "a3", if_version=va)
    assert v > max(va, vb)


def test_a_batch_of_puts_returns_growing_versions_in_op_order(any_store: Store) -> None:
    s = any_store
    before = s.put("ns", "z", 0)
    with s.batch() as b:
        for i in range(5):
            b.put(("ns", f"n{i % 2}"), f"k{i}", {"i": i})
    versions = b.results
    assert versions == sorted(versions) and len(set(versions)) == 5 and versions[0] > before
    for i, v in enumerate(versions):
        item = s.get_item(("ns", f"n{i % 2}"), f"k{i}")
        assert item is not None and item.version == v and item.value == {"i": i}


def test_create_only_put_over_an_expired_record_starts_a_new_one(any_store: Store) -> None:
    s = any_store
    s.put("ns", "k", "old", ttl=1.0)
    first = s.get_item("ns", "k")
    assert first is not None
    deadline = time.monotonic() + 30
    while s.get("ns", "k") is not None:  # expiry is the backend's clock: wait for it, not a fixed time
        assert time.monotonic() < deadline
        time.sleep(0.05)
    v = s.put("ns", "k", "new", if_version=0)  # the expired record counts as absent
    item = s.get_item("ns", "k")
    assert item is not None and item.version == v and item.value == "new" and item.expires_at is None
    assert item.created_at > first.created_at  # a new record, not the expired one's age


def test_a_put_keeps_created_at_and_sets_or_clears_the_ttl(any_store: Store) -> None:
    s = any_store
    s.put("ns", "k", 1, ttl=600)
    one = s.get_item("ns", "k")
    assert one is not None and one.expires_at is not None
    s.put("ns", "k", 2)
    two = s.get_item("ns", "k")
    assert two is not None and two.created_at == one.created_at and two.expires_at is None


def test_an_oversize_value_in_a_batch_of_puts_changes_nothing(location: str) -> None:
    with filemem.Store(location, max_value_bytes=1000) as s:
        s.put("ns", "a", "a1")
        with pytest.raises(InvalidValueError), s.batch() as b:
            b.put("ns", "a", "a2")
            b.put("ns", "big", "x" * 5000)
        assert s.get("ns", "a") == "a1" and s.get("ns", "big") is None


def test_puts_are_searchable_at_once_and_replaced_terms_are_gone(any_store: Store) -> None:
    s = any_store
    with s.batch() as b:
        b.put("docs", "a", {"text": "staging database read only"})
        b.put("docs", "b", {"text": "blue pipeline deploys"})
    assert [h.item.key for h in s.search("docs", query="staging")] == ["a"]
    s.put("docs", "a", {"text": "production cluster"})
    assert [h.item.key for h in s.search("docs", query="staging")] == []
    assert [h.item.key for h in s.search("docs", query="production")] == ["a"]


# ---------------------------------------------------------------- real processes


def _run(ctx: Any, target: Any, argsets: list[tuple[Any, ...]], timeout: float = 120) -> None:
    barrier = ctx.Barrier(len(argsets))
    procs = []
    try:
        for args in argsets:
            procs.append(w.start(ctx, target, (*args, barrier)))
        w.join_ok(procs, timeout)
    finally:
        reap(procs, timeout=0)


def test_processes_racing_create_only_puts_have_one_winner_per_key(
    location: str, tmp_path: Path, spawn_ctx: Any
) -> None:
    n = 4
    keys = [f"k{i}" for i in range(30)]
    filemem.Store(location).close()
    res = [str(tmp_path / f"c{i}.json") for i in range(n)]
    _run(
        spawn_ctx, w.create_only_child, [(location, {"durability": "flush"}, "race", keys, i, res[i]) for i in range(n)]
    )
    won: dict[str, tuple[int, int]] = {}
    lost = 0
    for i, r in enumerate(res):
        got = w.read_result(r)
        lost += got["lost"]
        for key, version in got["won"].items():
            assert key not in won, f"{key} created twice"
            won[key] = (i, version)
    assert sorted(won) == sorted(keys) and lost == (n - 1) * len(keys)
    with filemem.Store(location) as s:
        for key, (wid, version) in won.items():
            item = s.get_item("race", key)
            assert item is not None and (item.value, item.version) == (wid, version)


def test_processes_compare_and_set_with_puts_lose_no_increment(location: str, tmp_path: Path, spawn_ctx: Any) -> None:
    n, m = 4, 30
    keys = ["a", "b"]
    filemem.Store(location).close()
    res = [str(tmp_path / f"s{i}.json") for i in range(n)]
    _run(spawn_ctx, w.cas_child, [(location, {"durability": "flush"}, "cas", keys, m, i, res[i]) for i in range(n)])
    counts: dict[str, int] = {}
    for r in res:
        for key, c in w.read_result(r)["counts"].items():
            counts[key] = counts.get(key, 0) + c
    with filemem.Store(location) as s:
        assert {k: s.get("cas", k, 0) for k in keys} == {k: counts.get(k, 0) for k in keys}
        assert sum(counts.values()) == n * m


def test_sigkilled_writers_lose_no_acknowledged_put(location: str, tmp_path: Path, spawn_ctx: Any) -> None:
    """Two writers of puts, updates, deletes and batches, SIGKILLed mid-write and restarted: every ack holds."""
    filemem.Store(location).close()
    acks = [str(tmp_path / f"w{i}.acks") for i in range(2)]
    procs: list[Any] = []
    try:
        for inc in range(3):
            current = []
            for wid in range(2):
                ready = str(tmp_path / f"ready{wid}-{inc}")
                p = w.start(spawn_ctx, w.crash_writer_child, (location, {}, acks[wid], ready, wid, inc))
                procs.append(p)
                current.append((p, ready))
            for p, ready in current:
                w.wait_for(ready, p)
            time.sleep(0.4)  # let them write, then kill them wherever they are
            for p, _ in current:
                w.sigkill(p)
    finally:
        reap(procs, timeout=0)
    lines = [line for a in acks for line in w.read_acks(a)]
    assert not [line for line in lines if line[0] == "error"], lines
    assert sum(line[0] == "put" for line in lines) > 0
    with filemem.Store(location) as s:
        w.verify_crash_acks(s, lines)
        assert not [f for f in s.check() if f.severity == "error"]
