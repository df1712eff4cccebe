"""What the integrations cost over the Store calls they make (issue 14, "Cost").

    python tools/bench_integrations.py                 # every section
    python tools/bench_integrations.py --only mcp --n 200
    python tools/bench_integrations.py --only langgraph --n 300

Each section prints, per operation, the median and 99th percentile of the
underlying Store calls and of the same operation through the adapter, and
the ratio of medians. A section whose adapter is not installed is skipped
with the reason. The store lives in a fresh temp dir (or under --dir).

Sections:
    langgraph  FileMemStore (a LangGraph BaseStore): put, get, search (filter
          scan, vector query), TTL reads, each beside the Store calls it makes
          on the same store, alternated call by call; the ratio is the median
          of per-pair ratios, and a line over 1.5x names why.
    mcp   the MCP memory server's tools: the Store calls a tool makes, the
          same through KnowledgeGraph, and end to end over stdio to a
          ``filemem mcp`` subprocess (the way Claude Desktop/Code run it),
          with the SDK client's own share of that (its jsonschema check of
          each result against the tool's outputSchema) on a line of its own.
"""

from __future__ import annotations

import argparse
import contextlib
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


# ---------------------------------------------------------------- LangGraph


def pair(label: str, n: int, adapter: Callable[[int], Any], direct: Callable[[int], Any], why: str = "") -> float:
    """Time ``adapter(i)`` and ``direct(i)`` alternately ``n`` times; print medians and the ratio."""
    a_lat: list[float] = []
    d_lat: list[float] = []
    for i in range(n):
        for fn, lat in ((adapter, a_lat), (direct, d_lat)) if i % 2 == 0 else ((direct, d_lat), (adapter, a_lat)):
            t0 = time.perf_counter()
            fn(i)
            lat.append(time.perf_counter() - t0)
    a, d = statistics.median(a_lat) * 1e3, statistics.median(d_lat) * 1e3
    # The median of per-pair ratios: the two calls of a pair ran back to back,
    # so a burst of load from elsewhere inflates both, not one side's median.
    ratio = statistics.median(x / y for x, y in zip(a_lat, d_lat, strict=True) if y > 0)
    note = "" if ratio < 1.5 else f"  <- over 1.5x: {why or 'UNEXPLAINED'}"
    print(f"{label:46} adapter {a:8.3f} ms  direct {d:8.3f} ms  ratio {ratio:5.2f}x{note}")
    return ratio


WORDS = ["login", "search", "cart", "checkout", "deploy", "staging", "timeout", "captcha", "export", "report"]


