"""Read-your-writes after a blind commit, in every way a handle reads (issue 13, the chain rule).

A handle behind the log's end logs its plain puts blind and leaves its own
frame out of its overlay; the next read must bring the overlay up to the
synced end, its own frame included, and resolve the carried ``created_at``
against the other writer's unfolded record. Checked with fsync and flush,
warm hot-key table (the key read just before), ``consistency="strict"``,
the AsyncStore facade and a forked child writing through the handle it
inherited. These fail if a blind commit's frame is not read back before the
next read answers (a stale hot-key entry, a commit counter not moved) or if
a read resolves the carried time against the shard instead of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import warnings
from typing import Any

import pytest

import filemem

NS = ("readback", "ns")


def _behind(a: filemem.Store, b: filemem.Store) -> float:
    """``b`` has "k" hot; ``a`` overwrites it (unfolded) and writes more: ``b`` is behind. Return its created_at."""
    b.put(NS, "k", "b0")
    assert b.get(NS, "k") == "b0" and b.get(NS, "k") == "b0"  # in b's hot-key table
    first = b.get_item(NS, "k")
    assert first is not None
    a.put(NS, "k", "a1")
    a.put(NS, "other", 1)
    log = b._engine.log
    assert log is not None and log.overlay.tail < log.positions()[0]
    return first.created_at


def _blind(b: filemem.Store) -> int:
    log = b._engine.log
    assert log is not None
    return log.blind_commits


@pytest.mark.parametrize("consistency", [None, "strict"])
def test_the_next_read_sees_a_blind_put(pair: tuple[filemem.Store, filemem.Store], consistency: str | None) -> None:
    a, b = pair
    created = _behind(a, b)
    before = _blind(b)
    version = b.put(NS, "k", "b1")
    assert _blind(b) == before + 1
    kw: dict[str, Any] = {} if consistency is None else {"consistency": consistency}
    assert b.get(NS, "k", **kw) == "b1"
    got = b.get_item(NS, "k", **kw)
    assert got is not None and (got.value, got.version, got.created_at) == ("b1", version, created)
    other = a.get_item(NS, "k")
    assert other is not None and (other.value, other.version, other.created_at) == ("b1", version, created)


def test_asyncstore_reads_its_blind_put(pair: tuple[filemem.Store, filemem.Store]) -> None:
    a, b = pair
    created = _behind(a, b)
    durability = "flush" if b._engine.sync is False else "fsync"

    async def run() -> tuple[Any, Any, int]:
        async with filemem.AsyncStore(b.path, durability=durability) as s:
            assert await s.get(NS, "k") == "a1"  # its own handle, caught up: now make it behind
            a.put(NS, "other", 2)
            log = s._store._engine.log  # type: ignore[attr-defined]
            blind = log.blind_commits
            version = await s.put(NS, "k", "async")
            assert log.blind_commits == blind + 1
            return version, await s.get_item(NS, "k"), await s.get(NS, "k")

    version, item, value = asyncio.run(run())
    assert value == "async"
    assert item is not None and (item.value, item.version, item.created_at) == ("async", version, created)


def _in_child(b: filemem.Store) -> dict[str, Any]:
    before = _blind(b)
    version = b.put(NS, "k", "child")
    got = b.get_item(NS, "k")
    return {
        "blind": _blind(b) - before,
        "version": version,
        "value": b.get(NS, "k"),
        "item": None if got is None else [got.value, got.version, got.created_at],
    }


def test_a_forked_child_reads_its_blind_put(pair: tuple[filemem.Store, filemem.Store]) -> None:
    a, b = pair
    created = _behind(a, b)
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns into pytest
        code = 1
        try:
            os.close(r)
            os.write(w, json.dumps(_in_child(b)).encode())
            code = 0
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(w, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([r], [], [], 60)
            assert ready, "the child did not answer in 60 s"
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks))
    assert "error" not in report and os.waitstatus_to_exitcode(status) == 0, report
    assert report["blind"] == 1 and report["value"] == "child", report
    assert report["item"] == ["child", report["version"], created], report
    got = b.get_item(NS, "k")  # the parent's handle, behind too
    assert got is not None and (got.value, got.version, got.created_at) == ("child", report["version"], created)
