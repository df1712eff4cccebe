"""The log with real processes: no lost update, SIGKILL of writers and of the folder, strict visibility.

Every store here is a v2 store (tests/wal/conftest.py). Children are spawned
(nothing inherited) and reaped whatever happens.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from typing import Any

import filemem
from tests.helpers import reap
from tests.wal import _workers as w

NS = w.NS


def test_four_processes_of_increments_are_exact_while_folds_run(store_path: str, spawn_ctx: Any) -> None:
    """4 x M ``update`` increments of one counter, with a fifth process folding the log the whole time."""
    m = 150
    filemem.Store(store_path).close()
    stop = os.path.join(os.path.dirname(store_path), "stop")
    folder = spawn_ctx.Process(target=w.folder_loop, args=(store_path, stop))
    procs = [spawn_ctx.Process(target=w.incrementer, args=(store_path, "c", m)) for _ in range(4)]
    folder.start()
    try:
        for p in procs:
            p.start()
        reap(procs, timeout=240)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    finally:
        open(stop, "w").close()
        reap([folder], timeout=60)
    with filemem.Store(store_path) as s:
        assert s.get(NS, "c") == 4 * m
        assert s._engine.counters["log_commits"] == 0  # this handle wrote nothing
        assert s.check() == []
    # At rest (every handle closed) the shards hold everything: a tool that
    # reads the shard files alone (docs/format.md) sees the final count.
    assert _from_shard_files(store_path, NS, "c") == 4 * m


def _from_shard_files(root: str, ns: tuple[str, ...], key: str) -> Any:
    from filemem._shard import decode_shard
    from filemem.codecs import get_codec

    codecs = {"json": get_codec("json"), "msgpack": get_codec("msgpack")}
    directory = os.path.join(root, "ns", *ns)
    for name in os.listdir(directory):
        if name.endswith(".shard"):
            with open(os.path.join(directory, name), "rb") as fh:
                shard = decode_shard(fh.read(), name, codecs)
            if key in shard.records:
                return shard.records[key]["value"]
    return None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _parse_acks(path: str) -> tuple[dict[str, int], list[int], list[tuple[int, int]]]:
    """Last acknowledged value per put key, every acknowledged version, (writer, gen) of acked batches."""
    last: dict[str, int] = {}
    versions: list[int] = []
    if not os.path.exists(path):
        return last, versions, []
    batches = []
    with open(path) as fh:
        for line in fh:
            if not line.endswith("\n"):
                continue  # the kill cut the ack line itself: not acknowledged
            parts = line.split()
            if parts[0] == "put":
                last[parts[1]] = int(parts[2])
                versions.append(int(parts[3]))
            else:
                batches.append(int(parts[1]))
                versions.append(int(parts[2]))
    return last, versions, [(0, g) for g in batches]


def test_sigkill_of_writers_and_folder_keeps_every_acknowledged_write(store_path: str, spawn_ctx: Any) -> None:
    """Writers and a folder killed at random: acked writes present, batches whole, versions unique, check clean."""
    tmp = os.path.dirname(store_path)
    filemem.Store(store_path).close()
    rng = random.Random(13)
    writers = 2
    stop = os.path.join(tmp, "stop-never")
    acks = [os.path.join(tmp, f"acks-{i}.log") for i in range(writers)]
    running: list[Any] = [None] * writers
    folder: Any = None
    all_procs: list[Any] = []
    kills = 0
    seen_size = [0] * writers
    try:
        for round_ in range(12):
            for i in range(writers):
                if running[i] is None or not running[i].is_alive():
                    p = spawn_ctx.Process(target=w.acked_writer, args=(store_path, i, acks[i], rng.randrange(1 << 30)))
                    p.start()
                    running[i] = p
                    all_procs.append(p)
            if folder is None or not folder.is_alive():
                folder = spawn_ctx.Process(target=w.folder_loop, args=(store_path, stop))
                folder.start()
                all_procs.append(folder)
            # Let every writer acknowledge something first (spawned children
            # start slowly on a loaded machine), then kill at a random moment.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(_size(a) <= seen_size[i] for i, a in enumerate(acks)):
                time.sleep(0.02)
            seen_size = [_size(a) for a in acks]
            time.sleep(rng.uniform(0.05, 0.5))
            victim = folder if round_ % 3 == 2 else running[rng.randrange(writers)]
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(30)
            kills += 1
        for p in [*running, folder]:
            if p is not None and p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(30)
    finally:
        reap(all_procs, timeout=30)
    versions: list[int] = []
    with filemem.Store(store_path) as s:
        for i in range(writers):
            last, vs, batches = _parse_acks(acks[i])
            versions.extend(vs)
            for key, n in last.items():
                got = s.get(NS, key)
                assert got is not None and got["n"] >= n, (key, n, got)  # acked, or a later write
            gens = [s.get(NS, f"w{i}-b{j}") for j in range(4)]
            if batches:
                assert all(g is not None for g in gens)
                assert len({g["gen"] for g in gens}) == 1, gens  # a batch is never partial
                assert gens[0]["gen"] >= batches[-1][1]  # the last acknowledged batch, or a later one
        dup = [v for v, c in Counter(versions).items() if c > 1]
        assert dup == [], f"versions handed out twice: {dup[:5]}"
        fixed = s.check(fix=True)
        assert all(f.fixed or f.severity != "error" for f in fixed), fixed
        assert s.check() == []
    assert kills == 12 and len(versions) >= 12


def test_a_put_is_seen_by_another_process_on_its_very_next_cached_get(store_path: str, spawn_ctx: Any) -> None:
    """Not timed: after the writer's put returned and it said so, the reader's next cached get sees it."""
    rounds = 200
    with filemem.Store(store_path, cache_ttl_s=3600, watch="off") as reader:
        reader.put(NS, "seen", -1)
        assert reader.get(NS, "seen") == -1  # cached now, for an hour, with no watcher
        here, there = spawn_ctx.Pipe()
        p = spawn_ctx.Process(target=w.visibility_writer, args=(store_path, there, rounds))
        p.start()
        try:
            stale = 0
            while True:
                assert here.poll(60)
                i = here.recv()
                if i is None:
                    break
                if reader.get(NS, "seen") != i:
                    stale += 1
                here.send("ok")
            assert stale == 0
        finally:
            reap([p])
        assert p.exitcode == 0