def bench_langgraph(args: argparse.Namespace, root: str) -> None:
    n, durability = args.n, args.durability
    try:
        from filemem.integrations.langgraph import FileMemStore
    except ImportError as exc:
        print(f"== langgraph: skipped ({exc})")
        return

    def toy_embed(texts: list[str]) -> list[list[float]]:
        return [[t.count(c) + 0.1 * i for i, c in enumerate("aeiostrnl")] for t in texts]

    index = {"dims": 9, "embed": toy_embed, "fields": ["text"]}
    # One store per side-by-side pair: the adapter and the direct calls read
    # and write the same store, so the same shards, cache and layout (filemem
    # splits shards under contention, so two stores filled alike can differ).
    opts = FileMemStore.store_options(index)  # type: ignore[arg-type]
    vstore = filemem.Store(os.path.join(root, "lg-vectors"), durability=durability, **opts)  # type: ignore[arg-type]
    lg = FileMemStore(vstore, index=index)  # type: ignore[arg-type]
    pstore = filemem.Store(os.path.join(root, "lg-plain"), durability=durability)
    plain = FileMemStore(pstore)
    ns = ("users", "u1", "memories")

    def value(i: int) -> dict[str, Any]:
        return {"text": " ".join(WORDS[(i * k + k) % len(WORDS)] for k in range(1, 6)), "n": i % 50, "ok": i % 3 == 0}

    def envelope(i: int) -> dict[str, Any]:
        # What FileMemStore writes for value(i) under this index: the value and its text to embed.
        v = value(i)
        return {"value": v, "text": [v["text"]]}

    print(f"== langgraph (n={n}, durability={durability}, {2 * n} memories in {'/'.join(ns)})")
    pair(
        "put (no index)",
        n,
        lambda i: plain.put(ns, f"a{i}", value(i)),
        lambda i: pstore.put(ns, f"d{i}", {"value": value(i)}),
    )
    pair(
        "put (index: text to embed kept with the item)",
        n,
        lambda i: lg.put(ns, f"a{i}", value(i)),
        lambda i: vstore.put(ns, f"d{i}", envelope(i)),
    )
    item_cost = (
        "the reference's result type: a LangGraph Item with two timezone-aware datetimes "
        "(about 3 us) on a call of a few us"
    )
    pair(
        "get",
        n,
        lambda i: plain.get(ns, f"a{(i * 7) % n}"),
        lambda i: pstore.get_item(ns, f"a{(i * 7) % n}"),
        why=item_cost,
    )

    def listed_scan(
        store: filemem.Store, prefix: tuple[str, ...], keep: Callable[[Any], bool], limit: int
    ) -> list[Any]:
        out = []
        for space in sorted(store.list_namespaces(prefix)):
            for it in store.items(space):
                if keep(it.value["value"]):
                    out.append(it)
                    if len(out) == limit:
                        return out
        return out

    pair(
        "search, filter, no query (a scan, as InMemoryStore)",
        max(50, n // 3),
        lambda i: plain.search(("users",), filter={"n": {"$gte": 45}}, limit=10),
        lambda i: listed_scan(pstore, ("users",), lambda v: v["n"] >= 45, 10),
    )
    vec = toy_embed(["login checkout"])[0]
    lg.search(("users",), query="login checkout", limit=10)  # build the index once, both sides
    vstore.search(("users",), vector=vec, limit=10)
    pair(
        "search, query (filemem vectors), limit 10",
        max(50, n // 3),
        lambda i: lg.search(("users",), query="login checkout", limit=10),
        lambda i: vstore.search(("users",), vector=toy_embed(["login checkout"])[0], limit=10),
    )
    lg_ttl = FileMemStore(pstore, ttl={"default_ttl": 60})
    lg_ttl.put(ns, "ttl-key", value(1))
    pstore.put(ns, "ttl-key", {"value": value(1), "ttl": 60}, ttl=3600)
    pair(
        "get of a TTL item (refresh_on_read)",
        n,
        lambda i: lg_ttl.get(ns, "ttl-key"),
        lambda i: pstore.get_item(ns, "ttl-key"),
        why=item_cost + "; the TTL restart itself is a write only once 1% of the TTL has passed",
    )
    # A TTL of 0.001 minutes (60 ms), read every ~1 ms: every read is past 1% of
    # the TTL, so every read restarts the clock with a conditional put. The
    # direct side makes the same two filemem calls.
    lg_ttl_strict = FileMemStore(pstore, ttl={"default_ttl": 0.001})
    pstore.put(ns, "ttl-hot", {"value": value(2), "ttl": 0.001}, ttl=0.06)

    def strict_read(i: int) -> None:
        time.sleep(0.001)
        if lg_ttl_strict.get(ns, "ttl-hot") is None:  # expired while the machine was busy
            lg_ttl_strict.put(ns, "ttl-hot", value(2))

    def direct_read(i: int) -> None:
        time.sleep(0.001)
        it = pstore.get_item(ns, "ttl-hot")
        if it is None:
            pstore.put(ns, "ttl-hot", {"value": value(2), "ttl": 0.001}, ttl=0.06)
        else:
            with contextlib.suppress(filemem.ConflictError):  # expired meanwhile (the adapter absorbs it too)
                pstore.put(ns, "ttl-hot", {**it.value, "updated_at": it.updated_at}, ttl=0.06, if_version=it.version)

    pair(
        "get of a TTL item that restarts it (get + put)",
        max(50, n // 3),
        strict_read,
        direct_read,
        why="LangGraph's TTL restarts on read: such a read is also a write",
    )
    for adapter in (lg, plain, lg_ttl, lg_ttl_strict):
        adapter.close()  # a given Store stays open: closed below
    vstore.close()
    pstore.close()


SECTIONS: dict[str, Callable[[argparse.Namespace, str], None]] = {"langgraph": bench_langgraph, "mcp": bench_mcp}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only this section (repeatable)")
    ap.add_argument("--n", type=int, default=200, help="calls per operation and layer")
    ap.add_argument("--entities", type=int, default=200, help="mcp: entities (and relations) in the graph read")
    ap.add_argument(
        "--durability", choices=["fsync", "flush"], default="fsync", help="langgraph: the stores' durability"
    )
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
