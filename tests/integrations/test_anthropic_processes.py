"""Four processes edit one memory file at once: filemem's memory tool loses nothing.

Each process inserts its lines at the top of /memories/shared.txt and
replaces its own placeholder lines, through ``tool.call``. The SDK's
``BetaLocalFilesystemMemoryTool`` runs under the same load for comparison:
its losses are printed (read-modify-write without a lock), not asserted.
A writer SIGKILLed mid-run loses nothing it was told was done, and leaves the
store clean. filemem's side runs on each backend (a directory, a
``postgresql://`` URL: issue 16); the reference always on a directory.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import reap
from tests.integrations._children import memory_tool_child

pytest.importorskip("anthropic")

from filemem.integrations.anthropic import FileMemMemoryTool

PROCS = 4
PER_PROC = 15


def _seed_text() -> str:
    return "".join(f"slot-{p}-{i}.\n" for p in range(PROCS) for i in range(PER_PROC))


def _acks(path: Path) -> list[list[Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("]")]


def _race(ctx: mp.context.SpawnContext, kind: str, base: Path | str, tmp: Path) -> tuple[str, list[list[Any]]]:
    """Run the load against one tool kind; return the final file text and every ack."""
    go = tmp / f"{kind}.go"
    ack_paths = [tmp / f"{kind}-{p}.acks" for p in range(PROCS)]
    procs = [
        ctx.Process(target=memory_tool_child, args=(kind, str(base), p, PER_PROC, str(go), str(ack_paths[p])))
        for p in range(PROCS)
    ]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 300  # spawned children import the SDK: slow on a loaded machine
        while not all(Path(f"{a}.ready").exists() for a in ack_paths):
            assert time.monotonic() < deadline, "children did not start"
            assert all(p.is_alive() for p in procs), "a child died at start"
            time.sleep(0.01)
        go.touch()
        for p in procs:
            p.join(240)
        assert [p.exitcode for p in procs] == [0] * PROCS
    finally:
        reap(procs)
    acks = [a for path in ack_paths for a in _acks(path)]
    return _final_text(kind, base), acks


def _final_text(kind: str, base: Path | str, killed: bool = False) -> str:
    if kind == "reference":
        return (Path(base) / "memories" / "shared.txt").read_text()
    tool = FileMemMemoryTool(str(base))
    try:
        text = tool.call({"command": "view", "path": "/memories/shared.txt"})
        if killed:  # a writer killed mid-write leaves a temp file behind, nothing worse
            assert {f.code for f in tool.store.check(fix=True)} <= {"temp-file"}
        assert tool.store.check() == []
    finally:
        tool.close()
    # Strip the view's header and line numbers back to the file's lines.
    return "".join(line.partition("\t")[2] + "\n" for line in str(text).split("\n")[1:])


def _losses(text: str, acks: list[list[Any]]) -> tuple[int, int]:
    """(acked inserts missing, acked replacements missing) in the final text."""
    lines = set(text.split("\n"))
    lost_inserts = sum(1 for kind, what in acks if kind == "insert" and what not in lines)
    lost_replaces = sum(1 for kind, what in acks if kind == "replace" and what.replace("slot-", "done-") not in text)
    return lost_inserts, lost_replaces


def _seed(kind: str, base: Path | str) -> None:
    command = {"command": "create", "path": "/memories/shared.txt", "file_text": _seed_text()}
    if kind == "reference":
        from anthropic.tools.memory import BetaLocalFilesystemMemoryTool

        BetaLocalFilesystemMemoryTool(str(base)).call(command)
        return
    tool = FileMemMemoryTool(str(base))
    try:
        tool.call(command)
    finally:
        tool.close()


@pytest.mark.timeout(600)
def test_four_processes_insert_and_replace_lose_nothing(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext, capsys: pytest.CaptureFixture[str]
) -> None:
    report = {}
    for kind in ("filemem", "reference"):
        base: Path | str = location if kind == "filemem" else tmp_path / kind
        _seed(kind, base)
        text, acks = _race(spawn_ctx, kind, base, tmp_path)
        report[kind] = (_losses(text, acks), acks)
    (ins, rep), acks = report["filemem"]
    assert sum(1 for a in acks if a[0] == "insert") == PROCS * PER_PROC
    assert sum(1 for a in acks if a[0] == "replace") == PROCS * PER_PROC  # no slot ever went missing
    assert (ins, rep) == (0, 0)
    (rins, rrep), racks = report["reference"]
    refused = sum(1 for a in racks if a[0] == "refused")
    with capsys.disabled():
        print(
            f"\n[memory tool, {PROCS} processes x {PER_PROC} inserts + {PER_PROC} str_replace] "
            f"filemem lost 0/{PROCS * PER_PROC} inserts, 0/{PROCS * PER_PROC} replacements; "
            f"reference BetaLocalFilesystemMemoryTool lost {rins}/{PROCS * PER_PROC} inserts, "
            f"{rrep} acked replacements, and refused {refused} replacements whose slot an overwrite removed"
        )


def test_killed_writer_loses_nothing_acked(location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext) -> None:
    base = location
    _seed("filemem", base)
    go = tmp_path / "go"
    go.touch()
    acks = [tmp_path / f"k{p}.acks" for p in range(2)]
    procs = [
        spawn_ctx.Process(target=memory_tool_child, args=("filemem", str(base), p, 40, str(go), str(acks[p])))
        for p in range(2)
    ]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 300  # spawned children import the SDK: slow on a loaded machine
        while len(_acks(acks[0])) < 10:  # the victim is mid-run
            assert time.monotonic() < deadline and procs[0].is_alive()
            time.sleep(0.005)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[1].join(300)
        assert procs[1].exitcode == 0
    finally:
        reap(procs)
    text = _final_text("filemem", base, killed=True)  # also checks the store: nothing torn
    every = [a for path in acks for a in _acks(path)]
    assert _losses(text, every) == (0, 0)
    inserted = [line for line in text.split("\n") if line.startswith("ins-")]
    assert len(inserted) == len(set(inserted))
