"""Drive filemem's memory tool and the SDK's reference through ``tool.call`` and compare what they say and hold."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

pytest.importorskip("anthropic")

from anthropic.lib.tools import ToolError
from anthropic.tools.memory import BetaLocalFilesystemMemoryTool

from filemem.integrations.anthropic import FileMemMemoryTool

_LISTING = "Here're the files and directories up to 2 levels deep in "


def outcome(tool: Any, command: dict[str, Any]) -> tuple[str, str]:
    """("ok", text), ("refused", text) for a ToolError, or ("crashed", exception type) for anything else."""
    try:
        if command["command"] == "clear_all_memory":  # not a model command: the tool's own method
            return "ok", tool.clear_all_memory()
        return "ok", mask_dir_sizes(tool.call(command))
    except ToolError as exc:
        return "refused", str(exc)
    except Exception as exc:
        return "crashed", type(exc).__name__


def mask_dir_sizes(text: str) -> str:
    """A directory's size is its file system's figure in the reference: compare it as ``<dir>``."""
    if not text.startswith(_LISTING):
        return text
    lines = text.split("\n")
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):
        _, _, path = line.partition("\t")
        out.append(f"<dir>\t{path}" if i == 0 or path.endswith("/") else line)
    return "\n".join(out)


def reference_state(tool: BetaLocalFilesystemMemoryTool) -> dict[str, str | None]:
    """Every file (its text) and directory (None) under the reference's /memories."""
    root = str(tool.memory_root)
    out: dict[str, str | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            with open(os.path.join(dirpath, f), encoding="utf-8", newline="") as fh:
                out[os.path.relpath(os.path.join(dirpath, f), root)] = fh.read()
    return out


def filemem_state(tool: FileMemMemoryTool) -> dict[str, str | None]:
    """Every file (its text) and directory (None) recorded by filemem's tool."""
    out: dict[str, str | None] = {}
    for item in tool.store.items(tool.namespace):
        rel = re.sub(r"^/memories/", "", item.value["path"])
        out[rel] = item.value["text"] if item.value["kind"] == "file" else None
    return out


def run_both(ours: FileMemMemoryTool, ref: BetaLocalFilesystemMemoryTool, commands: list[dict[str, Any]]) -> None:
    """Each command through both tools: the same outcome, then the same files and directories."""
    for i, command in enumerate(commands):
        got, want = outcome(ours, command), outcome(ref, command)
        if want[0] == "crashed":
            # The reference leaks an OSError here; ours must refuse cleanly instead.
            assert got[0] == "refused", (i, command, got, want)
        else:
            assert got == want, (i, command)
        assert filemem_state(ours) == reference_state(ref), (i, command)
