"""Child-process entry points for the search process tests (spawned: module level, picklable args).

Children report through files written with one ``os.write`` (see
tests/concurrency/_workers.py for why).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import filemem
from tests.helpers import settle

from ..concurrency._workers import ack, die, open_ack, touch, write_result


def writer_child(path: str, tag: str, n: int, ack_path: str) -> None:
    """Put ``n`` records, each with a unique term, acking each after put() returned."""
    fd = open_ack(ack_path)
    with filemem.Store(path, shard_max_bytes=2048, durability="flush", watch="off") as s:
        for i in range(n):
            key = f"{tag}-{i}"
            s.put("n", key, {"text": f"alpha u{tag}x{i}", "i": i})
            ack(fd, key)
    os.close(fd)


def searcher_child(path: str, rounds: int, result_path: str) -> None:
    """Search over and over while others write; every hit must be a real, matching record."""
    bad = 0
    most = 0
    with filemem.Store(path, watch="off") as s:
        for _ in range(rounds):
            hits = s.search("n", "alpha", limit=10_000)
            most = max(most, len(hits))
            bad += sum(1 for h in hits if "alpha" not in h.item.value["text"])
    write_result(result_path, {"bad": bad, "most": most})


def churn_child(path: str, ready_path: str, seed: int) -> None:
    """Write and search forever (each search rewrites the index file) until killed."""
    rng = random.Random(seed)
    with filemem.Store(path, durability="flush", watch="off") as s:
        touch(ready_path)
        while True:
            s.put("n", f"k{rng.randrange(1500)}", {"text": f"alpha w{rng.randrange(50)} churn"})
            s._searcher._states.clear()  # forget: the next search rebuilds and rewrites the file
            s.search("n", f"w{rng.randrange(50)}", limit=3)


def torn_index_child(path: str, where: str) -> None:
    """Die in the middle of writing the index file: in its temp file, or (no fsync + power cut) in place."""
    from filemem import _fs
    from filemem._search import _searcher

    def write_half(path: str, entries: Any, config: str) -> Any:
        from filemem._search._indexfile import encode_index

        data = encode_index(entries, config)
        target = path if where == "in-place" else _fs.temp_path(path)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, data[: len(data) // 2])
        os.close(fd)
        die()

    _searcher.write_index = write_half  # type: ignore[assignment]
    with filemem.Store(path, watch="off") as s:
        s.put("n", "new", {"text": "alpha brandnew"})
        settle(s)  # format 2: the record reaches its shard (whose segment the index file then needs) at the fold
        s.search("n", "alpha")
    time.sleep(60)  # never reached
