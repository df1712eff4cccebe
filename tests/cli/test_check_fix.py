"""`filemem check` and `check --fix` on each damaged fixture, both codecs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import filemem
from tests.cli._util import DAMAGES, FIXTURES, copy_fixture, run, tree_hash

EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CODES = {
    "flipped-byte": "corrupt-shard",
    "truncated": "corrupt-shard",
    "leftover-temp": "temp-file",
    "foreign-file": "foreign-file",
    "unfinished-batch": "unfinished-batch",
}


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_check_then_fix(tmp_path: Path, codec: str, damage: str) -> None:
    path = copy_fixture(tmp_path, f"v1-{codec}-{damage}")
    before = tree_hash(path)
    res = run("check", path, "--json")
    assert res.rc == 1, res  # problems found
    assert [f["code"] for f in json.loads(res.out)] == [CODES[damage]]
    assert tree_hash(path) == before, "check without --fix wrote to the store"
    # info still works on a damaged store and says so.
    info = json.loads(run("info", path, "--json").out)
    if CODES[damage] == "corrupt-shard":
        assert info["damaged_shards"] == 1

    res = run("check", path, "--fix")
    # A foreign file is a warning that is never touched: exit 0 once everything fixable is fixed.
    assert res.rc == 0, res
    assert ("FIXED (" in res.out) == (damage != "foreign-file"), res.out
    res = run("check", path, "--json")
    remaining = [f["code"] for f in json.loads(res.out)]
    assert remaining == (["foreign-file"] if damage == "foreign-file" else [])
    with filemem.Store(path, readonly=True) as store:
        facts = {it.key: it.value for it in store.items(("agent-1", "facts"))}
        episodic = {it.key: it.value for it in store.items(("agent-1", "episodic"))}
    assert episodic == EXPECTED["agent-1/episodic"]
    if CODES[damage] == "corrupt-shard":
        assert facts == {}  # quarantined: its records are gone (restore from an export)
        assert json.loads(run("info", path, "--json").out)["quarantined"] == 1
    else:
        assert facts.pop("far-future") == "still here"
        assert facts == EXPECTED["agent-1/facts"] or damage == "unfinished-batch"


def test_compact_skips_and_convert_refuses_a_damaged_store(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path, "v1-json-truncated")
    res = run("compact", path, "--json")
    assert res.rc == 0 and json.loads(res.out)["damaged_skipped"] == 1
    before = tree_hash(path)
    res = run("convert", path, "--codec", "msgpack")
    assert res.rc == 3 and "corrupt shard" in res.err and "check --fix" in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert tree_hash(path) == before
