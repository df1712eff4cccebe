"""Child-process entry points for the integration tests (spawn context: module level, picklable arguments).

Children report through files written with one ``os.write`` per line, after
the call they report returned (an ack is a promise the parent checks).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def _ack(fd: int, *fields: Any) -> None:
    os.write(fd, (json.dumps(list(fields)) + "\n").encode())


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.002)


def memory_tool_child(kind: str, base: str, me: int, n: int, go: str, acks: str) -> None:
    """Insert ``n`` lines and replace ``n`` placeholder lines of /memories/shared.txt through one tool."""
    from anthropic.lib.tools import ToolError

    if kind == "filemem":
        from filemem.integrations.anthropic import FileMemMemoryTool

        tool: Any = FileMemMemoryTool(base)
    else:
        from anthropic.tools.memory import BetaLocalFilesystemMemoryTool

        tool = BetaLocalFilesystemMemoryTool(base)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    open(f"{acks}.ready", "w").close()
    _wait_for(go)
    try:
        for i in range(n):
            line = f"ins-{me}-{i}"
            tool.call({"command": "insert", "path": "/memories/shared.txt", "insert_line": 0, "insert_text": line})
            _ack(fd, "insert", line)
            slot = f"slot-{me}-{i}."
            try:
                tool.call(
                    {"command": "str_replace", "path": "/memories/shared.txt", "old_str": slot, "new_str": f"done-{me}-{i}."}
                )
                _ack(fd, "replace", slot)
            except ToolError as exc:  # the reference may find its slot gone (an edit of its lost)
                _ack(fd, "refused", str(exc))
    finally:
        os.close(fd)
        if kind == "filemem":
            tool.close()
