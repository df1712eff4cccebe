"""Measure ``filemem serve``'s WebSocket stream: many clients following agents that write (see docs/server.md).

Usage::

    python tools/bench_server.py                       # 200 clients, 4 writers, 1,000 changes/s for 10 s
    python tools/bench_server.py --clients 50 --seconds 5 --json
    python tools/bench_server.py --frames single       # one message per frame (default: batched frames)

What runs (loopback only, bounded in count and time):

* one ``filemem serve`` process (no token, 127.0.0.1, a free port);
* ``--clients`` WebSocket clients spread over ``--client-procs`` processes,
  each following the whole store from the moment it connected;
* ``--writers`` agent processes using the library directly, each putting
  ``rate / writers`` records per second (paced) into its own namespace,
  ``--durability`` as agents would (fsync by default), for ``--seconds``.

What is checked and reported:

* every client received every writer's changes: each key as a change of
  its own, or (when the feed saw a shard only after later writes replaced
  it and could not name them) covered by a ``key: null`` change of that
  namespace; a ``missed`` message is counted as a failure. Cursors are in
  stream order by construction; ``out_of_commit_order`` counts named keys
  that arrived after a later key of the same writer (another shard's
  change seen late);
* delivery latency, from the writer's acknowledgement (``put`` returned,
  ``time.time()`` in the writer) to the client's receipt of the message
  naming the key (``time.time()`` in the client; one clock, one machine):
  p50, p99, max over every (client, key) pair. A message can arrive before
  the writer's ``put`` returned (the rename is seen before the directory
  fsync ends): those count as 0.
* the writers' achieved rate.

Temp stores go under ``--tmpdir`` (default: the system temp dir).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import filemem  # noqa: E402

_BANNER = re.compile(r"on http://127\.0\.0\.1:(\d+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _writer(path: str, n: int, count: int, rate: float, durability: str, start_at: float, out: str) -> None:
    acks: list[float] = []
    with filemem.Store(path, durability=durability) as store:  # type: ignore[arg-type]
        while time.time() < start_at:
            time.sleep(0.001)
        t0 = time.perf_counter()
        for i in range(count):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            store.put(f"bench/w{n}", f"k{i:06d}", {"i": i})
            acks.append(time.time())
        elapsed = time.perf_counter() - t0
    Path(out).write_text(json.dumps({"acks": acks, "elapsed": elapsed}))


def _client_proc(
    port: int, clients: int, batch: bool, writers: int, count: int, deadline: float, ready: str, acks_dir: str, out: str
) -> None:
    import websockets

    url = f"ws://127.0.0.1:{port}/v1/changes" + ("?batch=1" if batch else "")
    last_key = f"k{count - 1:06d}"

    async def one() -> dict[str, Any]:
        got: list[tuple[str | None, str | None, str, float]] = []  # (namespace, key, type, t)
        done: set[str] = set()
        async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello"
            connected.append(1)
            while len(done) < writers:
                left = deadline - time.time()
                if left <= 0:
                    break
                try:
                    frame = await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    break
                now = time.time()
                msgs = json.loads(frame)
                for m in msgs if isinstance(msgs, list) else [msgs]:
                    got.append((m.get("namespace"), m.get("key"), m["type"], now))
                    if m.get("key") == last_key:
                        done.add(m["namespace"])
        return {"got": got, "complete": len(done) == writers}

    connected: list[int] = []

    async def main() -> list[dict[str, Any]]:
        tasks = [asyncio.create_task(one()) for _ in range(clients)]
        while len(connected) < clients:
            await asyncio.sleep(0.05)
            if any(t.done() for t in tasks):
                break
        Path(ready).touch()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    # Score each client against the writers' acknowledgements (written when the writers finished).
    while len([p for p in os.listdir(acks_dir) if p.endswith(".json")]) < writers:
        time.sleep(0.05)
    acks = {f"bench/w{n}": json.loads(Path(acks_dir, f"w{n}.json").read_text())["acks"] for n in range(writers)}
    latencies: list[float] = []
    failures: list[str] = []
    covered = missed = reordered = 0
    for r in results:
        if not r["complete"]:
            failures.append("a client did not see every writer's last key before the deadline")
        per_ns: dict[str, list[tuple[str | None, float]]] = {}
        for ns, key, kind, t in r["got"]:
            if kind == "missed":
                missed += 1
            if kind == "change" and ns in acks:
                per_ns.setdefault(ns, []).append((key, t))
        for ns, seq in per_ns.items():
            named: dict[int, float] = {}
            nulls = 0
            prev = -1
            for key, t in seq:
                if key is None:
                    nulls += 1
                    continue
                i = int(key[1:])
                if i < prev:
                    reordered += 1  # another shard's change, seen late (docs/server.md)
                prev = max(prev, i)
                named.setdefault(i, t)
            for i, t in named.items():
                latencies.append(max(0.0, t - acks[ns][i]) * 1000)
            unnamed = count - len(named)
            if unnamed and not nulls:
                failures.append(f"{ns}: {unnamed} keys never announced (a silent gap)")
            covered += unnamed
    latencies.sort()
    Path(out).write_text(
        json.dumps(
            {
                "latencies": latencies,
                "failures": failures[:20],
                "nfail": len(failures),
                "covered": covered,
                "missed": missed,
                "reordered": reordered,
                "clients": len(results),
            }
        )
    )


def _pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--client-procs", type=int, default=4)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--rate", type=float, default=1000.0, help="changes per second, all writers together")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--durability", choices=["fsync", "flush"], default="fsync")
    ap.add_argument(
        "--frames",
        choices=["batch", "single"],
        default="batch",
        help="batch: ?batch=1 (JSON arrays per frame); single: one message per frame",
    )
    ap.add_argument("--tmpdir", default=tempfile.gettempdir())
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.clients > 2000 or args.seconds > 120 or args.rate > 20000:
        ap.error("bounded: at most 2000 clients, 120 s, 20000 changes/s")
    ctx = mp.get_context("spawn")
    count = int(args.rate * args.seconds / args.writers)
    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="bench-server-") as tmp:
        store_path = os.path.join(tmp, "store")
        filemem.Store(store_path).close()
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "filemem", "serve", store_path, "--port", str(port), "--retain", "200000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs: list[mp.process.BaseProcess] = []
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not _BANNER.search(line):
                raise SystemExit(f"server did not start: {line}{server.stdout.read()}")
            deadline = time.time() + args.seconds * 3 + 60
            per = [
                args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
                for i in range(args.client_procs)
            ]
            for i, n in enumerate(per):
                p = ctx.Process(
                    target=_client_proc,
                    args=(
                        port,
                        n,
                        args.frames == "batch",
                        args.writers,
                        count,
                        deadline,
                        f"{tmp}/ready{i}",
                        tmp,
                        f"{tmp}/client{i}.out",
                    ),
                )
                p.start()
                procs.append(p)
            while not all(os.path.exists(f"{tmp}/ready{i}") for i in range(len(per))):
                time.sleep(0.05)
                if any(not p.is_alive() for p in procs):
                    raise SystemExit("a client process died while connecting")
            start_at = time.time() + 1.0
            writers = [
                ctx.Process(
                    target=_writer,
                    args=(
                        store_path,
                        n,
                        count,
                        args.rate / args.writers,
                        args.durability,
                        start_at,
                        f"{tmp}/w{n}.json.tmp",
                    ),
                )
                for n in range(args.writers)
            ]
            for w in writers:
                w.start()
                procs.append(w)
            for w in writers:
                w.join()
            for n in range(args.writers):
                os.replace(f"{tmp}/w{n}.json.tmp", f"{tmp}/w{n}.json")  # the clients wait for these names
            for p in procs:
                p.join(args.seconds * 3 + 120)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(10)
            server.terminate()
            server.wait(30)
        elapsed = max(json.loads(Path(tmp, f"w{n}.json").read_text())["elapsed"] for n in range(args.writers))
        outs = [json.loads(Path(tmp, f"client{i}.out").read_text()) for i in range(len(per))]
    lat = sorted(x for o in outs for x in o["latencies"])
    result = {
        "clients": sum(o["clients"] for o in outs),
        "writers": args.writers,
        "durability": args.durability,
        "frames": args.frames,
        "changes": count * args.writers,
        "write_rate_per_s": round(count * args.writers / elapsed, 1),
        "deliveries": len(lat),
        "covered_by_null": sum(o["covered"] for o in outs),
        "missed_messages": sum(o["missed"] for o in outs),
        "out_of_commit_order": sum(o["reordered"] for o in outs),
        "failures": sum(o["nfail"] for o in outs),
        "failure_examples": [f for o in outs for f in o["failures"]][:5],
        "p50_ms": round(_pct(lat, 0.5), 2),
        "p99_ms": round(_pct(lat, 0.99), 2),
        "max_ms": round(lat[-1], 2) if lat else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>18}: {v}")
    ok = result["failures"] == 0 and result["missed_messages"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
