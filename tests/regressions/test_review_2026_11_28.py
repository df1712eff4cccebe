"""Reproducers of defects the review of 2026-11-28 found (search, async, maintenance, admin)."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

import filemem
from filemem import _maintain, admin
from filemem.aio import AsyncStore
from tests.cli._util import run


@pytest.mark.store_format(1)  # format 1's write path (see the v2-default report)
def test_a_failed_convert_switches_back_and_leaves_every_shard_writable(store_path: str, monkeypatch: Any) -> None:
    """Finding 4: msgpack -> json convert while a live agent stores bytes between the sweeps."""
    agent = filemem.Store(store_path, codec="msgpack", watch="off")  # opened before the convert: msgpack
    agent.put("ns", "a", "plain")
    real_switch = _maintain._switch_marker
    raced: list[bool] = []

    def switch(engine: Any, name: str) -> None:
        if not raced:
            raced.append(True)
            agent.put("ns", "blob", b"\x00\x01")  # legal for its codec, impossible in json
        real_switch(engine, name)

    monkeypatch.setattr(_maintain, "_switch_marker", switch)
    with admin.open_store(store_path, readonly=False) as conv:
        with pytest.raises(filemem.InvalidValueError, match="cannot encode"):
            admin.convert(conv, "json")
        assert conv.codec == "msgpack"  # the converting process is back on the store's codec
        conv.put("ns", "c", b"bytes again")
    monkeypatch.undo()
    with filemem.Store(store_path, watch="off") as later:  # the marker was switched back
        assert later.codec == "msgpack"
        later.put("ns", "a", "an unrelated write")
    agent.put("ns", "a", "x")
    assert agent.get("ns", "blob") == b"\x00\x01"
    assert agent.check() == []
    agent.close()


def test_a_shard_holding_what_the_marker_codec_cannot_encode_keeps_its_codec(tmp_path: Path) -> None:
    """Finding 4, the writer's side: a process on json meets a msgpack shard holding bytes."""
    path = str(tmp_path / "s")
    with filemem.Store(path, codec="msgpack", watch="off") as old:
        old.put("ns", "blob", b"\x00")
    with admin.open_store(path, readonly=False) as store:
        engine = store._engine
        engine.codec = engine._codecs["json"] = filemem.codecs.get_codec("json")
        store.put("ns", "other", "text")  # must not fail on the neighbour's bytes
    with filemem.Store(path) as again:
        assert again.get("ns", "blob") == b"\x00" and again.get("ns", "other") == "text"
        assert again.check() == []


def test_cancelled_async_calls_that_create_resources_close_them(store_path: str) -> None:
    """Finding 5: a collector or subscription created by a call cancelled mid-way was left running."""
    before = {t.name for t in threading.enumerate()}

    async def main() -> None:
        async with AsyncStore(store_path) as store:
            for make in (
                store.collector,
                lambda: store.subscribe(lambda c: None),
                lambda: store.subscribe_sessions(lambda c: None),
            ):
                for delay in (0, 0.0005, 0.002, 0.01):
                    task = asyncio.ensure_future(_awaitable(make()))
                    await asyncio.sleep(delay)
                    task.cancel()
                    try:
                        got = await task
                    except asyncio.CancelledError:
                        continue
                    await _close(got)
            journals = os.path.join(store_path, "journals")
            assert not os.path.isdir(journals) or [n for n in os.listdir(journals) if n.endswith(".journal")] == []

    asyncio.run(main())
    left = {t.name for t in threading.enumerate()} - before
    assert not {n for n in left if n.startswith(("filemem-collector", "filemem-journal", "filemem-subscriber"))}


async def _awaitable(x: Any) -> Any:
    return await x


async def _close(x: Any) -> None:
    if hasattr(x, "aclose"):
        await x.aclose()
    else:
        x.close()


def test_export_to_a_file_is_private_and_never_partial(tmp_path: Path) -> None:
    """Finding 6: `filemem export -o FILE` wrote the dump with the umask's permissions (0644)."""
    path = str(tmp_path / "s")
    with filemem.Store(path) as store:
        store.put("ns", "k", {"secret": True})
    out = tmp_path / "dump.jsonl"
    old = os.umask(0o022)
    try:
        assert run("export", path, "-o", str(out)).rc == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert '"secret"' in out.read_text()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_create_locked_waits_out_a_prober_and_leaves_nothing_when_it_fails(tmp_path: Path, monkeypatch: Any) -> None:
    """Review A, finding 2: a checker probing a just-created intent made the writer's batch fail and left garbage."""
    from filemem import _locks

    real_try = _locks._try
    probes = {"n": 0}

    def busy_once(fd: int, flags: Any, path: str) -> bool:
        probes["n"] += 1
        return False if probes["n"] == 1 else real_try(fd, flags, path)  # a prober held it for a moment

    monkeypatch.setattr(_locks, "_try", busy_once)
    held = _locks.create_locked(str(tmp_path / "a"))
    assert probes["n"] >= 2
    held.release()
    monkeypatch.setattr(_locks, "_try", lambda fd, flags, path: False)
    monkeypatch.setattr(_locks, "_CREATE_LOCK_WAIT_S", 0.05)
    with pytest.raises(filemem.LockTimeout):
        _locks.create_locked(str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_check_leaves_a_live_writers_intent_temp_alone(store_path: str) -> None:
    """Review A, finding 2: check() took the lock of an intent its live writer was still creating."""
    from filemem import _fs

    with filemem.Store(store_path) as store:
        store.put("ns", "k", 1)
        os.makedirs(os.path.join(store_path, "batches"), exist_ok=True)
        live = os.path.join(store_path, "batches", f"x.batch{_fs.TEMP_MARK}{os.getpid()}-abcd")
        with open(live, "wb"):
            pass
        assert store.check(fix=True) == []
        assert os.path.exists(live)
        os.unlink(live)


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_import_refuses_an_infinite_expiry_up_front_and_writes_nothing(tmp_path: Path, codec: str) -> None:
    """Review C, finding 1: `Infinity` as expires_at passed validation, then failed mid-import (or was stored)."""
    lines = [f'{{"namespace": ["ns"], "key": "k{i}", "value": {i}}}' for i in range(5)]
    lines.append('{"namespace": ["ns"], "key": "bad", "value": 1, "expires_at": Infinity}')
    with filemem.Store(str(tmp_path / "s"), codec=codec) as store:
        for dry_run in (True, False):
            with pytest.raises(filemem.InvalidValueError, match="line 6"):
                admin.import_records(store, lines, batch_size=2, dry_run=dry_run)
        assert store.list_namespaces() == []
        with pytest.raises(filemem.InvalidValueError, match="finite"):
            store.put("ns", "k", 1, ttl=float("inf"))


def test_import_takes_a_record_carrying_a_filemem_export_field_as_data(tmp_path: Path) -> None:
    """Review C, finding 10: any object with a 'filemem_export' field was skipped as a header."""
    lines = [
        '{"filemem_export": 1, "codec": "json"}',
        '{"namespace": ["ns"], "key": "z", "value": {"filemem_export": 3}, "filemem_export": 3}',
    ]
    with filemem.Store(str(tmp_path / "s")) as store:
        assert admin.import_records(store, lines).imported == 1
        assert store.get("ns", "z") == {"filemem_export": 3}
        with pytest.raises(filemem.InvalidValueError, match="export format"):
            admin.import_records(store, ['{"filemem_export": 0}'])
