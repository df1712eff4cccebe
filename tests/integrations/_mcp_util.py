"""Running MCP servers as subprocesses and talking to them with the SDK's own client."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult


def ours(store_path: str, *args: str) -> StdioServerParameters:
    """``python -m filemem.integrations.mcp STORE ARGS`` (the same interpreter as the tests)."""
    return StdioServerParameters(command=sys.executable, args=["-m", "filemem.integrations.mcp", store_path, *args])


def reference(script: str, memory_file: str) -> StdioServerParameters:
    """The reference server (node dist/index.js) on ``memory_file``."""
    return StdioServerParameters(command="node", args=[script], env={"MEMORY_FILE_PATH": memory_file})


@asynccontextmanager
async def session(params: StdioServerParameters) -> AsyncIterator[ClientSession]:
    """An initialised client session with a server subprocess; the process is gone when the block exits."""
    with tempfile.TemporaryFile("w+") as errlog:  # the server's stderr; shown if the session fails
        try:
            async with (
                stdio_client(params, errlog=errlog) as (r, w),
                ClientSession(r, w, read_timeout_seconds=120) as s,
            ):
                await s.initialize()
                yield s
        except BaseException:
            errlog.seek(0)
            sys.stderr.write(
                f"--- server stderr ({params.command} {' '.join(params.args)}):\n{errlog.read()[-4000:]}\n"
            )
            raise


def wire(result: CallToolResult) -> dict[str, Any]:
    """A tool result as the client received it (JSON names)."""
    out = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    out.pop("resultType", None)
    out.pop("_meta", None)
    return out


async def call(s: ClientSession, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a tool; return its structured content, failing the test on a tool error."""
    res = await s.call_tool(name, args or {})
    assert not res.is_error, f"{name}: {res.content}"
    assert res.structured_content is not None
    text = res.content[0].text  # type: ignore[union-attr]
    if name.startswith("delete_"):
        assert text == res.structured_content["message"]
    elif name in _ONE_LIST:
        # The text block is the result pretty-printed as JSON, as the reference does.
        assert json.loads(text) == next(iter(res.structured_content.values()))
    else:
        assert json.loads(text) == res.structured_content
    return res.structured_content


# Tools whose text block is the one list their structured content wraps (the others print it whole).
_ONE_LIST = {"create_entities", "create_relations", "add_observations"}


def node_reference_script() -> str | None:
    """Where the reference server's dist/index.js is, or None.

    ``FILEMEM_MCP_REFERENCE`` (a path to dist/index.js) wins; else the
    package installed globally (``npm install -g @modelcontextprotocol/server-memory``).
    """
    env = os.environ.get("FILEMEM_MCP_REFERENCE")
    if env:
        return env if os.path.isfile(env) else None
    import shutil
    import subprocess

    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None
    try:
        root = subprocess.run(
            [npm, "root", "-g"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    script = os.path.join(root, "@modelcontextprotocol", "server-memory", "dist", "index.js")
    return script if os.path.isfile(script) else None
