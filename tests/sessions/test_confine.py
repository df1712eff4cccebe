"""Confinement: read-write to the own namespace, read-only to shared ones, nothing else; refusals change nothing."""

from __future__ import annotations

import hashlib
import os
import pickle
from typing import Any

import pytest

import filemem


def _tree(root: str) -> dict[str, str]:
    """Every file under ``ns/`` with a hash of its bytes."""
    out = {}
    for dirpath, _dirs, files in os.walk(os.path.join(root, "ns")):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_confined_session(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        store.put("docs", "howto", "read me")
        store.put("worker-4", "secret", 4)
        last = store.put(("team", "a"), "x", 1)
        with store.session("worker-3", namespace="worker-3", shared=["docs", ("team", "a")]) as s:
            fs = s.store
            # Allowed: read-write at and under its own namespace, read under shared ones.
            v = fs.put("worker-3", "k", {"v": 1})
            # A new key's version: 1 in its shard on format 1; the log's next sequence number on format 2.
            assert v == (1 if store._engine.log is None else last + 1)
            assert fs.put(("worker-3", "sub"), "k", 2) >= 1
            assert fs.update("worker-3", "n", lambda n: (n or 0) + 1) == 1
            assert fs.get("worker-3", "k") == {"v": 1}
            assert fs.get("docs", "howto") == "read me"
            assert fs.get_item(("team", "a"), "x") is not None
            assert fs.keys("docs") == ["howto"] and [i.key for i in fs.items("worker-3")] == ["k", "n"]
            assert fs.delete("worker-3", "n") is True
            with fs.batch() as b:
                b.put("worker-3", "b1", 1).delete("worker-3", "k")
            assert b.results == [b.results[0], True]
            assert set(fs.list_namespaces()) == {("docs",), ("team", "a"), ("worker-3",), ("worker-3", "sub")}
            ops = s.operations

            before = _tree(store_path)
            refused: list[tuple[str, Any]] = [
                ("put", lambda: fs.put("docs", "howto", "defaced")),
                ("put", lambda: fs.put("worker-4", "secret", 0)),
                ("delete", lambda: fs.delete("docs", "howto")),
                ("update", lambda: fs.update(("team", "a"), "x", lambda v: v + 1)),
                ("get", lambda: fs.get("worker-4", "secret")),
                ("get_item", lambda: fs.get_item("worker-4", "secret")),
                ("keys", lambda: fs.keys("worker-4")),
                ("items", lambda: fs.items(("team", "b"))),
                ("put", lambda: fs.put("worker-3x", "k", 1)),  # a sibling with the same prefix string
                ("put", lambda: fs.put("team", "k", 1)),  # the parent of a shared namespace
            ]
            for operation, call in refused:
                with pytest.raises(filemem.SessionPermissionError) as info:
                    call()
                assert info.value.operation == operation and info.value.session_id == s.id
                assert isinstance(info.value, PermissionError) and isinstance(info.value, filemem.FileMemError)
            with pytest.raises(filemem.SessionPermissionError, match="read-only"), fs.batch() as b:
                b.put("worker-3", "ok", 1)
                b.put("docs", "howto", "defaced")  # refused as it is queued: the batch is abandoned
            assert _tree(store_path) == before  # nothing changed on disk
            assert s.operations == ops  # refused calls are not counted
            assert store.get("worker-3", "ok") is None
        assert store.get("docs", "howto") == "read me" and store.get("worker-4", "secret") == 4


def test_unconfined_session_counts_everything(store_path: str) -> None:
    with filemem.Store(store_path) as store, store.session("free") as s:
        s.store.put("anywhere", "k", "v")
        s.store.get("elsewhere", "k")
        assert (s.operations, s.bytes_written) == (2, 3)


def test_permission_error_pickles() -> None:
    exc = filemem.SessionPermissionError("no", operation="put", namespace=("a",), session_id="ab" * 8)
    back = pickle.loads(pickle.dumps(exc))
    assert (type(back), back.operation, back.namespace, back.session_id, str(back)) == (
        filemem.SessionPermissionError,
        "put",
        ("a",),
        "ab" * 8,
        "no",
    )
    lim = pickle.loads(pickle.dumps(filemem.SessionLimitError("full", scope=("a",), limit=3, waited_s=1.5)))
    assert (lim.scope, lim.limit, lim.waited_s) == (("a",), 3, 1.5) and isinstance(lim, TimeoutError)


def test_readonly_store(store_path: str) -> None:
    with filemem.Store(store_path) as store, store.session("live"), filemem.Store(store_path, readonly=True) as ro:
        assert [i.agent for i in ro.sessions()] == ["live"]
        with pytest.raises(filemem.ReadOnlyError):
            ro.session("x")
        with pytest.raises(filemem.ReadOnlyError):
            ro.limit_sessions(3)


def test_facade_dies_with_its_session(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        with store.session("w", namespace="w") as s:
            fs = s.store
            fs.put("w", "k", 1)
        with pytest.raises(filemem.StoreClosedError):
            fs.put("w", "k", 2)
        with pytest.raises(filemem.StoreClosedError):
            fs.get("w", "k")
        assert store.get("w", "k") == 1
