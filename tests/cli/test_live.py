"""Every command against a store that other real processes are writing at the same time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

import filemem
from tests.cli import _children
from tests.cli._util import run, run_proc
from tests.helpers import reap


class Writers:
    def __init__(self, ctx: Any, path: str, tmp: Path, n: int = 2, min_rounds: int = 30) -> None:
        self.stop = str(tmp / "stop")
        self.results = [str(tmp / f"result-{w}.json") for w in range(n)]
        ready = [str(tmp / f"ready-{w}") for w in range(n)]
        self.procs = [
            ctx.Process(
                target=_children.writer_child,
                args=(path, w, self.stop, ready[w], self.results[w], min_rounds),
                daemon=True,
            )
            for w in range(n)
        ]
        for p in self.procs:
            p.start()
        deadline = time.monotonic() + 60
        while not all(os.path.exists(r) for r in ready):
            assert all(p.is_alive() for p in self.procs), "a writer died before it was ready"
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def finish(self) -> dict[str, int]:
        open(self.stop, "w").close()
        reap(self.procs, timeout=120)
        assert all(p.exitcode == 0 for p in self.procs), [p.exitcode for p in self.procs]
        total: dict[str, int] = {}
        for r in self.results:
            with open(r) as fh:
                for name, c in json.load(fh)["counts"].items():
                    total[name] = total.get(name, 0) + c
        return total


def _counters(path: str) -> dict[str, int]:
    with filemem.Store(path, readonly=True) as store:
        return {"/".join(ns) + "|" + it.key: it.value for ns in _children.COUNTER_NS for it in store.items(ns)}


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_every_command_while_processes_write(tmp_path: Path, spawn_ctx: Any, codec: str) -> None:
    path = str(tmp_path / "store")
    filemem.Store(path, codec=codec).close()
    writers = Writers(spawn_ctx, path, tmp_path)
    try:
        res = run("info", path, "--json")
        assert res.rc == 0 and json.loads(res.out)["records"] > 0
        assert run("ls", path).rc == 0
        assert run("ls", path, "live/n0", "--json").rc == 0
        res = run("get", path, "live/n0", "c0", "--json")
        assert res.rc == 0 and json.loads(res.out)["value"] >= 1
        assert run("stats", path, "--json").rc == 0
        res = run("export", path)
        assert res.rc == 0 and len(res.out.splitlines()) > 1
        dump = run("export", path, "--prefix", "live/churn").out
        assert dump.count("\n") > 1 and '"n0"' not in dump
        res = run("check", path, "--json")
        assert res.rc == 0 and json.loads(res.out) == [], res.out
        # Watch sees changes made by the other processes (a child process: the real command line).
        res = run_proc("watch", path, "live", "--json", "--count", "5", "--timeout", "60")
        changes = [json.loads(line) for line in res.out.splitlines()]
        assert res.rc == 0 and len(changes) == 5 and all(c["namespace"][0] == "live" for c in changes)
        for _ in range(3):
            res = run("compact", path, "--shard-max-bytes", "2048", "--json")
            assert res.rc == 0, res
        assert run("put", path, "cli/own", "k", '{"from": "cli"}').rc == 0
        assert run("rm", path, "cli/own", "k").rc == 0
        assert run("import", path, "--batch-size", "7", stdin=dump).rc == 0  # records the writers also write
        other = "msgpack" if codec == "json" else "json"
        res = run("convert", path, "--codec", other, "--json")
        assert res.rc == 0, res
        res = run("check", path, "--fix", "--json")
        assert res.rc == 0, res.out
    finally:
        total = writers.finish()
    # Whatever the commands did meanwhile (compactions merging and splitting
    # shards, a codec conversion, an import), no update was lost.
    assert _counters(path) == total
    with filemem.Store(path) as store:
        assert store.check() == []
        assert store.codec == other


@pytest.mark.parametrize(("start", "target"), [("json", "msgpack"), ("msgpack", "json")])
def test_convert_while_another_process_writes(tmp_path: Path, spawn_ctx: Any, start: str, target: str) -> None:
    path = str(tmp_path / "store")
    filemem.Store(path, codec=start).close()
    writers = Writers(spawn_ctx, path, tmp_path, n=2, min_rounds=60)
    try:
        res = run("convert", path, "--codec", target, "--json")
        assert res.rc == 0, res
        report = json.loads(res.out)
        assert report["from"] == start and report["to"] == target and report["converted"] > 0
        time.sleep(0.3)  # the writers keep writing after the switch
        # Readable and writable throughout, by everyone.
        assert run("check", path).rc == 0
        assert run("put", path, "cli/own", "k", "1").rc == 0
    finally:
        total = writers.finish()
    # No update was lost while shards were rewritten under the writers.
    assert _counters(path) == total
    # The writers opened the store before the switch and kept writing after it:
    # they followed the marker to the new codec at their next write.
    info = json.loads(run("info", path, "--json").out)
    assert info["codec"] == target
    assert info["shard_codecs"] == {target: info["shards"]}
    res = run("convert", path, "--codec", target, "--json")
    assert res.rc == 0 and json.loads(res.out)["converted"] == 0  # idempotent
    assert _counters(path) == total
    with filemem.Store(path) as store:
        assert store.codec == target and store.check() == []


@pytest.mark.store_format(1)  # a snapshot's shard locks hold format-1 writers; format 2: the test below
def test_a_busy_store_gives_a_clear_message_not_a_hang(tmp_path: Path, spawn_ctx: Any) -> None:
    path = str(tmp_path / "store")
    with filemem.Store(path) as store:
        store.put("ns", "k", 1)
    ready, stop = str(tmp_path / "ready"), str(tmp_path / "stop")
    holder = spawn_ctx.Process(target=_children.holder_child, args=(path, "ns", "k", ready, stop), daemon=True)
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            assert holder.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        res = run_proc("put", path, "ns", "k", "2", "--lock-timeout", "0.5")
        took = time.monotonic() - started
        assert res.rc == 4, res
        lines = res.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("filemem: store busy:") and "--lock-timeout" in lines[0]
        assert took < 20
        for args in (["compact", path], ["convert", path, "--codec", "msgpack"], ["rm", path, "ns", "k"]):
            res = run_proc(*args, "--lock-timeout", "0.5")
            assert res.rc == 4 and res.err.startswith("filemem: store busy:"), (args, res)
            assert len(res.err.strip().splitlines()) == 1
        # Reads are lock-free: they still work while the shard is held.
        assert json.loads(run("get", path, "ns", "k").out) == 1
    finally:
        open(stop, "w").close()
        reap([holder])
    assert json.loads(run("get", path, "ns", "k").out) == 1


@pytest.mark.store_format(2)
def test_a_busy_log_gives_a_clear_message_not_a_hang(tmp_path: Path, spawn_ctx: Any) -> None:
    """Format 2: a writer stuck holding the log's append lock; every command that writes says so in one line."""
    path = str(tmp_path / "store")
    with filemem.Store(path) as store:
        store.put("ns", "k", 1)
        assert store._engine.log is not None
    ready, stop = str(tmp_path / "ready"), str(tmp_path / "stop")
    holder = spawn_ctx.Process(target=_children.append_lock_holder_child, args=(path, ready, stop), daemon=True)
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            assert holder.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        for args, stdin in (
            (["put", path, "ns", "k", "2"], None),
            (["rm", path, "ns", "k"], None),
            (["import", path], '{"namespace": "ns", "key": "k", "value": 3}\n'),
        ):
            res = run_proc(*args, "--lock-timeout", "0.5", stdin=stdin)
            assert res.rc == 4, (args, res)
            lines = res.err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("filemem: store busy:") and "--lock-timeout" in lines[0]
        assert time.monotonic() - started < 60
        # Reads never take the append lock.
        assert json.loads(run("get", path, "ns", "k").out) == 1
    finally:
        open(stop, "w").close()
        reap([holder])
    assert json.loads(run("get", path, "ns", "k").out) == 1
