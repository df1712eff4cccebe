"""Golden stores of format version 1 (fixtures/): today's code reads them, checks and repairs them.

If one of these fails after a change, the change altered the on-disk format:
that needs a new format version and a migration, not a new fixture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import filemem

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CODECS = ["json", "msgpack"]


def _copy(tmp_path: Path, name: str) -> str:
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    return str(dest)


def _contents(store: filemem.Store) -> dict[str, dict[str, object]]:
    return {"/".join(ns): {it.key: it.value for it in store.items(ns)} for ns in store.list_namespaces()}


@pytest.mark.parametrize("codec", CODECS)
def test_golden_store_reads_back_exactly(tmp_path: Path, codec: str) -> None:
    with filemem.Store(_copy(tmp_path, f"v1-{codec}"), readonly=True) as store:
        assert store.codec == codec
        got = _contents(store)
        assert got["agent-1/facts"].pop("far-future") == "still here"
        assert got == EXPECTED
        assert store.get(("Tenant Acme", "sub.ns"), "k") == 1
        assert store.list_namespaces(prefix=("tenant", "acme")) == []
        assert store.check() == []


@pytest.mark.parametrize("codec", CODECS)
def test_golden_store_accepts_writes(tmp_path: Path, codec: str) -> None:
    with filemem.Store(_copy(tmp_path, f"v1-{codec}"), shard_max_bytes=2048) as store:
        for i in range(60):
            store.update(("agent-1", "episodic"), f"ep-{i:03d}", lambda v: {**v, "seen": True})
        assert all(it.value["seen"] for it in store.items(("agent-1", "episodic")))
        assert store.check() == []


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("damage", "code"),
    [
        ("flipped-byte", "corrupt-shard"),
        ("truncated", "corrupt-shard"),
        ("leftover-temp", "temp-file"),
        ("foreign-file", "foreign-file"),
        ("unfinished-batch", "unfinished-batch"),
    ],
)
def test_damaged_golden_store(tmp_path: Path, codec: str, damage: str, code: str) -> None:
    path = _copy(tmp_path, f"v1-{codec}-{damage}")
    with filemem.Store(path, readonly=True) as ro:
        findings = ro.check()
        if code == "corrupt-shard":
            with pytest.raises(filemem.CorruptShardError):
                ro.items(("agent-1", "facts"))  # never served
    assert [f.code for f in findings] == [code]
    with filemem.Store(path) as store:  # opening read-write also recovers batches
        fixed = store.check(fix=True)
        remaining = store.check()
        if code == "foreign-file":
            assert remaining == findings  # reported, never touched
        else:
            assert remaining == []
            assert all(f.fixed for f in fixed)
        if damage == "unfinished-batch":
            assert store.get(("agent-1", "facts"), "sky") == "grey"
            assert store.get(("tenant", "acme-corp"), "k") == 3
        elif code == "corrupt-shard":
            assert list((Path(path) / "quarantine").iterdir())
            assert store.get(("agent-1", "episodic"), "ep-001") is not None  # the rest is intact
