"""``filemem mcp``: the SDK's own client talks to our server in a subprocess over stdio (and HTTP).

Every test starts real server processes (``python -m filemem.integrations.mcp``
or ``python -m filemem mcp``) and speaks MCP to them with ``mcp.ClientSession``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="needs the mcp extra: pip install 'filemem[mcp]'")

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.types import TextResourceContents

import filemem
from filemem.integrations.mcp._reference import TOOLS
from tests.helpers import needs_keyword_search

from ._mcp_util import call, ours, session, wire

DATA = Path(__file__).parent / "data"
NINE = [t["name"] for t in TOOLS]
OWN = ["put", "get", "search", "list_namespaces", "recall_context"]


def run(fn: Any, *args: Any) -> Any:
    return anyio.run(fn, *args)


def test_lists_the_reference_tools_verbatim(location: str) -> None:
    recorded = json.loads((DATA / "server_memory_2026.8.31_tools.json").read_text(encoding="utf-8"))

    async def go() -> None:
        async with session(ours(location)) as s:
            tools = (await s.list_tools()).tools
        assert [t.name for t in tools] == NINE
        for tool, ref in zip(tools, recorded, strict=True):
            got = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
            assert {k: got.get(k) for k in ref} == ref, tool.name
        async with session(ours(location, "--filemem-tools")) as s:
            assert [t.name for t in (await s.list_tools()).tools] == NINE + OWN

    run(go)


def test_every_graph_tool_end_to_end(location: str) -> None:
    async def go() -> None:
        async with session(ours(location)) as s:
            made = await call(
                s,
                "create_entities",
                {
                    "entities": [
                        {"name": "Ada", "entityType": "person", "observations": ["writes Python", "écrit"]},
                        {"name": "filemem", "entityType": "project", "observations": []},
                    ]
                },
            )
            assert [e["name"] for e in made["entities"]] == ["Ada", "filemem"]
            assert await call(
                s, "create_entities", {"entities": [{"name": "Ada", "entityType": "x", "observations": []}]}
            ) == {"entities": []}
            rels = [
                {"from": "Ada", "to": "filemem", "relationType": "uses"},
                {"from": "Ada", "to": "Bob", "relationType": "knows"},
            ]
            assert await call(s, "create_relations", {"relations": rels}) == {"relations": rels}
            assert await call(
                s, "add_observations", {"observations": [{"entityName": "filemem", "contents": ["stores memories"]}]}
            ) == {"results": [{"entityName": "filemem", "addedObservations": ["stores memories"]}]}
            found = await call(s, "search_nodes", {"query": "PYTHON"})
            assert [e["name"] for e in found["entities"]] == ["Ada"] and found["relations"] == rels
            opened = await call(s, "open_nodes", {"names": ["filemem"]})
            assert opened == {
                "entities": [{"name": "filemem", "entityType": "project", "observations": ["stores memories"]}],
                "relations": rels[:1],
            }
            done = {"success": True, "message": "Observations deleted successfully"}
            assert (
                await call(s, "delete_observations", {"deletions": [{"entityName": "Ada", "observations": ["écrit"]}]})
                == done
            )
            await call(s, "delete_relations", {"relations": rels[1:]})
            await call(s, "delete_entities", {"entityNames": ["filemem"]})
            graph = await call(s, "read_graph")
            assert graph == {
                "entities": [{"name": "Ada", "entityType": "person", "observations": ["writes Python"]}],
                "relations": [],
            }
            res = await s.read_resource("memory://knowledge-graph")
            content = res.contents[0]
            assert isinstance(content, TextResourceContents) and json.loads(content.text) == graph
        # The graph is records in the store, readable by any process.
        with filemem.Store(location) as store:
            assert [i.value["name"] for i in store.items(("mcp", "memory", "entities"))] == ["Ada"]

    run(go)


BAD_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("create_entities", {}),
    ("create_entities", {"entities": [{"name": "a"}]}),
    ("create_entities", {"entities": [{"name": 1, "entityType": "t", "observations": []}]}),
    ("create_entities", {"entities": "nope"}),
    ("create_relations", {"relations": [{"from": "a", "to": "b"}]}),
    ("add_observations", {"observations": [{"entityName": "ghost", "contents": ["x"]}]}),
    ("add_observations", {"observations": [{"entityName": "a", "contents": [1]}]}),
    ("delete_entities", {"entityNames": "a"}),
    ("delete_observations", {"deletions": [{"entityName": "a"}]}),
    ("search_nodes", {"query": None}),
    ("open_nodes", {}),
    ("no_such_tool", {}),
]


def test_bad_input_is_a_tool_error_and_changes_nothing(location: str) -> None:
    async def go() -> None:
        async with session(ours(location, "--filemem-tools")) as s:
            await call(s, "create_entities", {"entities": [{"name": "a", "entityType": "t", "observations": ["o"]}]})
            before = await call(s, "read_graph")
            for name, args in [
                *BAD_CALLS,
                ("put", {"namespace": "../escape", "key": "k", "value": 1}),
                ("put", {"namespace": "ok", "key": "a/b", "value": 1}),
                ("search", {"filter": {"n": {"$regex": "x"}}}),
                ("recall_context", {"query": "x", "namespaces": ["ok"], "budget_chars": 0}),
            ]:
                res = await s.call_tool(name, args)
                assert res.is_error, (name, args, wire(res))
                assert res.content and res.content[0].type == "text" and res.content[0].text, name
            assert await call(s, "read_graph") == before  # and the server is still answering
            assert (
                await s.call_tool("add_observations", {"observations": [{"entityName": "ghost", "contents": ["x"]}]})
            ).content[0].text == "Entity with name ghost not found"  # type: ignore[union-attr]
        with filemem.Store(location) as store:
            assert store.list_namespaces() == [("mcp", "memory", "entities")]

    run(go)


def test_filemem_tools(location: str) -> None:
    with filemem.Store(location) as probe:
        needs_keyword_search(probe)  # the "search" tool ranks by keywords

    async def go() -> None:
        async with session(ours(location, "--filemem-tools")) as s:
            v1 = await call(
                s, "put", {"namespace": "team/notes", "key": "deploy", "value": {"text": "deploy on fridays is banned"}}
            )
            await call(
                s,
                "put",
                {"namespace": ["team", "facts"], "key": "db", "value": {"text": "the staging db is read-only"}},
            )
            assert await call(s, "get", {"namespace": "team/notes", "key": "deploy"}) == {
                "found": True,
                "value": {"text": "deploy on fridays is banned"},
                "version": v1["version"],
            }
            assert (await call(s, "get", {"namespace": "team/notes", "key": "nope"}))["found"] is False
            assert await call(s, "list_namespaces", {"prefix": "team"}) == {"namespaces": ["team/facts", "team/notes"]}
            hits = (await call(s, "search", {"namespace_prefix": "team", "query": "staging"}))["hits"]
            assert [(h["namespace"], h["key"]) for h in hits] == [("team/facts", "db")]
            ctx = await call(
                s, "recall_context", {"query": "deploy staging", "namespaces": ["team/notes", "team/facts"]}
            )
            assert "deploy on fridays" in ctx["text"] and "staging db" in ctx["text"] and ctx["failed"] == {}
        with filemem.Store(location) as store:
            assert store.get("team/facts", "db") == {"text": "the staging db is read-only"}

    run(go)


def test_filemem_mcp_command_and_namespace_option(location: str) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "filemem", "mcp", location, "--namespace", "g/two"]
    )

    async def go() -> None:
        async with session(params) as s:
            await call(s, "create_entities", {"entities": [{"name": "a", "entityType": "t", "observations": []}]})
        async with session(ours(location)) as s:
            assert await call(s, "read_graph") == {"entities": [], "relations": []}  # another graph

    run(go)
    with filemem.Store(location) as store:
        assert store.keys(("g", "two", "entities")) == ["a"]


def test_without_the_extra_it_says_how_to_install(location: str) -> None:
    code = "import sys; sys.modules['mcp'] = None; from filemem._cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "mcp", location], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert 'pip install "filemem[mcp]"' in done.stderr and "Traceback" not in done.stderr
    assert not os.path.exists(location)  # nothing was created


def test_import_needs_no_sdk(location: str, tmp_path: Path) -> None:
    src = tmp_path / "memory.jsonl"
    src.write_text(REFERENCE_JSONL, encoding="utf-8")
    code = "import sys; sys.modules['mcp'] = None; from filemem._cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "mcp", location, "--import", str(src)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 2 entities and 1 relations into mcp/memory")
    with filemem.Store(location) as store:
        assert store.keys(("mcp", "memory", "entities")) == ["Ada", "Bob"]


REFERENCE_JSONL = "\n".join(
    json.dumps(x)
    for x in [
        {"type": "entity", "name": "Ada", "entityType": "person", "observations": ["likes tea"]},
        {"type": "entity", "name": "Bob", "entityType": "person", "observations": []},
        {"type": "relation", "from": "Ada", "to": "Bob", "relationType": "knows"},
    ]
)


def test_import_a_reference_file(location: str, tmp_path: Path) -> None:
    src = tmp_path / "memory.jsonl"
    src.write_text(REFERENCE_JSONL, encoding="utf-8")
    cmd = [sys.executable, "-m", "filemem", "mcp", location, "--import", str(src), "--json"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"entities": 2, "relations": 1, "entities_present": 0, "relations_present": 0}
    again = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout) == {"entities": 0, "relations": 0, "entities_present": 2, "relations_present": 1}

    bad = tmp_path / "bad.jsonl"
    bad.write_text(REFERENCE_JSONL.replace('"Bob", "entityType"', '"Cy", "x"'), encoding="utf-8")
    other = str(tmp_path / "other")
    failed = subprocess.run(
        [sys.executable, "-m", "filemem", "mcp", other, "--import", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 2 and "bad.jsonl:2:" in failed.stderr
    assert not os.path.exists(other)  # parsed before the store is opened: nothing written

    async def go() -> None:
        async with session(ours(location)) as s:
            assert await call(s, "read_graph") == {
                "entities": [
                    {"name": "Ada", "entityType": "person", "observations": ["likes tea"]},
                    {"name": "Bob", "entityType": "person", "observations": []},
                ],
                "relations": [{"from": "Ada", "to": "Bob", "relationType": "knows"}],
            }

    run(go)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_streamable_http_on_localhost(location: str, tmp_path: Path) -> None:
    from mcp.client.streamable_http import streamable_http_client

    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "filemem.integrations.mcp", location, "--http", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        async def go() -> None:
            deadline = time.monotonic() + 60
            while True:  # the server takes a moment to bind
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                    await anyio.sleep(0.1)
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (r, w), ClientSession(r, w) as s:
                await s.initialize()
                assert [t.name for t in (await s.list_tools()).tools] == NINE
                await call(s, "create_entities", {"entities": [{"name": "web", "entityType": "t", "observations": []}]})

        run(go)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    with filemem.Store(location) as store:
        assert store.keys(("mcp", "memory", "entities")) == ["web"]
