"""Every store these tests create is a v2 store: the write-ahead log in front of the shards.

(They are also the default; this keeps them on the log when CI runs a subset
with ``FILEMEM_STORE_FORMAT=1``.)
"""

from __future__ import annotations

import pytest

from filemem import _engine


@pytest.fixture(autouse=True)
def _new_stores_use_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine._marker, "NEW_STORE_FORMAT", _engine.STORE_FORMAT_VERSION)
    monkeypatch.setenv("FILEMEM_STORE_FORMAT", str(_engine.STORE_FORMAT_VERSION))  # spawned children read it
