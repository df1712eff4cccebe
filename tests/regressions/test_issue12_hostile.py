"""Issue 12, items 4 and 5: FIFOs and symlinks planted inside a store.

Item 4: a FIFO where a shard, the marker, a batch intent, a lock or a journal
should be used to block ``open()`` for ever (past ``lock_timeout_s``). Now a
non-regular file is refused at once with StorageError and ``check()`` reports
it. Each case runs in a spawned child with a deadline, because on the old
code it hangs.

Item 5: ``ns/secret -> ../outside`` led ``put`` to write outside the store; a
dangling ``s.lock`` link made filemem create a file outside; a ``quarantine``
link made ``check --fix`` move a shard outside. Now nothing inside a store is
followed, and ``check()`` reports links.
"""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path
from typing import Any

import pytest

import filemem
from filemem import StorageError
from tests.helpers import reap

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and POSIX symlinks")

#: Far above what refusing takes, far below "for ever".
_DEADLINE_S = 30.0


def _fifo_child(root: str, what: str, out: Any) -> None:
    try:
        if what == "open":
            filemem.Store(root, lock_timeout_s=2).close()
        else:
            with filemem.Store(root, lock_timeout_s=2) as store:
                if what == "get":
                    store.get(("a",), "k", consistency="strict")
                elif what == "put":
                    store.put(("a",), "k2", 1)
                elif what == "check":
                    out.put(("findings", sorted({f.code for f in store.check()})))
                    return
        out.put(("ok", ""))
    except Exception as exc:  # the child reports whatever escaped
        out.put((type(exc).__name__, str(exc)))


def _plant_fifo(root: str, where: str) -> None:
    with filemem.Store(root) as store:
        store.put(("a",), "k", 1)
    if where == "journal":
        os.makedirs(os.path.join(root, "journals"), exist_ok=True)
    path = os.path.join(root, where)
    if os.path.exists(path):
        os.unlink(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path, 0o600)


@pytest.mark.store_format(1)  # format 1's write path (see the v2-default report)
@pytest.mark.parametrize(
    ("where", "what", "expected"),
    [
        ("ns/a/s.shard", "get", "StorageError"),
        ("ns/a/s.shard", "put", "StorageError"),
        ("ns/a/s.shard", "check", "findings"),
        ("ns/a/s.lock", "put", "StorageError"),
        ("filemem.json", "open", "StorageError"),
        ("batches/0123456789abcdef.batch", "open", "ok"),
        ("journals/deadbeef.journal", "open", "ok"),
        ("journals/deadbeef.journal", "check", "findings"),
    ],
)
def test_a_fifo_in_the_store_is_refused_at_once(
    tmp_path: Path, spawn_ctx: Any, where: str, what: str, expected: str
) -> None:
    root = str(tmp_path / "s")
    _plant_fifo(root, where)
    out = spawn_ctx.Queue()
    p = spawn_ctx.Process(target=_fifo_child, args=(root, what, out))
    started = time.monotonic()
    p.start()
    try:
        got = out.get(timeout=_DEADLINE_S)
    except queue.Empty:
        got = ("hung", f"no answer after {_DEADLINE_S}s")
    finally:
        reap([p], timeout=5)
    assert got[0] == expected, got
    assert time.monotonic() - started < _DEADLINE_S
    if expected == "StorageError":
        assert "FIFO" in got[1] or "special file" in got[1], got
    if expected == "findings":
        assert "special-file" in got[1]


# ---------------------------------------------------------------------- symlinks


def test_a_namespace_dir_link_leads_no_write_out_of_the_store(tmp_path: Path) -> None:
    root = tmp_path / "s"
    outside = tmp_path / "outside"
    outside.mkdir()
    filemem.Store(str(root)).close()
    (root / "ns").mkdir(exist_ok=True)
    os.symlink("../../outside", root / "ns" / "secret")
    with filemem.Store(str(root)) as store:
        with pytest.raises(StorageError, match="symbolic link"):
            store.put(("secret",), "k", 1)
        with pytest.raises(StorageError, match="symbolic link"):
            store.get(("secret",), "k")
        assert list(outside.iterdir()) == []
        found = store.check()
        assert [(f.code, os.path.basename(f.path)) for f in found] == [("symlink", "secret")]
        fixed = store.check(fix=True)
        assert fixed[0].fixed and os.path.islink(fixed[0].details["quarantined_to"])
        assert store.check() == []
        store.put(("secret",), "k", 1)  # now a real directory inside the store
    assert list(outside.iterdir()) == []
    assert (root / "ns" / "secret").is_dir() and not (root / "ns" / "secret").is_symlink()


@pytest.mark.store_format(1)  # format 1's write path (see the v2-default report)
def test_a_dangling_lock_link_creates_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with filemem.Store(str(root)) as store:
        store.put(("a",), "k", 1)
    os.unlink(root / "ns" / "a" / "s.lock")
    os.symlink("../../../planted.lock", root / "ns" / "a" / "s.lock")
    with filemem.Store(str(root)) as store:
        with pytest.raises(StorageError, match="symbolic link"):
            store.put(("a",), "k", 2)
        assert not (tmp_path / "planted.lock").exists()
        assert store.get(("a",), "k") == 1
        assert [f.code for f in store.check()] == ["symlink"]
        store.check(fix=True)
        store.put(("a",), "k", 2)
        assert store.get(("a",), "k") == 2
    assert not (tmp_path / "planted.lock").exists()


def test_a_shard_link_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with filemem.Store(str(root)) as store:
        store.put(("a",), "k", 1)
    shard = root / "ns" / "a" / "s.shard"
    real = tmp_path / "elsewhere.shard"
    os.replace(shard, real)
    os.symlink(real, shard)
    with filemem.Store(str(root)) as store, pytest.raises(StorageError, match="symbolic link"):
        store.get(("a",), "k", consistency="strict")


def test_a_quarantine_link_never_receives_a_corrupt_shard(tmp_path: Path) -> None:
    root = tmp_path / "s"
    outside = tmp_path / "outside"
    outside.mkdir()
    with filemem.Store(str(root)) as store:
        store.put(("a",), "k", 1)
    shard = root / "ns" / "a" / "s.shard"
    shard.write_bytes(b"garbage, not a shard")
    os.symlink(outside, root / "quarantine")
    with filemem.Store(str(root)) as store:
        found = store.check(fix=True)
    assert list(outside.iterdir()) == []
    assert shard.exists()
    codes = {f.code: f for f in found}
    assert codes["symlink"].path == str(root / "quarantine")
    assert codes["corrupt-shard"].fixed is False


def test_a_store_whose_own_path_is_a_link_still_works(tmp_path: Path) -> None:
    """Where a store lives is its user's choice: only links *inside* it are refused."""
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    root = tmp_path / "alias" / "store"
    os.symlink(tmp_path / "real-store", tmp_path / "link-store")
    for path in (root, tmp_path / "link-store"):
        if path.name == "link-store":
            (tmp_path / "real-store").mkdir()
        with filemem.Store(str(path)) as store:
            store.put(("a", "b"), "k", 1)
            with store.batch() as b:
                b.put("x", "k", 1)
                b.put("y", "k", 2)
            assert store.get(("a", "b"), "k") == 1
            assert store.check() == []
