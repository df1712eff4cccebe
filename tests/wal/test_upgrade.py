"""Upgrading the golden v1 stores (fixtures/) to format 2, and refusing what this filemem cannot read."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import filemem
import filemem.admin
from filemem import _engine
from tests.cli._util import run as run_cli

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def _copy(tmp_path: Path, name: str) -> str:
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    return str(dest)


def _contents(store: filemem.Store) -> dict[str, dict[str, object]]:
    return {"/".join(ns): {it.key: it.value for it in store.items(ns)} for ns in store.list_namespaces()}


def _marker(path: str) -> dict[str, object]:
    return json.loads(Path(path, "filemem.json").read_text())


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_a_v1_golden_store_upgrades_in_place_and_keeps_everything(tmp_path: Path, codec: str) -> None:
    path = _copy(tmp_path, f"v1-{codec}")
    with filemem.Store(path, readonly=True) as ro:
        top = max(it.version for ns in ro.list_namespaces() for it in ro.items(ns))
    with filemem.Store(path) as store:  # new stores are v2 here: a read-write open upgrades
        assert _marker(path)["filemem"] == 2 and store._engine.log is not None
        got = _contents(store)
        assert got["agent-1/facts"].pop("far-future") == "still here"
        assert got == EXPECTED
        v = store.put(("agent-1", "facts"), "sky", "grey")
        assert v > top  # versions continue above every v1 version: no ABA across the upgrade
        with pytest.raises(filemem.ConflictError):
            store.put(("agent-1", "facts"), "sky", "x", if_version=top)
        assert store.check() == []
    with filemem.Store(path, readonly=True) as ro:  # at rest: every record in the shards
        assert ro.get(("agent-1", "facts"), "sky") == "grey"
        assert ro.check() == []


def test_explicit_upgrade_where_new_stores_are_still_v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine._marker, "NEW_STORE_FORMAT", 1)
    path = _copy(tmp_path, "v1-json")
    with filemem.Store(path) as store:
        assert store._engine.log is None  # a read-write open leaves it at v1
        assert filemem.admin.upgrade(store) is True
        assert filemem.admin.upgrade(store) is False  # idempotent
        assert _marker(path)["filemem"] == 2 and store._engine.log is not None
        store.put(("agent-1", "facts"), "sky", "grey")
    with filemem.Store(path) as again:  # a v2 store stays v2, whatever new stores are
        assert again._engine.log is not None and again.get(("agent-1", "facts"), "sky") == "grey"


def test_convert_upgrade_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine._marker, "NEW_STORE_FORMAT", 1)
    path = _copy(tmp_path, "v1-json")
    res = run_cli("convert", path, "--upgrade", "--json")
    assert res.rc == 0, res
    assert json.loads(res.out) == {"upgraded": True, "format": 2}
    assert _marker(path)["filemem"] == 2
    res = run_cli("convert", path)
    assert res.rc == 2 and "--upgrade" in res.err


def test_a_store_of_a_newer_format_is_refused_and_untouched(tmp_path: Path) -> None:
    path = _copy(tmp_path, "v1-json")
    marker = Path(path, "filemem.json")
    marker.write_text(json.dumps({"filemem": 3, "codec": "json"}))
    before = sorted(os.listdir(path))
    for readonly in (True, False):
        with pytest.raises(filemem.UnsupportedFormatError, match="format version 3; this filemem reads up to 2"):
            filemem.Store(path, readonly=readonly)
    assert sorted(os.listdir(path)) == before and "wal" not in before
