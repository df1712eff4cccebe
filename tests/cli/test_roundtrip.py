"""export then import round-trips a store exactly (both codecs), and the value tagging is lossless."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import filemem
import filemem.admin as admin
from tests.cli._util import copy_fixture, run, tree_hash


def _contents(path: str) -> dict[tuple[tuple[str, ...], str], tuple[Any, float | None]]:
    with filemem.Store(path, readonly=True) as store:
        return {
            (it.namespace, it.key): (it.value, it.expires_at)
            for ns in store.list_namespaces()
            for it in store.items(ns)
        }


def _same(a: dict[Any, Any], b: dict[Any, Any]) -> None:
    assert a.keys() == b.keys()
    for k, (va, xa) in a.items():
        vb, xb = b[k]
        assert va == vb and type(va) is type(vb), k
        assert (xa is None) == (xb is None), k
        if xa is not None:
            assert abs(xa - xb) < 5.0, k  # expiry becomes a TTL from the import: within the run's duration


def _populate(path: str, codec: str) -> None:
    with filemem.Store(path, codec=codec, shard_max_bytes=2048) as store:
        for i in range(150):
            store.put(("agents", f"a{i % 3}", "episodic"), f"ep-{i}", {"i": i, "ok": i % 2 == 0, "t": "é" * (i % 5)})
        store.put(("odd values",), "dollar", {"$bytes": "not really"})  # a genuine dict that looks like a tag
        store.put(("odd values",), "float", 0.1 + 0.2)
        store.put(("odd values",), "big", 2**62)
        store.put(("odd values",), "ttl", "soon gone", ttl=3600)
        store.put(("odd values",), "nested", [[[]], {}, None, True, ""])
        if codec == "msgpack":
            store.put(("odd values",), "bytes", {"raw": b"\x00\xffbin", 7: "int key", b"k": [b""]})
        store.put(("odd values",), "deleted", 1)
        store.delete(("odd values",), "deleted")


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_export_import_round_trip(tmp_path: Path, codec: str) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    _populate(src, codec)
    dump = tmp_path / "dump.jsonl"
    expected = _contents(src)
    assert len(expected) == 155 + (codec == "msgpack")
    res = run("export", src, "-o", str(dump), "--json")
    assert res.rc == 0 and json.loads(res.out)["exported"] == len(expected)
    res = run("import", dst, str(dump), "--create", "--codec", codec, "--batch-size", "40", "--json")
    assert res.rc == 0, res
    report = json.loads(res.out)
    assert report["imported"] == len(expected) and report["batches"] == math.ceil(report["imported"] / 40)
    _same(expected, _contents(dst))
    with filemem.Store(dst, readonly=True) as store:
        assert store.codec == codec
        assert store.check() == []
    # Exporting the copy gives the same records again (versions and times are the new store's own).
    again = io.StringIO()
    with admin.open_store(dst) as store:
        admin.export_records(store, again, header=False)
    first = [json.loads(line) for line in dump.read_text().splitlines()[1:]]
    second = [json.loads(line) for line in again.getvalue().splitlines()]
    strip = lambda rows: sorted((r["namespace"], r["key"], json.dumps(r["value"], sort_keys=True)) for r in rows)  # noqa: E731
    assert strip(first) == strip(second)


def test_fixture_round_trip_across_codecs(tmp_path: Path) -> None:
    src = copy_fixture(tmp_path, "v1-json")
    res = run("export", src)
    dst = str(tmp_path / "copy")
    assert run("import", dst, "--create", "--codec", "msgpack", stdin=res.out).rc == 0
    _same(_contents(src), _contents(dst))


def test_expired_records_are_skipped(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    filemem.Store(path).close()
    past = time.time() - 10
    text = (
        json.dumps({"namespace": ["a"], "key": "old", "value": 1, "expires_at": past})
        + "\n"
        + json.dumps({"namespace": ["a"], "key": "new", "value": 2, "expires_at": time.time() + 100})
        + "\n"
    )
    res = run("import", path, "--json", stdin=text)
    assert json.loads(res.out)["expired_skipped"] == 1
    with filemem.Store(path, readonly=True) as store:
        assert store.keys("a") == ["new"]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path, "v1-msgpack")
    before = tree_hash(path)
    text = "".join(json.dumps({"namespace": ["n", str(i)], "key": f"k{i}", "value": i}) + "\n" for i in range(50))
    res = run("import", path, "--dry-run", "--batch-size", "20", "--json", stdin=text)
    assert json.loads(res.out) == {
        "imported": 50,
        "expired_skipped": 0,
        "batches": 3,
        "namespaces": 50,
        "dry_run": True,
    }
    assert tree_hash(path) == before


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.dictionaries(st.integers(-5, 5) | st.binary(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_value_tagging_round_trips(value: Any) -> None:
    text = json.dumps(admin.to_json_value(value))
    assert admin.from_json_value(json.loads(text)) == value
