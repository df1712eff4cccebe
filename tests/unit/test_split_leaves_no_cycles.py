"""A shard split leaves no reference cycle behind: the shard it split is freed at once, not by the garbage collector.

The split placed records with a recursive closure, which referred to itself
through its cell: every split kept the whole split shard (each record dict)
alive until the collector's next pass over the generation it had reached.
The fold splits a growing namespace thousands of times (issue 13: the
folding process's memory).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

import filemem
from filemem._shard import Shard

NS = ("agent", "facts")


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """Unreachable objects kept in ``gc.garbage`` instead of freed, with automatic collection off."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("fmt", ["1", "2"])
def test_splits_leave_no_shard_in_a_cycle(
    store_path: str, fmt: str, monkeypatch: pytest.MonkeyPatch, saved_garbage: list[object]
) -> None:
    monkeypatch.setenv("FILEMEM_STORE_FORMAT", fmt)
    with filemem.Store(store_path, shard_max_bytes=4096) as store:
        engine = store._backend.engine  # type: ignore[attr-defined]
        for start in range(0, 600, 50):
            with store.batch() as b:
                for i in range(start, start + 50):
                    b.put(NS, f"k-{i}", {"n": i, "text": "t" * 60})
            engine.settle()  # format 2: the fold writes (and splits) the shards
        assert engine.counters["splits"] >= 5, engine.counters["splits"]
        assert len(store.keys(NS)) == 600
        gc.collect()
        cyclic = [o for o in saved_garbage if isinstance(o, Shard)]
        assert cyclic == [], f"{len(cyclic)} shards were only reachable through reference cycles"
