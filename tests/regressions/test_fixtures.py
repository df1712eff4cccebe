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


# ---------------------------------------------------------------- format 2 (tools/make_fixtures.py --v2)

#: What the killed writer of v2-<codec>-unfolded-log logged (tools/make_fixtures.py UNFOLDED), plus its delete.
UNFOLDED = {
    "agent-1/facts": {"sky": "grey", "logged-only": {"n": 7}},
    "agent-2/new": {"k": "only in the log"},
}


def _expected_unfolded() -> dict[str, dict[str, object]]:
    want = json.loads(json.dumps(EXPECTED))
    for ns, records in UNFOLDED.items():
        want.setdefault(ns, {}).update(records)
    del want["agent-1/episodic"]["ep-000"]
    return want


def _tree(path: str) -> dict[str, bytes]:
    out = {}
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            out[str(f.relative_to(path))] = f.read_bytes()
    return out


def _in_shards(path: str, needle: bytes) -> bool:
    return any(needle in f.read_bytes() for f in Path(path, "ns").rglob("*.shard"))


@pytest.mark.parametrize("codec", CODECS)
def test_v2_golden_store_at_rest_reads_back_exactly(tmp_path: Path, codec: str) -> None:
    path = _copy(tmp_path, f"v2-{codec}")
    before = _tree(path)
    with filemem.Store(path, readonly=True) as store:
        assert store.codec == codec and store._engine.log is not None
        got = _contents(store)
        assert got["agent-1/facts"].pop("far-future") == "still here"
        assert got == EXPECTED
        assert store.check() == []
    assert {k: v for k, v in _tree(path).items() if not k.endswith(".lock")} == before  # read-only wrote nothing


@pytest.mark.parametrize("codec", CODECS)
def test_v2_golden_store_accepts_writes_with_versions_above_every_old_one(tmp_path: Path, codec: str) -> None:
    path = _copy(tmp_path, f"v2-{codec}")
    with filemem.Store(path, shard_max_bytes=2048) as store:
        top = max(it.version for ns in store.list_namespaces() for it in store.items(ns))
        for i in range(60):
            store.update(("agent-1", "episodic"), f"ep-{i:03d}", lambda v: {**v, "seen": True})
        assert all(it.value["seen"] for it in store.items(("agent-1", "episodic")))
        assert min(it.version for it in store.items(("agent-1", "episodic"))) > top
        assert store.check() == []
    with filemem.Store(path, readonly=True) as ro:  # at rest again: the shards hold it all
        assert all(it.value["seen"] for it in ro.items(("agent-1", "episodic")))
    assert _in_shards(path, b"seen")


@pytest.mark.parametrize("codec", CODECS)
def test_v2_unfolded_log_is_read_through_read_only_and_changes_nothing(tmp_path: Path, codec: str) -> None:
    """A writer was SIGKILLed with records only in the log: a read-only open serves them and writes nothing."""
    path = _copy(tmp_path, f"v2-{codec}-unfolded-log")
    assert not _in_shards(path, b"only in the log")  # really unfolded
    before = _tree(path)
    with filemem.Store(path, readonly=True) as store:
        got = _contents(store)
        assert got["agent-1/facts"].pop("far-future") == "still here"
        assert got == _expected_unfolded()
        assert store.get(("agent-1", "episodic"), "ep-000") is None  # the logged delete
        assert store.check() == []
    assert {k: v for k, v in _tree(path).items() if not k.endswith(".lock")} == before


@pytest.mark.parametrize("codec", CODECS)
def test_v2_unfolded_log_is_recovered_by_a_read_write_open(tmp_path: Path, codec: str) -> None:
    """The first read-write opener recovers what the dead writer logged; at rest again, the shards hold it.

    (The open serves it from the log at once and folds it in the background,
    in bounded steps, and at close: an open no longer waits for the fold.)
    """
    path = _copy(tmp_path, f"v2-{codec}-unfolded-log")
    with filemem.Store(path) as store:
        got = _contents(store)
        assert got["agent-1/facts"].pop("far-future") == "still here"
        assert got == _expected_unfolded()
        store.put(("agent-2", "new"), "after", 1)
        assert store.check() == []
    assert _in_shards(path, b"only in the log")  # folded by the background fold or the close
    with filemem.Store(path, readonly=True) as ro:
        assert ro._engine.unfolded(("agent-2", "new")) == {}  # nothing left in the log
        assert ro.get(("agent-2", "new"), "k") == "only in the log"
        assert ro.get(("agent-2", "new"), "after") == 1
        assert ro.get(("agent-1", "episodic"), "ep-000") is None
