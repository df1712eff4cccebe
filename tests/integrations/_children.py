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
                    {
                        "command": "str_replace",
                        "path": "/memories/shared.txt",
                        "old_str": slot,
                        "new_str": f"done-{me}-{i}.",
                    }
                )
                _ack(fd, "replace", slot)
            except ToolError as exc:  # the reference may find its slot gone (an edit of its lost)
                _ack(fd, "refused", str(exc))
    finally:
        os.close(fd)
        if kind == "filemem":
            tool.close()


def session_append_child(store_path: str, me: int, n: int, go: str, acks: str) -> None:
    """Append ``n`` adds (every third one a pair) to session "shared"; ack each with its start and end time."""
    import asyncio

    from filemem.integrations.openai_agents import FileMemSession

    session = FileMemSession("shared", store_path)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    open(f"{acks}.ready", "w").close()
    _wait_for(go)

    async def run() -> None:
        for i in range(n):
            batch = [{"role": "user", "content": f"{me}-{i}-{j}"} for j in range(2 if i % 3 == 0 else 1)]
            # CLOCK_MONOTONIC is one clock for every process of the machine.
            start = time.monotonic()
            await session.add_items(batch)
            _ack(fd, "add", [b["content"] for b in batch], start, time.monotonic())

    try:
        asyncio.run(run())
    finally:
        os.close(fd)
        session.close()


def session_pop_child(store_path: str, me: int, n: int, go: str, acks: str) -> None:
    """Pop until the session is empty (``n`` < 0) or ``n`` times; ack each popped item."""
    import asyncio

    from filemem.integrations.openai_agents import FileMemSession

    session = FileMemSession("shared", store_path)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    open(f"{acks}.ready", "w").close()
    _wait_for(go)

    async def run() -> None:
        done = 0
        while n < 0 or done < n:
            item = await session.pop_item()
            if item is None:
                if n < 0:
                    return
                await asyncio.sleep(0.001)
                continue
            _ack(fd, "pop", item["content"])
            done += 1

    try:
        asyncio.run(run())
    finally:
        os.close(fd)
        session.close()
