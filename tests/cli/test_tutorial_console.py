"""The ```console blocks of docs/tutorial.md run against a copy of a golden store while agents write to it.

Each ``$ filemem ...`` line is run (from a directory holding ``./memories``);
it must exit 0, and every output line shown under it must appear in the real
output (a line with ``…`` only up to the ``…``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from tests.cli._util import FIXTURES, ROOT, run, run_proc
from tests.cli.test_live import Writers


def _console_blocks() -> list[list[tuple[str, list[str]]]]:
    text = (ROOT / "docs" / "tutorial.md").read_text()
    blocks = []
    for body in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        steps: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        blocks.append(steps)
    return blocks


def _matches(shown: str, real: list[str]) -> bool:
    if "…" in shown:
        head = shown.split("…", maxsplit=1)[0].rstrip()
        return any(line.startswith(head) for line in real)
    return shown.rstrip() in [line.rstrip() for line in real]


def test_tutorial_console_blocks(tmp_path: Path, spawn_ctx: Any, monkeypatch: Any) -> None:
    shutil.copytree(FIXTURES / "v1-json", tmp_path / "memories")
    monkeypatch.chdir(tmp_path)
    blocks = _console_blocks()
    assert len(blocks) >= 4
    writers = Writers(spawn_ctx, os.path.join(tmp_path, "memories"), tmp_path, n=2)
    try:
        ran = 0
        for steps in blocks:
            for command, shown in steps:
                argv = shlex.split(command)
                assert argv[0] == "filemem", command
                # watch needs the file-system watcher thread: run it as its own process.
                res = run_proc(*argv[1:]) if argv[1] == "watch" else run(*argv[1:])
                assert res.rc == 0, (command, res)
                real = res.out.splitlines()
                for line in shown:
                    assert _matches(line, real), (command, line, res.out)
                ran += 1
        assert ran >= 10
    finally:
        writers.finish()
