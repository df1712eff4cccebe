"""Writers killed with SIGKILL: nothing acknowledged is lost, batches are all or nothing, the store heals.

A child acknowledges a write by appending a line to an ack file *after* the
store call returned. The parent kills it at random moments (or at an exact
point of the protocol, by monkeypatching inside the child), restarts it, and
finally checks every promise against the store, then ``check(fix=True)`` and
``check() == []``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from typing import Any

import pytest

import filemem
from filemem._names import hash_bits
from tests.concurrency import _workers as w
from tests.helpers import reap

# What a SIGKILL may legitimately leave for check() to report. "torn-log": the
# log ends in a frame cut short past its synced end (info). Linux checks for a
# fatal signal between the pages of one write (generic_perform_write), so a
# frame that crosses a page boundary can be half written when the writer is
# killed; it was never acknowledged, the control page's appended position is
# below it, and the next writer overwrites it (check --fix zeroes it). Seen
# twice in the SIGKILL loops under load on 2026-12-04; anything torn *below*
# the synced end is "corrupt-log", which stays a failure here.
CRASH_SAFE: set[str] = {"temp-file", "interrupted-split", "unfinished-batch", "torn-batch", "torn-log"}


def _readonly_findings(path: str) -> list[filemem.Finding]:
    """What ``check()`` sees on the store as the crash left it (a read-only store runs no recovery)."""
    with filemem.Store(path, readonly=True) as ro:
        return ro.check()


def _heal_and_verify_clean(path: str, **opts: Any) -> list[filemem.Finding]:
    with filemem.Store(path, **opts) as s:
        fixed = s.check(fix=True)
        assert all(f.fixed or f.severity != "error" for f in fixed), fixed
        assert s.check() == []
    return fixed


# ---------------------------------------------------------------- 2. SIGKILL loop, mixed writes


@pytest.mark.parametrize(
    "codec,writers,kills",
    [("json", 1, 20), ("msgpack", 2, 20)],
    ids=["json-1writer", "msgpack-2writers"],
)
def test_sigkill_loop_keeps_every_acknowledged_write(
    store_path: str, spawn_ctx: Any, codec: str, writers: int, kills: int
) -> None:
    """Puts, updates, deletes and batches under random SIGKILLs, with 1 KiB shards splitting all the time."""
    tmp = os.path.dirname(store_path)
    opts = {"durability": "flush", "shard_max_bytes": 1024}
    with filemem.Store(store_path, codec=codec) as s:
        # Format 1 only: a kill inside a plain put leaves its temp file. On
        # format 2 a put appends to the log and writes no temp file.
        seek_temp = writers == 1 and s._engine.store_version == 1
    ack_path = os.path.join(tmp, "acks.log")
    rng = random.Random(f"{codec}-{writers}")
    incarnation = [0] * writers
    procs: dict[int, Any] = {}
    ready: dict[int, str] = {}
    artifacts: Counter[str] = Counter()

    def launch(wid: int) -> None:
        incarnation[wid] += 1
        ready[wid] = os.path.join(tmp, f"ready-{wid}-{incarnation[wid]}")
        procs[wid] = w.start(
            spawn_ctx, w.crash_writer_child, (store_path, opts, ack_path, ready[wid], wid, incarnation[wid])
        )

    try:
        for wid in range(writers):
            launch(wid)
        done = 0
        # With one writer, go on killing (up to 4x) until a kill has landed inside a
        # plain write (a temp file left): a single put's window between its temp and
        # its rename is short, and most kills land between writes or inside batches.
        while done < kills or (seek_temp and not artifacts["temp-file"] and done < 4 * kills):
            done += 1
            wid = rng.randrange(writers)
            w.wait_for(ready[wid], procs[wid])
            time.sleep(rng.uniform(0.03, 0.25))
            w.sigkill(procs[wid])
            if writers == 1:  # nobody else is writing: classify what the kill left behind
                found = _readonly_findings(store_path)
                assert set(w.finding_codes(found)) <= CRASH_SAFE, found
                artifacts.update(set(w.finding_codes(found)))
            launch(wid)
        for wid in range(writers):
            w.wait_for(ready[wid], procs[wid])
        time.sleep(0.2)
        for wid in range(writers):
            w.sigkill(procs[wid])
    finally:
        reap(list(procs.values()), timeout=0)

    acks = w.read_acks(ack_path)
    assert set(w.finding_codes(_readonly_findings(store_path))) <= CRASH_SAFE
    with filemem.Store(store_path, **opts) as s:  # opening recovers dead batches
        for ns in s.list_namespaces():
            s.items(ns)  # every shard loads: no CorruptShardError
        summary = w.verify_crash_acks(s, acks)
    _heal_and_verify_clean(store_path, **opts)
    with filemem.Store(store_path, **opts) as s:
        after = w.verify_crash_acks(s, acks)  # check(fix=True) lost nothing
    assert after["records"] == summary["records"]
    kinds = Counter(a[0] for a in acks)
    assert all(kinds[k] > 10 for k in ("upd", "put", "last", "del", "batch")), kinds
    assert len(w.shard_files(store_path)) > 20  # shards did split a lot
    if seek_temp:
        assert artifacts["temp-file"] > 0, f"no kill ever landed inside a write: {artifacts}"
    print(f"acks={summary} kills={done} artifacts={dict(artifacts)}")


# ---------------------------------------------------------------- 3. batches: all or nothing under SIGKILL


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_sigkill_during_batches_is_all_or_nothing(store_path: str, spawn_ctx: Any, codec: str) -> None:
    """A batch writing generation g to 8 keys over 4 namespaces is killed 20 times: keys always agree."""
    tmp = os.path.dirname(store_path)
    opts: dict[str, Any] = {"shard_max_bytes": 1024}  # fsync: wider windows between commit and apply
    keys = w.gen_keys(namespaces=4, per_ns=2)
    filemem.Store(store_path, codec=codec).close()
    ack_path = os.path.join(tmp, "acks.log")
    rng = random.Random(codec)
    unfinished = 0
    proc = None
    try:
        for n in range(20):
            ready = os.path.join(tmp, f"ready-{n}")
            proc = w.start(spawn_ctx, w.gen_batch_child, (store_path, opts, keys, ack_path, ready))
            w.wait_for(ready, proc)
            time.sleep(rng.uniform(0.02, 0.25))
            w.sigkill(proc)
            found = _readonly_findings(store_path)
            assert set(w.finding_codes(found)) <= CRASH_SAFE, found
            unfinished += "unfinished-batch" in w.finding_codes(found)
            if n % 3 == 0:  # else the next child's open recovers it (and checks the keys agree)
                with filemem.Store(store_path, **opts) as s:
                    values = [s.get(tuple(ns), k) for ns, k in keys]
                assert all(v == values[0] for v in values), values
    finally:
        reap([proc] if proc is not None else [], timeout=0)
    acks = w.read_acks(ack_path)
    assert [a for a in acks if a[0] in ("torn", "error")] == []
    acked = max(a[3] for a in acks if a[0] == "gen")
    with filemem.Store(store_path, **opts) as s:
        values = [s.get(tuple(ns), k) for ns, k in keys]
        assert all(v == values[0] for v in values), values
        assert values[0]["g"] >= acked
        with s.snapshot() as snap:
            assert [snap.get(tuple(ns), k) for ns, k in keys] == values
    _heal_and_verify_clean(store_path, **opts)
    print(f"generations acked={acked} kills between commit and apply={unfinished}")


def _gen_store(path: str, codec: str = "json") -> list[list[Any]]:
    keys = w.gen_keys(namespaces=3, per_ns=2)  # six keys in three namespaces: a multi-shard batch
    filemem.Store(path, codec=codec).close()
    return keys


def _values(store: filemem.Store, keys: list[list[Any]]) -> list[Any]:
    return [(store.get(tuple(ns), k) or {}).get("g") for ns, k in keys]


def _crash_batch(spawn_ctx: Any, path: str, keys: list[list[Any]], point: str) -> None:
    proc = w.start(spawn_ctx, w.batch_crash_child, (path, {}, keys, point))
    try:
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL, f"the child did not die at {point}: {proc.exitcode}"
    finally:
        reap([proc], timeout=0)


@pytest.mark.store_format(1)  # kill points inside format 1's batch commit and split (format 2: tests/wal, tests/faults)
@pytest.mark.parametrize(
    "point,seen_before,final",
    [
        ("before-commit", {1}, 1),  # intent never renamed into batches/: rolled back
        ("after-commit", {1}, 2),  # committed, no shard renamed yet: rolled forward
        ("mid-apply", {1, 2}, 2),  # one shard renamed: readers could see half, recovery finishes it
        ("before-cleanup", {2}, 2),  # every shard renamed, intent left behind
    ],
)
@pytest.mark.parametrize("recovery", ["open", "check-fix", "next-writer", "snapshot"])
def test_batch_killed_at_exact_point(
    store_path: str, spawn_ctx: Any, point: str, seen_before: set[int], final: int, recovery: str
) -> None:
    keys = _gen_store(store_path)
    early = filemem.Store(store_path)  # opened before the crash: its open-time recovery saw nothing
    try:
        _crash_batch(spawn_ctx, store_path, keys, point)
        found = _readonly_findings(store_path)
        if point == "before-commit":
            assert set(w.finding_codes(found)) == {"temp-file"}, found
        else:
            assert w.finding_codes(found)[0] == "unfinished-batch", found
            assert w.finding_codes(found) == ["unfinished-batch"], found
        with filemem.Store(store_path, readonly=True) as ro:
            assert set(_values(ro, keys)) == seen_before  # the crash landed where we meant it to
        if recovery == "open":
            with filemem.Store(store_path) as s:
                assert _values(s, keys) == [final] * len(keys)
        elif recovery == "check-fix":
            fixed = early.check(fix=True)
            assert all(f.fixed for f in fixed), fixed
            if point != "before-commit":
                assert ("unfinished-batch", True) in [(f.code, f.fixed) for f in fixed]
            assert _values(early, keys) == [final] * len(keys)
        elif recovery == "next-writer":
            ns, k = keys[-1]
            early.put(tuple(ns), "other", 1)  # any writer that locks a shard rolls dead batches forward
            assert _values(early, keys) == [final] * len(keys)
        else:
            with early.snapshot() as snap:
                assert [(snap.get(tuple(ns), k) or {}).get("g") for ns, k in keys] == [final] * len(keys)
        _heal_and_verify_clean(store_path)
        with filemem.Store(store_path) as s:
            assert _values(s, keys) == [final] * len(keys)
            with s.batch() as b:  # and the store takes batches again
                for ns, k in keys:
                    b.put(tuple(ns), k, {"g": 3})
            assert _values(s, keys) == [3] * len(keys)
    finally:
        early.close()


@pytest.mark.store_format(1)  # kill points inside format 1's batch commit and split (format 2: tests/wal, tests/faults)
def test_readonly_snapshot_never_sees_a_half_applied_batch(store_path: str, spawn_ctx: Any) -> None:
    """A snapshot promises "one version of the store", read-only or not.

    Plain reads on a read-only store may see a dead writer's batch half applied (documented). A
    snapshot must not: it may roll the batch forward, read it as applied, or refuse (FileMemError).
    """
    keys = _gen_store(store_path)
    _crash_batch(spawn_ctx, store_path, keys, "mid-apply")
    with filemem.Store(store_path, readonly=True) as ro:
        assert set(_values(ro, keys)) == {1, 2}  # plain reads: half applied, as documented
        try:
            with ro.snapshot() as snap:
                seen = [(snap.get(tuple(ns), k) or {}).get("g") for ns, k in keys]
        except filemem.FileMemError:
            return
    assert len(set(seen)) == 1, seen


# ---------------------------------------------------------------- splits killed at an exact point


def _crash_split(spawn_ctx: Any, path: str, point: str, ack_path: str, **opts: Any) -> None:
    proc = w.start(spawn_ctx, w.split_crash_child, (path, {"shard_max_bytes": 1024, **opts}, ["sp"], point, ack_path))
    try:
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL, f"the child did not die at {point}: {proc.exitcode}"
    finally:
        reap([proc], timeout=0)


@pytest.mark.store_format(1)  # kill points inside format 1's batch commit and split (format 2: tests/wal, tests/faults)
@pytest.mark.parametrize("point", ["after-flag", "after-first-leaf", "before-unlink"])
@pytest.mark.parametrize("recovery", ["next-writer", "check-fix"])
def test_split_killed_at_exact_point(store_path: str, spawn_ctx: Any, point: str, recovery: str) -> None:
    ack_path = os.path.join(os.path.dirname(store_path), "acks.log")
    _crash_split(spawn_ctx, store_path, point, ack_path)
    acked = [a[2] for a in w.read_acks(ack_path)]
    expected = {f"k{i}": i for i in range(len(acked) + 1)}  # the put whose split was killed landed, unacked
    found = _readonly_findings(store_path)
    assert "interrupted-split" in w.finding_codes(found), found
    assert set(w.finding_codes(found)) <= {"interrupted-split", "temp-file"}, found
    with filemem.Store(store_path, readonly=True) as ro:  # readers cope with the half-split shard as it is
        assert {it.key: it.value["i"] for it in ro.items("sp")} == expected
        assert all(ro.get("sp", k)["i"] == v for k, v in expected.items())
    with filemem.Store(store_path, shard_max_bytes=1024) as s:
        if recovery == "next-writer":
            for i in range(len(expected), len(expected) + 40):
                s.put("sp", f"k{i}", {"i": i, "pad": w.PAD})
                expected[f"k{i}"] = i
        else:
            fixed = s.check(fix=True)
            assert ("interrupted-split", True) in [(f.code, f.fixed) for f in fixed], fixed
        assert {it.key: it.value["i"] for it in s.items("sp")} == expected
    _heal_and_verify_clean(store_path, shard_max_bytes=1024)
    with filemem.Store(store_path) as s:
        assert {it.key: it.value["i"] for it in s.items("sp")} == expected
        assert all(s.get("sp", k)["i"] == v for k, v in expected.items())


@pytest.mark.store_format(1)  # kill points inside format 1's batch commit and split (format 2: tests/wal, tests/faults)
def test_deleted_key_stays_deleted_after_a_crashed_split_is_finished(store_path: str, spawn_ctx: Any) -> None:
    """Crash the root's split after its first leaf; empty half that leaf and split it; finish the root's split.

    Regression (found by this test): before splits wrote a file for an empty range too, this happened:

    1. a writer is SIGKILLed splitting the root: ``s.shard`` (flagged) and its
       first leaf (say ``s0.shard``) exist, ``s1.shard`` does not;
    2. one batch deletes every key of ``s0``'s ``01`` half and grows its
       ``00`` half past ``shard_max_bytes``: ``s0`` splits, and ``01`` gets no
       file because it is empty;
    3. that write then finishes the root's split (``_finish_splits``): its
       ``place()`` skips ``00`` (exists) but writes ``01`` from the flagged
       root's records, which still hold the deleted keys.
    """
    ack_path = os.path.join(os.path.dirname(store_path), "acks.log")
    _crash_split(spawn_ctx, store_path, "after-first-leaf", ack_path, durability="flush")
    d = os.path.join(store_path, "ns", "sp")
    leaves = sorted(f[1:-6] for f in os.listdir(d) if f.endswith(".shard") and f != "s.shard")
    assert "s.shard" in os.listdir(d) and len(leaves) == 1, os.listdir(d)
    (leaf,) = leaves
    with filemem.Store(store_path, shard_max_bytes=1024, durability="flush") as s:
        present = [it.key for it in s.items("sp")]
        victims = [k for k in present if hash_bits(k).startswith(leaf + "1")]
        growth = [k for k in (f"g{i}" for i in range(400)) if hash_bits(k).startswith(leaf + "0")][:12]
        assert victims and len(growth) == 12
        with s.batch() as b:
            for k in victims:
                b.delete("sp", k)
            for k in growth:
                b.put("sp", k, {"i": -1, "pad": w.PAD})
        assert b.results[: len(victims)] == [True] * len(victims)
        assert {k: s.get("sp", k) for k in victims} == dict.fromkeys(victims)
        s.check(fix=True)
        assert {k: s.get("sp", k) for k in victims} == dict.fromkeys(victims)
