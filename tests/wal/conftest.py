"""Every store these tests create is a v2 store: the write-ahead log in front of the shards.

(They are also the default; this keeps them on the log when CI runs a subset
with ``FILEMEM_STORE_FORMAT=1``.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import filemem
from filemem import _engine
from filemem._engine import _log as engine_log


@pytest.fixture(autouse=True)
def _new_stores_use_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine._marker, "NEW_STORE_FORMAT", _engine.STORE_FORMAT_VERSION)
    monkeypatch.setenv("FILEMEM_STORE_FORMAT", str(_engine.STORE_FORMAT_VERSION))  # spawned children read it


@pytest.fixture(params=["fsync", "flush"])
def pair(store_path: str, request: pytest.FixtureRequest) -> Iterator[tuple[filemem.Store, filemem.Store]]:
    """Two handles on one store, both durable ("fsync") or both "flush" (the blind-put tests)."""
    with (
        filemem.Store(store_path, durability=request.param) as a,
        filemem.Store(store_path, durability=request.param) as b,
    ):
        yield a, b


@pytest.fixture
def no_background_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes leave the log unfolded until the test folds (no folder thread, no back-pressure fold)."""
    monkeypatch.setattr(engine_log.LogGlue, "_poke_folder", lambda self, *, now: None)
    monkeypatch.setattr(engine_log, "FOLD_BYTES", 1 << 40)
    monkeypatch.setattr(engine_log, "BACKLOG_BYTES", 1 << 40)
