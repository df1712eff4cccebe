"""Several ``filemem mcp`` server processes on one store: every write through one is seen by the others, none lost.

The reference server loses entities in exactly this setup (two processes on
one memory.jsonl: modelcontextprotocol/servers issue 4797); here each
entity and relation is its own record and each change one atomic write.
Both tests run on each backend (a directory, a ``postgresql://`` URL: issue 16).
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from typing import Any

import pytest

pytest.importorskip("mcp", reason="needs the mcp extra: pip install 'filemem[mcp]'")

import anyio
from mcp import ClientSession, StdioServerParameters

import filemem

from ._mcp_util import call, ours, session

N = 20  # writes per client per kind; each is one tool call through its own server process


def ent(name: str, obs: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "entityType": "t", "observations": obs or []}


async def _writer(s: ClientSession, tag: str, acked: list[str]) -> None:
    for i in range(N):
        name = f"{tag}-{i}"
        await call(s, "create_entities", {"entities": [ent(name)]})
        await call(s, "add_observations", {"observations": [{"entityName": "hub", "contents": [name]}]})
        await call(s, "create_relations", {"relations": [{"from": name, "to": "hub", "relationType": "feeds"}]})
        acked.append(name)


def test_two_servers_two_clients_lose_nothing(location: str) -> None:
    store_path = location
    race = [ent(f"race-{j}") for j in range(10)]
    created: dict[str, list[str]] = {}
    acked: dict[str, list[str]] = {"a": [], "b": []}

    async def client(tag: str) -> None:
        async with session(ours(store_path)) as s:
            await _writer(s, tag, acked[tag])
            got = await call(s, "create_entities", {"entities": race})  # both at once, same names
            created[tag] = [e["name"] for e in got["entities"]]

    async def go() -> None:
        async with session(ours(store_path)) as s:
            await call(s, "create_entities", {"entities": [ent("hub")]})
        async with anyio.create_task_group() as tg:
            tg.start_soon(client, "a")
            tg.start_soon(client, "b")
        want = {"hub"} | {f"{t}-{i}" for t in "ab" for i in range(N)} | {e["name"] for e in race}
        for _ in range(2):  # two fresh server processes both see every write
            async with session(ours(store_path)) as s:
                graph = await call(s, "read_graph")
            names = [e["name"] for e in graph["entities"]]
            assert sorted(names) == sorted(want) and len(names) == len(want)
            hub = next(e for e in graph["entities"] if e["name"] == "hub")
            assert sorted(hub["observations"]) == sorted(acked["a"] + acked["b"])  # no lost read-modify-write
            assert len(graph["relations"]) == 2 * N
        # Each racing name was created exactly once, by one of the two.
        assert sorted(created["a"] + created["b"]) == sorted(e["name"] for e in race)

    anyio.run(go)
    with filemem.Store(store_path) as store:  # a third process's view: the records themselves
        assert len(store.keys(("mcp", "memory", "entities"))) == 1 + 2 * N + 10
        assert [f for f in store.check() if f.severity == "error"] == []


def _pids_with_env(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"FILEMEM_TEST_SERVER={marker}".encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the server's pid through /proc")
def test_a_server_killed_mid_write_loses_no_acknowledged_write(location: str) -> None:
    store_path = location
    marker = uuid.uuid4().hex
    victim = StdioServerParameters(
        command=sys.executable,
        args=["-m", "filemem.integrations.mcp", store_path],
        env={"FILEMEM_TEST_SERVER": marker},
    )
    acked: dict[str, list[str]] = {"live": [], "doomed": []}
    killed: list[int] = []

    async def doomed() -> None:
        try:
            async with session(victim) as s:
                for i in range(10_000):
                    name = f"doomed-{i}"
                    await call(s, "create_entities", {"entities": [ent(name, ["x" * 200])]})
                    await call(s, "add_observations", {"observations": [{"entityName": "hub", "contents": [name]}]})
                    acked["doomed"].append(name)
        except Exception:
            pass
        assert killed, "the doomed server was never killed"

    async def killer() -> None:
        while len(acked["doomed"]) < 5:
            await anyio.sleep(0.05)
        pids = _pids_with_env(marker)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)  # mid-stream: it is writing as fast as its client asks
        killed.append(pids[0])

    async def live() -> None:
        async with session(ours(store_path)) as s:
            await _writer(s, "live", acked["live"])

    async def go() -> None:
        async with session(ours(store_path)) as s:
            await call(s, "create_entities", {"entities": [ent("hub")]})
        async with anyio.create_task_group() as tg:
            tg.start_soon(doomed)
            tg.start_soon(killer)
            tg.start_soon(live)
        async with session(ours(store_path)) as s:
            graph = await call(s, "read_graph")
        names = {e["name"] for e in graph["entities"]}
        assert set(acked["live"]) | set(acked["doomed"]) <= names
        hub = next(e for e in graph["entities"] if e["name"] == "hub")
        assert set(acked["live"]) | set(acked["doomed"]) <= set(hub["observations"])
        assert len(acked["live"]) == N

    anyio.run(go)
    with filemem.Store(store_path) as store:  # opening recovers whatever the dead writer left half done
        assert [f for f in store.check() if f.severity == "error"] == []
