"""What the integrations cost over the Store calls they make (issue 14, "Cost").

    python tools/bench_integrations.py                 # every section
    python tools/bench_integrations.py --only mcp --n 200

Each section prints, per operation, the median and 99th percentile of the
underlying Store calls and of the same operation through the adapter, and
the ratio of medians. A section whose adapter is not installed is skipped
with the reason. The store lives in a fresh temp dir (or under --dir).

Sections:
    mcp   the MCP memory server's tools: the Store calls a tool makes, the
          same through KnowledgeGraph, and end to end over stdio to a
          ``filemem mcp`` subprocess (the way Claude Desktop/Code run it),
          with the SDK client's own share of that (its jsonschema check of
          each result against the tool's outputSchema) on a line of its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import filemem


def stats(lat: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    lat = sorted(lat)
    return statistics.median(lat) * 1e3, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3


def timed(n: int, fn: Callable[[int], Any]) -> list[float]:
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t0)
    return lat


async def atimed(n: int, fn: Callable[[int], Awaitable[Any]]) -> list[float]:
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        await fn(i)
        lat.append(time.perf_counter() - t0)
    return lat


def report(section: str, op: str, base: list[float], layers: dict[str, list[float]]) -> None:
    b50, b99 = stats(base)
    print(f"{section:4} {op:18} store calls        p50 {b50:8.3f} ms  p99 {b99:8.3f} ms")
    for name, lat in layers.items():
        p50, p99 = stats(lat)
        print(f"{section:4} {op:18} {name:18} p50 {p50:8.3f} ms  p99 {p99:8.3f} ms  x{p50 / b50:5.2f}")


# ---------------------------------------------------------------------------- mcp


def bench_mcp(args: argparse.Namespace, root: str) -> None:
    try:
        import anyio
        from mcp import ClientSession, StdioServerParameters, stdio_client
    except ImportError as exc:
        print(f"mcp: skipped ({exc}; pip install 'filemem[mcp]')")
        return
    from filemem.integrations.mcp import KnowledgeGraph
    from filemem.integrations.mcp._graph import _entity_key

    n, size = args.n, args.entities
    path = os.path.join(root, "mcp")
    ents, rels = ("mcp", "memory", "entities"), ("mcp", "memory", "relations")
    store = filemem.admin.open_store(path, readonly=False, create=True)  # as `filemem mcp` opens it
    kg = KnowledgeGraph(store)
    kg.create_entities([{"name": f"seed-{i}", "entityType": "t", "observations": [f"obs {i}"]} for i in range(size)])
    kg.create_relations(
        [{"from": f"seed-{i}", "to": f"seed-{(i + 1) % size}", "relationType": "r"} for i in range(size)]
    )

    def ent(tag: str, i: int) -> dict[str, Any]:
        return {"name": f"{tag}-{i}", "entityType": "t", "observations": ["x"]}

    # The Store calls each tool makes (see filemem/integrations/mcp/_graph.py), done by hand.
    def raw_create(tag: str) -> Callable[[int], Any]:
        def run(i: int) -> None:
            key = _entity_key(f"{tag}-{i}")
            store.get(ents, key, consistency="strict")
            with store.batch() as b:
                b.update(ents, key, lambda cur: cur if cur is not None else {**ent(tag, i), "order": i})

        return run

    def raw_add(i: int) -> None:
        key = _entity_key("seed-0")
        store.get(ents, key, consistency="strict")
        with store.batch() as b:
            b.update(ents, key, lambda cur: {**cur, "observations": [*cur["observations"], f"raw {i}"]})

    def raw_read(i: int) -> None:
        with store.snapshot() as snap:
            snap.items(ents)
            snap.items(rels)

    def raw_open(i: int) -> None:
        with store.snapshot() as snap:
            snap.get(ents, _entity_key(f"seed-{i % size}"))
            snap.items(rels)

    ops: list[tuple[str, Callable[[int], Any], Callable[[str, int], tuple[str, dict[str, Any]]]]] = [
        ("create_entities", raw_create("raw"), lambda tag, i: ("create_entities", {"entities": [ent(tag, i)]})),
        (
            "add_observations",
            raw_add,
            lambda tag, i: (
                "add_observations",
                {"observations": [{"entityName": "seed-0", "contents": [f"{tag} {i}"]}]},
            ),
        ),
        ("open_nodes", raw_open, lambda tag, i: ("open_nodes", {"names": [f"seed-{i % size}"]})),
        ("search_nodes", raw_read, lambda tag, i: ("search_nodes", {"query": f"obs {i % size}"})),
        ("read_graph", raw_read, lambda tag, i: ("read_graph", {})),
    ]

    def direct(tag: str, name: str) -> Callable[[int], Any]:
        make = {o[0]: o[2] for o in ops}[name]

        def run(i: int) -> Any:
            return getattr(kg, name)(*make(tag, i)[1].values())

        return run

    params = StdioServerParameters(command=sys.executable, args=["-m", "filemem.integrations.mcp", path])

    async def measure() -> None:
        with open(os.devnull, "w") as devnull:
            async with stdio_client(params, errlog=devnull) as (r, w), ClientSession(r, w) as s:
                await s.initialize()
                await s.list_tools()  # as clients do; the session then checks results against outputSchema
                for name, raw, make in ops:
                    via_kg = direct("kg", name)
                    lat: dict[str, list[float]] = {k: [] for k in ("store", "kg", "stdio", "check", "ping")}
                    # Layers take turns call by call, so a load spike on this shared machine hits all alike.
                    for i in range(-min(n, 20), n):  # negative i: warm-up, not recorded
                        t0 = time.perf_counter()
                        raw(i if i >= 0 else 10_000 - i)
                        t1 = time.perf_counter()
                        via_kg(i if i >= 0 else 10_000 - i)
                        t2 = time.perf_counter()
                        res = await s.call_tool(*make("stdio", i if i >= 0 else 10_000 - i))
                        t3 = time.perf_counter()
                        assert not res.is_error, res
                        # The client's own share: jsonschema validation of structuredContent against outputSchema.
                        await s.validate_tool_result(name, res)
                        t4 = time.perf_counter()
                        await s.send_ping()  # the JSON-RPC round trip with no tool behind it
                        t5 = time.perf_counter()
                        if i >= 0:
                            for k, dt in zip(lat, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                                lat[k].append(dt)
                    report(
                        "mcp",
                        name,
                        lat["store"],
                        {
                            "KnowledgeGraph": lat["kg"],
                            "mcp over stdio": lat["stdio"],
                            "(client check)": lat["check"],
                            "(JSON-RPC ping)": lat["ping"],
                        },
                    )

    try:
        anyio.run(measure)
    finally:
        store.close()


SECTIONS: dict[str, Callable[[argparse.Namespace, str], None]] = {"mcp": bench_mcp}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only this section (repeatable)")
    ap.add_argument("--n", type=int, default=200, help="calls per operation and layer")
    ap.add_argument("--entities", type=int, default=200, help="mcp: entities (and relations) in the graph read")
    ap.add_argument("--dir", default=None, help="where the temp store goes (default: the system temp dir)")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="filemem-bench-integrations-", dir=args.dir)
    try:
        for name in args.only or sorted(SECTIONS):
            SECTIONS[name](args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
