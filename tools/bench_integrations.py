"""Cost of the framework adapters over the filemem calls they make (issue 14, "Cost").

    python tools/bench_integrations.py --only anthropic --n 300
    python tools/bench_integrations.py --only openai_agents --only dspy

One section per adapter (``--only NAME`` runs one; default: every section whose
framework is installed). Each line times an adapter call and the direct
``filemem.Store`` calls it makes (the same calls, made by hand), alternating
the two call by call so a loaded machine slows both alike, and prints their
medians and the ratio (the median over pairs of adapter / direct). The
target is a ratio under 1.5; a line over it names why.
Stores live in a fresh directory under --dir (default: the system temp dir).

Sections:
    anthropic       Claude's memory tool: view (file, directory), create, insert, str_replace, rename, delete
    openai_agents   FileMemSession: add_items, get_items(limit), pop_item (async, in a worker thread)
    dspy            FileMemRetriever: module call, rm for dspy.Retrieve, ReAct tool, vs store.search
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
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


# ---------------------------------------------------------------- Claude's memory tool


def bench_anthropic(root: str, n: int, durability: str) -> None:
    from filemem.integrations.anthropic import FileMemMemoryTool

    store = filemem.Store(os.path.join(root, "memtool"), durability=durability)
    tool = FileMemMemoryTool(store)
    ns = tool.namespace
    print(f"== anthropic memory tool (n={n}, durability={durability})")

    def file_value(rel: str, text: str) -> dict[str, str]:
        return {"kind": "file", "path": f"/memories/{rel}", "text": text}

    # Twin files: the adapter edits notes/a-*.md, the direct side notes%2Fd-*.md, alike.
    lines = "".join(f"{WORDS[i % len(WORDS)]} line {i}\n" for i in range(40))
    tool.call({"command": "create", "path": "/memories/notes/a.md", "file_text": lines})
    store.put(ns, "notes%2Fd.md", file_value("notes/d.md", lines), if_version=0)
    for i in range(30):
        tool.call({"command": "create", "path": f"/memories/topic{i % 5}/f{i}.md", "file_text": lines})

    pair(
        "view file (40 lines)",
        n,
        lambda i: tool.call({"command": "view", "path": "/memories/notes/a.md"}),
        lambda i: store.get_item(ns, "notes%2Fd.md", consistency="strict"),
        why="the SDK parses the command into a model (call -> construct_type_unchecked) and the result "
        "is the whole file rendered with line numbers; a strict get of a cached shard is ~15 us",
    )

    def snapshot_items() -> list[filemem.Item]:
        with store.snapshot() as snap:
            return snap.items(ns)

    pair(
        "view directory (/memories, 38 records)",
        max(50, n // 3),
        lambda i: tool.call({"command": "view", "path": "/memories"}),
        lambda i: snapshot_items(),
        why="the listing is built and rendered from every record of the namespace",
    )

    def direct_create(i: int) -> None:
        parent = store.get_item(ns, "new", consistency="strict")
        store.get_item(ns, f"new%2Fd{i}.md", consistency="strict")
        with store.batch() as b:
            if parent is None:
                b.put(ns, "new", {"kind": "dir", "path": "/memories/new"}, if_version=0)
            else:
                b.put(ns, "new", parent.value, if_version=parent.version)
            b.put(ns, f"new%2Fd{i}.md", file_value(f"new/d{i}.md", "hello\n"), if_version=0)

    pair(
        "create /memories/new/*.md",
        n,
        lambda i: tool.call({"command": "create", "path": f"/memories/new/a{i}.md", "file_text": "hello\n"}),
        direct_create,
    )

    def direct_edit(key: str, change: Callable[[str], str]) -> None:
        item = store.get_item(ns, key, consistency="strict")
        assert item is not None
        store.put(ns, key, {**item.value, "text": change(item.value["text"])}, if_version=item.version)

    pair(
        "insert at line 0",
        n,
        lambda i: tool.call(
            {"command": "insert", "path": "/memories/notes/a.md", "insert_line": 0, "insert_text": f"top {i}"}
        ),
        lambda i: direct_edit("notes%2Fd.md", lambda t: f"top {i}\n" + t),
    )
    pair(
        "str_replace (one occurrence)",
        n,
        lambda i: tool.call(
            {"command": "str_replace", "path": "/memories/notes/a.md", "old_str": f"top {i}\n", "new_str": f"tip {i}\n"}
        ),
        lambda i: direct_edit("notes%2Fd.md", lambda t: t.replace(f"top {i}\n", f"tip {i}\n")),
    )

    def direct_move(i: int, src: str, dst: str) -> None:
        store.get_item(ns, f"new%2F{dst}", consistency="strict")
        parent = store.get_item(ns, "new", consistency="strict")
        item = store.get_item(ns, f"new%2F{src}", consistency="strict")
        assert parent is not None and item is not None
        with store.batch() as b:
            b.put(ns, "new", parent.value, if_version=parent.version)
            b.put(ns, f"new%2F{dst}", {**item.value, "path": f"/memories/new/{dst}"}, if_version=0)
            b.delete(ns, item.key, if_version=item.version)

    pair(
        "rename a file",
        n,
        lambda i: tool.call(
            {"command": "rename", "old_path": f"/memories/new/a{i}.md", "new_path": f"/memories/new/b{i}.md"}
        ),
        lambda i: direct_move(i, f"d{i}.md", f"e{i}.md"),
    )

    def direct_delete(i: int) -> None:
        item = store.get_item(ns, f"new%2Fe{i}.md", consistency="strict")
        assert item is not None
        store.delete(ns, item.key, if_version=item.version)

    pair(
        "delete a file",
        n,
        lambda i: tool.call({"command": "delete", "path": f"/memories/new/b{i}.md"}),
        direct_delete,
    )
    store.close()


# ---------------------------------------------------------------- OpenAI Agents SDK session


def bench_openai_agents(root: str, n: int, durability: str) -> None:
    from filemem.integrations.openai_agents import FileMemSession

    store = filemem.Store(os.path.join(root, "sessions"), durability=durability)
    ours = FileMemSession("a", store)
    ns_d = ("openai-agents", "sessions", "d")
    print(f"== openai_agents session (n={n}, durability={durability}; adapter calls awaited in one event loop)")
    loop = asyncio.new_event_loop()

    def message(i: int) -> dict[str, Any]:
        return {"role": "user" if i % 2 else "assistant", "content": " ".join(WORDS[(i + k) % 10] for k in range(8))}

    def direct_add(i: int) -> None:
        head = store.get_item(ns_d, "head", consistency="strict")
        first, nxt = (head.value["first"], head.value["next"]) if head else (0, 0)
        with store.batch() as b:
            b.put(ns_d, "head", {"first": first, "next": nxt + 1}, if_version=head.version if head else 0)
            b.put(ns_d, f"item-{nxt:012d}", message(i))

    thread_why = "asyncio.to_thread per call (the Session protocol is async; the store blocks on disk and locks)"
    pair(
        "add_items (one message)",
        n,
        lambda i: loop.run_until_complete(ours.add_items([message(i)])),
        direct_add,
        why=thread_why,
    )

    def direct_get(limit: int) -> list[Any]:
        with store.snapshot() as snap:
            head = snap.get_item(ns_d, "head")
            assert head is not None
            nxt = head.value["next"]
            return [snap.get_item(ns_d, f"item-{p:012d}") for p in range(max(head.value["first"], nxt - limit), nxt)]

    pair(
        "get_items(limit=20)",
        n,
        lambda i: loop.run_until_complete(ours.get_items(20)),
        lambda i: direct_get(20),
        why=thread_why,
    )

    def direct_pop(i: int) -> None:
        with store.snapshot() as snap:
            head = snap.get_item(ns_d, "head")
            assert head is not None
            key = f"item-{head.value['next'] - 1:012d}"
            item = snap.get_item(ns_d, key)
        assert item is not None
        with store.batch() as b:
            b.put(ns_d, "head", {"first": head.value["first"], "next": head.value["next"] - 1}, if_version=head.version)
            b.delete(ns_d, key, if_version=item.version)

    pair(
        "pop_item",
        n // 2,
        lambda i: loop.run_until_complete(ours.pop_item()),
        direct_pop,
        why=thread_why,
    )
    loop.close()
    store.close()


# ---------------------------------------------------------------- DSPy retriever


def bench_dspy(root: str, n: int, durability: str) -> None:
    from filemem.integrations.dspy import FileMemRetriever

    store = filemem.Store(os.path.join(root, "dspy"), durability=durability)
    prefix = ("agent-1", "facts")
    with store.batch() as b:
        for i in range(500):
            b.put(prefix, f"f{i}", {"text": " ".join(WORDS[(i * k + k) % 10] for k in range(1, 7)) + f" fact {i}"})
    retriever = FileMemRetriever(store, prefix, k=3, text_field="text")
    rm, tool = retriever.rm, retriever.as_tool()
    queries = ["staging deploy", "login timeout", "captcha export", "cart checkout report"]
    store.search(prefix, query=queries[0], limit=3)  # build the shared index once, for both sides
    print(f"== dspy retriever (n={n}, 500 facts, k=3)")

    def direct(i: int) -> list[str]:
        return [h.item.value["text"] for h in store.search(prefix, query=queries[i % 4], limit=3)]

    pair("module call -> Prediction(passages)", n, lambda i: retriever(queries[i % 4]), direct)
    pair("rm(query, k=3) for dspy.Retrieve", n, lambda i: rm(queries[i % 4], k=3), direct)
    pair("ReAct tool search_memory(query)", n, lambda i: tool(queries[i % 4]), direct)
    store.close()


SECTIONS: dict[str, Callable[[str, int, str], None]] = {
    "anthropic": bench_anthropic,
    "dspy": bench_dspy,
    "openai_agents": bench_openai_agents,
}
REQUIRES = {"anthropic": "anthropic", "dspy": "dspy", "openai_agents": "agents"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only this section (repeatable)")
    ap.add_argument("--n", type=int, default=300, help="calls per measurement")
    ap.add_argument("--durability", choices=["fsync", "flush"], default="fsync")
    ap.add_argument("--dir", default=None, help="parent directory for the stores (default: system temp)")
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="filemem-bench-integrations-", dir=args.dir)
    try:
        print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
        for name in args.only or sorted(SECTIONS):
            if importlib.util.find_spec(REQUIRES[name]) is None:
                print(f"== {name}: skipped, its extra is not installed")
                continue
            SECTIONS[name](root, args.n, args.durability)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
