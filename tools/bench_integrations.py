"""Cost of the framework adapters over the filemem calls they make (issue 14, "Cost").

    python tools/bench_integrations.py --only langgraph --n 300

One section per adapter (``--only NAME`` runs one; default: every section whose
framework is installed). Each line times an adapter call and the direct
``filemem.Store`` call(s) it makes, alternating the two call by call so a
loaded machine slows both alike, and prints their medians and the ratio
(the median over pairs of adapter / direct). The target is a ratio under 1.5; a line over it names why.
Stores live in a fresh directory under --dir (default: the system temp dir).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import filemem

WORDS = ["login", "search", "cart", "checkout", "deploy", "staging", "timeout", "captcha", "export", "report"]


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


# ---------------------------------------------------------------- LangGraph


def bench_langgraph(root: str, n: int, durability: str) -> None:
    from filemem.integrations.langgraph import FileMemStore

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


SECTIONS: dict[str, Callable[[str, int, str], None]] = {"langgraph": bench_langgraph}
REQUIRES = {"langgraph": "langgraph.store.base"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only this section (repeatable)")
    ap.add_argument("--n", type=int, default=300, help="calls per measurement")
    ap.add_argument("--durability", choices=["fsync", "flush"], default="fsync")
    ap.add_argument("--dir", default=None, help="parent directory for the stores (default: system temp)")
    args = ap.parse_args(argv)
    import importlib.util

    root = tempfile.mkdtemp(prefix="filemem-bench-integrations-", dir=args.dir)
    try:
        print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
        for name in args.only or sorted(SECTIONS):
            if importlib.util.find_spec(REQUIRES[name].split(".")[0]) is None:
                print(f"== {name}: skipped, its extra is not installed")
                continue
            SECTIONS[name](root, args.n, args.durability)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
