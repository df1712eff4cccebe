"""Issue 12, item 6: the smaller findings, one test each (each fails on the code before the fix)."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import filemem
from filemem import InvalidKeyError, InvalidValueError
from filemem._cli import main
from filemem._engine import Engine, Op
from filemem._names import escape_segment, unescape_segment
from tests.helpers import apply_puts_via_apply


def _files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _dirs(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, x), root) for d, xs, _ in os.walk(root) for x in xs)


# ---------------------------------------------------------------------- collector and a full disk


def test_a_transiently_full_disk_dead_letters_nothing(store: filemem.Store, monkeypatch: Any) -> None:
    real = Engine.apply
    full = threading.Event()
    full.set()

    refused: list[int] = []

    def disk_full_for_big(engine: Engine, ops: list[Op]) -> list[Any]:
        # The disk has room for the small records, not for "big", until it is freed.
        if full.is_set() and any(op.key == "big" for op in ops):
            refused.append(1)
            raise filemem.StorageError("could not write: disk full", errno=errno.ENOSPC, path=engine.root)
        return real(engine, ops)

    monkeypatch.setattr(Engine, "apply", disk_full_for_big)
    # The collector commits through the tuple entry point: route it to the patched apply.
    monkeypatch.setattr(Engine, "apply_puts", apply_puts_via_apply)
    with store.collector(max_retries=1, backoff_base=0.005, backoff_max=0.02, breaker_reset=0.05) as c:
        for i in range(10):
            c.collect("full", f"k{i}", i)
        c.collect("full", "big", "x" * 1000)
        deadline = time.monotonic() + 10
        while c.stats()["applied"] < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # several isolate rounds happen here
        assert c.stats()["dead_letters"] == 0
        assert refused, "the injected full disk was never met"
        full.clear()  # space freed
        c.flush(timeout=10)
        assert c.stats()["applied"] == 11 and c.stats()["dead_letters"] == 0
    assert store.get("full", "big") == "x" * 1000
    assert store.dead_letters() == []


# ---------------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize("how", ["put", "update", "batch", "collect"])
def test_a_lone_surrogate_is_an_invalid_value_and_creates_nothing(store_path: str, codec: str, how: str) -> None:
    with filemem.Store(store_path, codec=codec) as store:
        before = _files(store_path)
        bad = {"text": "half a pair: \ud800"}
        with pytest.raises(InvalidValueError):
            if how == "put":
                store.put("ns", "k", bad)
            elif how == "update":
                store.update("ns", "k", lambda _: bad)
            elif how == "batch":
                with store.batch() as b:
                    b.put("ns", "k", bad)
            else:
                with store.collector() as c:
                    c.collect("ns", "k", bad)
        assert not os.path.exists(os.path.join(store_path, "ns", "ns"))
        if how != "collect":  # a collector has its own journal files
            assert _files(store_path) == before


def test_import_of_a_lone_surrogate_is_a_clear_error(tmp_path: Path, capsys: Any) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"namespace": ["a"], "key": "k", "value": "\\ud800"}\n')
    root = str(tmp_path / "s")
    assert main(["import", "--create", root, str(src)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "surrogate" in err


# ---------------------------------------------------------------------- oversize records


def test_an_oversize_record_creates_no_directory_or_lock(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    with filemem.Store(root, max_value_bytes=1024) as store:
        before = (_files(root), _dirs(root))
        # The value alone fits; with its metadata the record does not.
        with pytest.raises(InvalidValueError):
            store.put("big", "k", "x" * 1000)
        with pytest.raises(InvalidValueError):
            store.update("big2", "k", lambda _: "x" * 5000)
        with pytest.raises(InvalidValueError):
            store.batch().put("big3", "k", "x" * 1000)
        assert (_files(root), _dirs(root)) == before


def test_a_record_that_passes_the_early_check_is_stored(tmp_path: Path) -> None:
    with filemem.Store(str(tmp_path / "s"), max_value_bytes=1024) as store:
        store.put("ok", "k", "x" * 800, ttl=60)
        assert store.get("ok", "k") == "x" * 800


# ---------------------------------------------------------------------- list_namespaces depth


def test_list_namespaces_depth_zero_and_negative(store: filemem.Store) -> None:
    store.put(("a", "b"), "k", 1)
    assert store.list_namespaces(max_depth=1) == [("a",)]
    assert store.list_namespaces(max_depth=0) == []
    with pytest.raises(InvalidValueError):
        store.list_namespaces(max_depth=-1)
    with pytest.raises(InvalidValueError):
        store.list_namespaces(max_depth=True)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- deep import


def test_import_of_a_very_deep_value_is_a_clear_error(tmp_path: Path, capsys: Any) -> None:
    src = tmp_path / "deep.jsonl"
    src.write_text('{"namespace": ["a"], "key": "k", "value": ' + "[" * 5000 + "0" + "]" * 5000 + "}\n")
    root = str(tmp_path / "s")
    assert main(["import", "--create", root, str(src)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err and "deep" in err


# ---------------------------------------------------------------------- '/' inside a segment


def test_a_tuple_segment_may_not_contain_a_slash(store: filemem.Store) -> None:
    with pytest.raises(InvalidKeyError):
        store.put(("a/b",), "k", 1)
    store.put("a/b", "k", 1)
    assert store.list_namespaces() == [("a", "b")]
    for ns in store.list_namespaces():
        assert store.get("/".join(ns), "k") == store.get(ns, "k") == 1


# ---------------------------------------------------------------------- Windows device names


@pytest.mark.parametrize("name", ["con", "prn", "aux", "nul", "com1", "com9", "lpt1", "lpt9"])
def test_windows_device_names_are_escaped(name: str) -> None:
    escaped = escape_segment(name)
    assert escaped != name and escaped.startswith("%")
    assert unescape_segment(escaped) == name
    assert escape_segment(name + "x") == name + "x"  # only the exact names are reserved


def test_a_store_written_before_device_name_escaping_stays_readable_and_writable(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with filemem.Store(str(root)) as store:
        store.put("nul", "k", "new layout")
    assert os.listdir(root / "ns") == ["%6Eul"]
    # What an older filemem wrote: the bare device name as the directory.
    old = tmp_path / "old"
    with filemem.Store(str(old)) as store:
        store.put("x", "k", 1)
    os.rename(old / "ns" / "x", old / "ns" / "con")
    with filemem.Store(str(old)) as store:
        assert store.list_namespaces() == [("con",)]
        assert store.get("con", "k") == 1
        store.put("con", "k2", 2)  # keeps writing where the data is
        assert store.check() == []
    assert sorted(os.listdir(old / "ns")) == ["con"]


# ---------------------------------------------------------------------- raw OSError


def test_syncfs_open_failure_is_a_storage_error(tmp_path: Path) -> None:
    from filemem import _fs

    if not _fs.can_sync_filesystem():
        pytest.skip("no syncfs here")
    with pytest.raises(filemem.StorageError):
        _fs.sync_filesystem(str(tmp_path / "missing"))


def test_convert_with_an_unreadable_marker_is_a_storage_error(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with filemem.Store(str(root)) as store:
        store.put("a", "k", 1)
        os.unlink(root / "filemem.json")  # gone under a running conversion
        from filemem._maintain import convert

        with pytest.raises(filemem.StorageError):
            convert(store._engine, "msgpack")


def test_export_header_is_json(tmp_path: Path) -> None:
    """Sanity for the import tests above: an export round-trips through import."""
    root = str(tmp_path / "s")
    with filemem.Store(root) as store:
        store.put("a", "k", {"v": 1})
    out = tmp_path / "dump.jsonl"
    assert main(["export", root, "-o", str(out)]) == 0
    head = json.loads(out.read_text().splitlines()[0])
    assert head["filemem_export"] >= 1
