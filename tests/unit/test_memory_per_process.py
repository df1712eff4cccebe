"""Memory per process (issue 13: peak RSS under sustained 4-writer load < 50 MB).

What a plain put/get process holds: the modules it imports, the parsed
shards it caches and the overlay of unfolded log records. Each test fails on
the code before the change: ``import filemem`` loaded asyncio (with ssl and
sockets) and portalocker (with importlib.metadata, email, zipfile), about
10 MB of RSS (and, until 2026-12-04, hashlib with OpenSSL: 3.6 MB more, for
BLAKE2b and SHA-256 that CPython also builds in; filemem._digest); a cached
shard kept an encoded copy of every record beside the parsed one; an unfolded
record from another process cost a closure and its argument tuple on top of
the logged op (766-797 bytes per 150-byte value measured by the last test
before the change, about 550 after).

With the portable fallbacks (``FILEMEM_PORTABLE_IO=1``, or a platform
without ``flock``) portalocker *is* the lock implementation, so it and what
it loads are expected there; every other heavy module is still refused.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest

import filemem
import filemem.admin
from filemem import _locks

NS = ("mem", "proc")
#: What the portable lock path loads: portalocker and, through it, importlib.metadata and email.
_PORTALOCKER = {"portalocker", "importlib.metadata", "email"}
VALUE = {"task": "login", "ok": True, "n": 0, "text": "x" * 100}

_PROBE = """
import json, sys
import filemem
import filemem.admin
with filemem.Store(sys.argv[1]) as s:
    s.put(("a",), "k", {"x": 1})
    assert s.get(("a",), "k") == {"x": 1}
    s.get(("a",), "k", consistency="strict")
    with s.batch() as b:
        b.put(("a",), "b", {"text": "hello"})
    with s.collector() as c:
        c.collect(("a",), "c", {"y": 2})
    filemem.admin.fold(s)  # the fold tells the search index of every write: it needs the index's config id
    assert s.search(("a",), "hello")[0].item.key == "b"
# hashlib loads OpenSSL (3.6 MB); tomllib is only for a collector config file.
heavy = ["asyncio", "portalocker", "importlib.metadata", "ssl", "email", "hashlib", "_hashlib", "tomllib", "secrets"]
before = [m for m in heavy if m in sys.modules]
kinds = (filemem.AsyncStore.__name__, filemem.Episodic.__name__)
print(json.dumps({"before": before, "kinds": kinds, "after": "asyncio" in sys.modules}))
"""


def test_a_plain_put_and_get_import_no_heavy_modules(store_path: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, store_path], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(out.stdout)
    if _locks._NATIVE:
        assert got["before"] == []
    else:  # the child inherited FILEMEM_PORTABLE_IO: it locked through portalocker, and loaded nothing else
        assert "portalocker" in got["before"]
        assert set(got["before"]) <= _PORTALOCKER, got["before"]
    # The lazy exports still resolve (and load what they need on first use).
    assert got["kinds"] == ["AsyncStore", "Episodic"]
    assert got["after"] is True


def test_lazy_exports_are_listed_and_importable() -> None:
    assert {"AsyncStore", "Episodic", "recall_context"} <= set(dir(filemem))
    from filemem import AsyncStore, Worklog

    assert AsyncStore.__name__ == "AsyncStore" and Worklog.__name__ == "Worklog"
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = filemem.NoSuchThing  # type: ignore[attr-defined]


@pytest.mark.store_format(2)
def test_cached_shards_of_a_logged_store_keep_no_encoded_copies(store_path: str) -> None:
    with filemem.Store(store_path, durability="flush") as s:
        with s.batch() as b:
            for i in range(500):
                b.put(NS, f"k{i}", VALUE)
        filemem.admin.fold(s)
    with filemem.Store(store_path) as r:
        for i in range(500):
            assert r.get(NS, f"k{i}", consistency="strict") == VALUE
        shards = [e.shard for e in r._backend.engine.cache._entries.values() if e.shard is not None]  # type: ignore[attr-defined]
        assert sum(len(sh.records) for sh in shards) == 500
        assert all(not sh.pairs for sh in shards)


def _writer(path: str, n: int, done: Any, stop: Any) -> None:
    with filemem.Store(path, durability="flush") as w:
        for i in range(n):
            w.put(NS, f"key-{i:05d}", {**VALUE, "n": i})
        done.set()
        stop.wait(60)


@pytest.mark.store_format(2)
def test_an_unfolded_record_from_another_process_costs_under_650_bytes(store_path: str) -> None:
    n = 2000
    ctx = mp.get_context("spawn")
    done, stop = ctx.Event(), ctx.Event()
    # The writer is another process (so its allocations and fold thread are not
    # measured here); the reader has no watcher thread (its change-feed reads
    # would be): what grows is the overlay alone.
    with filemem.Store(store_path, durability="flush") as init:
        init.put(NS, "absent-not", 0)
    with filemem.Store(store_path, watch="off") as r:
        r.get(NS, "absent")
        child = ctx.Process(target=_writer, args=(store_path, n, done, stop))
        child.start()
        try:
            assert done.wait(120), "the writer never finished"
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                r.get(NS, "absent")  # reads the new frames into r's overlay
                gc.collect()
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            held = r._backend.engine.log.overlay.count  # type: ignore[attr-defined]
        finally:
            stop.set()
            child.join(60)
            if child.is_alive():
                child.kill()
                child.join()
        if held < n:
            pytest.skip(f"a fold ran meanwhile (overlay holds {held} of {n}): nothing to measure")
        assert grown / n < 650, f"{grown / n:.0f} bytes per unfolded record"
        assert r.get(NS, "key-00007") == {**VALUE, "n": 7}  # decoded on first use
