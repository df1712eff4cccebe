"""Every command on the golden fixture stores (copies of them), both codecs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import filemem
from tests.cli._util import CLEAN, FIXTURES, copy_fixture, run, tree_hash

EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", CLEAN)
def test_read_commands_never_write(tmp_path: Path, name: str) -> None:
    path = copy_fixture(tmp_path, name)
    before = tree_hash(path)
    codec = name.split("-")[1]

    res = run("info", path, "--json")
    assert res.rc == 0, res
    info = json.loads(res.out)
    assert info["codec"] == codec and info["format_version"] == 1
    assert info["namespaces"] == 4 and info["records"] == 66 and info["shard_codecs"] == {codec: info["shards"]}
    assert "records:" in run("info", path).out

    res = run("ls", path, "--json")
    rows = [json.loads(line) for line in res.out.splitlines()]
    assert {"/".join(r["namespace"]): r["records"] for r in rows} == {
        "Tenant Acme/sub.ns": 1,
        "agent-1/episodic": 60,
        "agent-1/facts": 4,
        "tenant/acme-corp": 1,
    }
    table = run("ls", path, "agent-1/facts").out
    assert table.splitlines()[0].split() == ["KEY", "VERSION", "UPDATED", "EXPIRES", "VALUE"]
    assert "naïve café ✓" in table
    keys = [
        json.loads(line)["key"]
        for line in run("ls", path, "agent-1/episodic", "--json", "--limit", "5").out.splitlines()
    ]
    assert keys == [f"ep-{i:03d}" for i in range(5)]
    assert run("ls", path, "agent-1").out.split() == ["agent-1/episodic/", "agent-1/facts/"]

    res = run("get", path, "agent-1/facts", "nested")
    assert res.rc == 0 and json.loads(res.out) == EXPECTED["agent-1/facts"]["nested"]
    item = json.loads(run("get", path, "Tenant Acme/sub.ns", "k", "--json").out)
    assert item["value"] == 1 and item["version"] >= 1 and item["namespace"] == ["Tenant Acme", "sub.ns"]

    res = run("stats", path, "--json")
    stats = json.loads(res.out)
    assert stats["records"] == 66 and sum(stats["shard_sizes"].values()) == stats["shards"] == info["shards"]
    assert stats["locks"] == {"lock_files": 0, "held_now": 0}
    assert "shard sizes" in run("stats", path).out

    res = run("export", path)
    lines = res.out.splitlines()
    assert json.loads(lines[0])["filemem_export"] == 1 and len(lines) == 67

    res = run("check", path)
    assert res.rc == 0 and "clean" in res.out
    assert tree_hash(path) == before  # nothing above wrote a byte (not even a lock file)


@pytest.mark.parametrize("name", CLEAN)
def test_write_commands_on_a_copy(tmp_path: Path, name: str) -> None:
    path = copy_fixture(tmp_path, name)
    assert run("put", path, "agent-1/facts", "sky", '"grey"').rc == 0
    assert json.loads(run("get", path, "agent-1/facts", "sky").out) == "grey"
    res = run("put", path, "agent-1/facts", "sky", '"red"', "--if-version", "1")
    assert res.rc == 1 and "conflict" in res.err
    res = run("put", path, "new/ns", "k", '{"a": [1, 2]}', "--ttl", "3600", "--json")
    assert res.rc == 0 and json.loads(res.out)["version"] >= 1
    assert run("rm", path, "agent-1/facts", "sky").rc == 0
    res = run("rm", path, "agent-1/facts", "sky")
    assert res.rc == 1 and "no key" in res.err
    res = run("compact", path, "--json")
    assert res.rc == 0
    got = json.loads(res.out)
    assert got["namespaces"] == 5 and got["expired_dropped"] == 0
    # The fixture was built with 2 KiB shards; at the default limit its tiny leaves merge back.
    assert got["merges"] > 0
    res = run("import", path, "--dry-run", stdin='{"namespace": "x/y", "key": "k", "value": 1}\n')
    assert res.rc == 0 and "would import 1" in res.out
    assert run("import", path, stdin='{"namespace": "x/y", "key": "k", "value": 1}\n').rc == 0
    assert json.loads(run("get", path, "x/y", "k").out) == 1
    other = "msgpack" if "json" in name else "json"
    res = run("convert", path, "--codec", other, "--json")
    assert res.rc == 0, res
    assert json.loads(run("info", path, "--json").out)["shard_codecs"] == {
        other: json.loads(run("info", path, "--json").out)["shards"]
    }
    assert run("check", path).rc == 0
    with filemem.Store(path, readonly=True) as store:
        assert store.codec == other
        assert {it.key: it.value for it in store.items(("agent-1", "episodic"))} == EXPECTED["agent-1/episodic"]
        assert store.get(("agent-1", "facts"), "unicode") == "naïve café ✓"


def test_compact_drops_expired_records(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path, "v1-msgpack")
    with filemem.Store(path) as store:
        store.put(("agent-1", "facts"), "brief", "gone soon", ttl=0.05)
        store.put(("agent-1", "episodic"), "brief", "gone soon", ttl=0.05)
    time.sleep(0.1)
    info = json.loads(run("info", path, "--json").out)
    assert info["expired"] == 2 and info["records"] == 66
    res = run("compact", path, "--no-merge", "--json")
    assert res.rc == 0 and json.loads(res.out)["expired_dropped"] == 2 and json.loads(res.out)["merges"] == 0
    info = json.loads(run("info", path, "--json").out)
    assert info["expired"] == 0 and info["records"] == 66
