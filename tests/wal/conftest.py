"""Every store these tests create is a v2 store: the write-ahead log in front of the shards.

(The whole suite runs that way with ``FILEMEM_STORE_FORMAT=2``.)
"""

from __future__ import annotations

import pytest

from filemem import _engine


@pytest.fixture(autouse=True)
def _new_stores_use_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine._marker, "NEW_STORE_FORMAT", _engine.STORE_FORMAT_VERSION)
