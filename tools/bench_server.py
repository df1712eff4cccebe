"""Measure ``filemem serve``'s WebSocket fan-out: many clients following agents that write (see docs/server.md).

Usage::

    python tools/bench_server.py                       # 200 clients, 4 writers, 1,000 changes/s for 10 s
    python tools/bench_server.py --json                # the same, one JSON object
    python tools/bench_server.py --clients 50 --seconds 5
    python tools/bench_server.py --frames single       # one message per frame (default: the server's auto)

It prints one line: the figures, the machine's load average, and PASS or
FAIL against the issue's targets (the writers reach the asked rate; every
client receives every change, named, in commit order; delivery p99 under
``--p99-target-ms``). Exit status 0 only on PASS.

What runs (loopback only, bounded in count and time):

* one ``filemem serve`` process (no token, 127.0.0.1, a free port);
* ``--clients`` WebSocket clients spread over ``--client-procs`` processes
  (asyncio in each), each following the whole store from before the first
  write;
* ``--writers`` agent processes using the library directly, each putting
  ``rate / writers`` records per second (paced from a common start time) into
  its own namespace, keys ``k000000``, ``k000001``, ..., with ``--durability``
  as agents would (fsync by default), for ``--seconds``.

What is checked, per client and per writer: the sequence of keys the client
was told about is exactly ``k000000 .. k<last>``, each once, in that order
(the writer's commit order). A ``missed`` message or any key late, twice or
absent fails the run; the counts say which. ``key: null`` changes (the
server's "re-read this namespace" hint after the feed saw a shard only after
later writes) are counted and shown; they do not stand in for a key.

Latency: from the writer's acknowledgement (``put`` returned) to the
client's receipt of the frame carrying that key, both read from
``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on a Linux
machine), over every (client, key) pair. A frame can arrive before the
writer's ``put`` returned (the rename is seen before the directory fsync
ends): those count as 0.

Also reported: CPU seconds used by the server, the client processes and the
writers (where the machine's time went), and the 1-minute load average at
the start, the end and its maximum during the run (the machine may be
shared: a figure is only as good as the load it was taken under).

Temp stores go under ``--tmpdir`` (default: the system temp dir).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import importlib.util
import itertools
import json
import multiprocessing as mp
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import filemem  # noqa: E402

_BANNER = re.compile(r"on http://127\.0\.0\.1:(\d+)")
_NS_PREFIX = "bench/w"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Clients wait this long after the last writer finished for the last keys (then: cut off).
_GRACE_S = 15.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _proc_cpu_s(pid: int) -> float | None:
    """CPU seconds of another process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _writer(path: str, n: int, count: int, rate: float, durability: str, go: str, out: str) -> None:
    acks: list[float] = []
    walls: list[float] = []
    with filemem.Store(path, durability=durability) as store:  # type: ignore[arg-type]
        Path(f"{out}.ready").touch()
        # Every writer paces from one start time, set once all of them have opened the store:
        # a writer that was slow to start catches up instead of stretching the run.
        while not os.path.exists(go):
            time.sleep(0.001)
        t0 = float(Path(go).read_text())
        while time.monotonic() < t0:
            time.sleep(0.0005)
        for i in range(count):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            store.put(f"{_NS_PREFIX}{n}", f"k{i:06d}", {"i": i})
            acks.append(time.monotonic())
            walls.append(time.time())
    Path(out).write_text(json.dumps({"start": t0, "acks": acks, "walls": walls, "cpu_s": _cpu_s()}))


def _loads() -> Any:
    try:
        # optional: a faster parser leaves more of the machine to the server
        import orjson

        return orjson.loads
    except ImportError:
        return json.loads


class _RawClient(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455) for the benchmark: just enough to follow the server, cheaply.

    The ``websockets`` client spends most of a client process's CPU on its
    layers (a stream reader, a frame parser generator, UTF-8 checks, a task per
    ``wait_for``): with 100 clients in a process on a shared 2-core machine it
    takes cores from the server it measures. This one does the handshake
    (checking ``Sec-WebSocket-Accept``), splits the byte stream into frames
    (server frames are unmasked; fragments are joined; pings are answered,
    masked), and keeps each message's bytes with the receipt time of the read
    that completed it. Every message is still parsed (once per distinct frame
    per process) and every key checked, in order, after the run.
    """

    def __init__(self, path: str, port: int, on_message: Any) -> None:
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.on_message = on_message
        self.buf = bytearray()
        self.upgraded = False
        self.fragments: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses (no isinstance check), but write alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(f"connection lost: {exc!r}")

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_result(why)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now, wall = time.monotonic(), time.time()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            accept = base64.b64encode(hashlib.sha1((self.key + _WS_GUID).encode()).digest()).decode()
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
            if " 101 " not in head[0] + " " or fields.get("sec-websocket-accept") != accept:
                self._fail(f"handshake refused: {head[0]}")
                return
            self.upgraded = True
        at = 0
        size = len(buf)
        while size - at >= 2:
            b0, b1 = buf[at], buf[at + 1]
            if b1 & 0x80:
                self._fail("a server frame was masked")
                return
            n, hlen = b1 & 0x7F, 2
            if n == 126:
                if size - at < 4:
                    break
                n, hlen = int.from_bytes(buf[at + 2 : at + 4], "big"), 4
            elif n == 127:
                if size - at < 10:
                    break
                n, hlen = int.from_bytes(buf[at + 2 : at + 10], "big"), 10
            if size - at < hlen + n:
                break
            payload = bytes(buf[at + hlen : at + hlen + n])
            at += hlen + n
            opcode = b0 & 0x0F
            if opcode in (0, 1, 2):
                if b0 & 0x80:
                    if self.fragments:
                        payload = b"".join([*self.fragments, payload])
                        self.fragments = []
                    self.on_message(payload, now, wall)
                else:
                    self.fragments.append(payload)
            elif opcode == 9:  # ping: answer with a masked pong carrying the same bytes
                mask = os.urandom(4)
                masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self._fail(f"closed by the server: {code}")
                return
        del buf[:at]


def _writers_done(acks_dir: str, writers: int) -> bool:
    """Whether every writer finished (the main process renames its result to ``w<n>.json`` then)."""
    return len([p for p in os.listdir(acks_dir) if p.startswith("w") and p.endswith(".json")]) >= writers


class _GcPauses:
    """A ``gc.callbacks`` hook: how many collections ran and the longest (wall time, preemption included)."""

    def __init__(self) -> None:
        self.count = 0
        self.max_s = 0.0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.count += 1
            self.max_s = max(self.max_s, time.perf_counter() - self._t0)


def _client_proc(
    port: int,
    clients: int,
    frames: str,
    impl: str,
    loop_impl: str,
    client_gc: str,
    writers: int,
    count: int,
    deadline: float,
    ready: str,
    acks_dir: str,
    out: str,
) -> None:
    import websockets  # the server extra

    loads = _loads()
    query = {"auto": "", "array": "?batch=1", "single": "?batch=0"}[frames]
    path = f"/v1/changes{query}"
    url = f"ws://127.0.0.1:{port}{path}"
    namespaces = [f"{_NS_PREFIX}{n}" for n in range(writers)]
    connected: list[int] = []

    # Frame text -> its messages, parsed once per process: clients in step receive byte-identical
    # frames, and a dict lookup (hash and compare of the whole text) proves this client got exactly
    # those bytes. The parse, the order check and the latency sums run after the run, so a client's
    # receipt time is not pushed back by parsing other clients' frames.
    parsed: dict[str | bytes, tuple[tuple[str, str | None, int, float], ...]] = {}
    lasts: dict[str | bytes, int] = {}  # frame text -> how many writers' last keys it carries

    def parse(frame: str | bytes) -> int:
        msgs = loads(frame)
        out = []
        for m in msgs if isinstance(msgs, list) else (msgs,):
            kind = m["type"]
            if kind == "change" and m["namespace"] in keys_of:
                key = m["key"]
                out.append(("change", m["namespace"], -1 if key is None else int(key[1:]), m["time"]))
            elif kind == "missed":
                out.append(("missed", None, -1, 0.0))
        parsed[frame] = tuple(out)
        n = lasts[frame] = sum(1 for kind, _, i, _ in out if kind == "change" and i == count - 1)
        return n

    keys_of = set(namespaces)

    # When the clients give up: the hard deadline, or ``_GRACE_S`` after every writer finished
    # (a client still short of the last keys then counts as cut off, shown apart from holes).
    give_up = [deadline]

    async def one_websockets() -> dict[str, Any]:
        got: list[tuple[str | bytes, float, float]] = []  # (frame, monotonic, wall) at receipt
        finished = 0
        async with websockets.connect(url, max_size=None, open_timeout=120, compression=None) as ws:
            hello = loads(await ws.recv())
            assert hello["type"] == "hello"
            connected.append(1)
            while finished < writers:
                left = give_up[0] - time.monotonic()
                if left <= 0:
                    break
                try:
                    frame = await asyncio.wait_for(ws.recv(), min(left, 0.5))
                except TimeoutError:
                    continue
                assert isinstance(frame, str)  # text frames only
                got.append((frame, time.monotonic(), time.time()))
                n = lasts.get(frame)
                finished += parse(frame) if n is None else n
        return {"got": got, "cut_off": finished < writers}

    async def one_raw() -> dict[str, Any]:
        got: list[tuple[str | bytes, float, float]] = []
        state = {"finished": 0, "hello": 0}
        complete = asyncio.Event()

        def on_message(payload: bytes, now: float, wall: float) -> None:
            if not state["hello"]:
                assert loads(payload)["type"] == "hello"
                state["hello"] = 1
                connected.append(1)
                return
            got.append((payload, now, wall))
            n = lasts.get(payload)
            state["finished"] += parse(payload) if n is None else n
            if state["finished"] >= writers:
                complete.set()

        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(lambda: _RawClient(path, port, on_message), "127.0.0.1", port)
        try:
            while not complete.is_set() and time.monotonic() < give_up[0]:
                if proto.done.done():
                    raise ConnectionError(proto.done.result())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(complete.wait(), 0.5)
        finally:
            transport.close()
        return {"got": got, "cut_off": not complete.is_set()}

    one = one_raw if impl == "raw" else one_websockets

    def expand(got: list[tuple[str | bytes, float, float]]) -> dict[str, Any]:
        keys: dict[str, list[int]] = {ns: [] for ns in namespaces}
        times: dict[str, list[float]] = {ns: [] for ns in namespaces}
        # When the server's change feed saw each key (the message's ``time``) and the wall clock at
        # receipt: they split the latency into the watcher's part and the hub's and network's part.
        seen: dict[str, list[float]] = {ns: [] for ns in namespaces}
        walls: dict[str, list[float]] = {ns: [] for ns in namespaces}
        nulls = missed = 0
        nulls_in: dict[str, int] = dict.fromkeys(namespaces, 0)
        for frame, now, wall in got:
            for kind, ns, i, feed_time in parsed[frame]:
                if kind == "missed":
                    missed += 1
                elif i < 0:
                    nulls += 1
                    nulls_in[ns or ""] = nulls_in.get(ns or "", 0) + 1
                else:
                    assert ns is not None
                    keys[ns].append(i)
                    times[ns].append(now)
                    seen[ns].append(feed_time)
                    walls[ns].append(wall)
        return {
            "keys": keys,
            "times": times,
            "seen": seen,
            "walls": walls,
            "nulls": nulls,
            "nulls_in": nulls_in,
            "missed": missed,
        }

    async def main() -> list[dict[str, Any] | BaseException]:
        tasks = [asyncio.create_task(one()) for _ in range(clients)]
        while len(connected) < clients and not any(t.done() for t in tasks):
            await asyncio.sleep(0.05)
        Path(ready).touch()
        everything = asyncio.gather(*tasks, return_exceptions=True)
        while not everything.done():
            if _writers_done(acks_dir, writers):
                give_up[0] = min(give_up[0], time.monotonic() + _GRACE_S)
                break
            await asyncio.sleep(0.2)
        return await everything

    # The clients are the measuring instrument: their own pauses must not pass for the server's.
    # A full collection in a client process (100 connections, every frame kept) took 30-450 ms
    # of wall time on the shared machine, delaying the receipt of every frame in flight to it.
    pauses = _GcPauses()
    gc.callbacks.append(pauses)
    if client_gc == "off":
        gc.freeze()
        gc.disable()
    if loop_impl == "uvloop":
        import uvloop  # the server extra (uvicorn[standard])

        raw = uvloop.run(main())
    else:
        raw = asyncio.run(main())
    gc.callbacks.remove(pauses)
    cpu = _cpu_s()
    results: list[dict[str, Any] | BaseException] = []
    for r in raw:
        if isinstance(r, BaseException):
            results.append(r)
        else:
            results.append({**expand(r["got"]), "frames": len(r["got"]), "cut_off": r["cut_off"]})
    # Score each client against the writers' acknowledgements (written when the writers finished).
    while not _writers_done(acks_dir, writers):
        time.sleep(0.05)
    wdata = {f"{_NS_PREFIX}{n}": json.loads(Path(acks_dir, f"w{n}.json").read_text()) for n in range(writers)}
    acks = {ns: w["acks"] for ns, w in wdata.items()}
    ack_walls = {ns: w["walls"] for ns, w in wdata.items()}
    to_feed: list[float] = []
    feed_to_client: list[float] = []
    expected = list(range(count))
    latencies: list[float] = []
    summary = {"clients": len(results), "errors": 0, "in_order": 0, "complete": 0, "late_or_twice": 0, "absent": 0}
    summary.update(nulls=0, missed=0, frames=0, delivered=0, silent_gaps=0, cut_off=0, absent_at_end=0)
    errors: list[str] = []
    for r in results:
        if isinstance(r, BaseException):
            summary["errors"] += 1
            errors.append(repr(r)[:200])
            continue
        summary["nulls"] += r["nulls"]
        summary["missed"] += r["missed"]
        summary["frames"] += r["frames"]
        summary["cut_off"] += r["cut_off"]
        good = True
        for ns, seq in r["keys"].items():
            summary["delivered"] += len(seq)
            if seq != expected:
                good = False
                got_keys = set(seq)
                # Keys after the last one received: not delivered before the client gave up (a cut-off
                # client; the run failed on time). Keys before it: holes in the stream.
                top = max(got_keys, default=-1)
                holes = sum(1 for i in range(top) if i not in got_keys)
                summary["absent"] += holes
                summary["absent_at_end"] += count - 1 - top
                if holes and not r["nulls_in"].get(ns) and not r["missed"]:
                    # keys never named, and neither a key-null hint for the namespace nor a missed message
                    summary["silent_gaps"] += 1
                summary["late_or_twice"] += sum(1 for a, b in itertools.pairwise(seq) if b <= a)
            ack = acks[ns]
            latencies.extend(max(0.0, t - ack[i]) * 1000 for i, t in zip(seq, r["times"][ns], strict=True))
            aw = ack_walls[ns]
            to_feed.extend((f - aw[i]) * 1000 for i, f in zip(seq, r["seen"][ns], strict=True))
            feed_to_client.extend((w - f) * 1000 for f, w in zip(r["seen"][ns], r["walls"][ns], strict=True))
        # A key-null change is an extra "re-read the namespace" hint (a hidden write may also have
        # deleted keys): counted and shown, but the test is that every key was named, once, in order.
        summary["complete"] += good and not r["missed"]
    latencies.sort()
    to_feed.sort()
    feed_to_client.sort()
    split = {
        "ack_to_feed_p50_ms": _pct(to_feed, 0.5),
        "ack_to_feed_p99_ms": _pct(to_feed, 0.99),
        "feed_to_client_p50_ms": _pct(feed_to_client, 0.5),
        "feed_to_client_p99_ms": _pct(feed_to_client, 0.99),
    }
    gc_figures = {"gc_runs": pauses.count, "gc_max_ms": round(pauses.max_s * 1000, 1)}
    Path(out).write_text(
        json.dumps(
            {
                **summary,
                **gc_figures,
                "split": split,
                "latencies": latencies,
                "cpu_s": cpu,
                "error_examples": errors[:3],
            }
        )
    )


def _pct(xs: list[float], q: float) -> float | None:
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else None


class _LoadSampler(threading.Thread):
    """The 1-minute load average every half second, while the run lasts."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = [os.getloadavg()[0]]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.samples.append(os.getloadavg()[0])


def _line(r: dict[str, Any]) -> str:
    checks = r["checks"]
    failed = [name for name, ok in checks.items() if not ok]
    verdict = "PASS" if not failed else "FAIL (" + ", ".join(failed) + ")"
    errors = (
        f" client errors {r['client_errors']} (e.g. {r['client_error_examples'][0]});" if r["client_errors"] else ""
    )
    load = r["load_1m"]
    cpu = r["cpu_s"]
    split = max(r["split_per_client_proc"], key=lambda x: x["feed_to_client_p99_ms"] or 0)
    return (
        f"bench_server: {r['clients']} clients ({r['client_impl']}, {r['client_loop']}, gc {r['client_gc']}: "
        f"longest pause {r['client_gc_max_ms']} ms) in {r['client_procs']} procs, {r['writers']} writers "
        f"({r['durability']}, frames {r['frames']}): wrote {r['write_rate_per_s']:.0f}/s of {r['target_rate_per_s']:.0f}/s; "
        f"{r['clients_complete']}/{r['clients']} clients got all {r['changes']} changes in order "
        f"(missed {r['missed_messages']}, key-null {r['null_changes']}, late/twice {r['late_or_twice']}, "
        f"absent {r['absent']}, silent gaps {r['silent_gaps']}, cut off {r['clients_cut_off']} "
        f"missing {r['absent_at_end']} last keys {_GRACE_S:g} s after the writers ended); delivery p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms max {r['max_ms']} ms "
        f"(target p99 < {r['p99_target_ms']:g} ms; ack->feed p99 {split['ack_to_feed_p99_ms']} ms, "
        f"feed->client p99 {split['feed_to_client_p99_ms']} ms); {r['frames_received']} frames; "
        f"cpu s server {cpu['server']} clients {cpu['clients']} writers {cpu['writers']}; "
        f"load 1m {load['start']} -> {load['end']} (max {load['max']}) on {r['cpus']} cpus;{errors} {verdict}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--rate", type=float, default=1000.0, help="changes per second, all writers together")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--durability", choices=["fsync", "flush"], default="fsync")
    ap.add_argument(
        "--frames",
        choices=["auto", "array", "single"],
        default="auto",
        help="auto: the server's default (an array when several messages are due); array: ?batch=1; single: ?batch=0",
    )
    ap.add_argument(
        "--client-impl",
        choices=["raw", "websockets"],
        default="raw",
        help="raw: the benchmark's minimal RFC 6455 client (light); websockets: the websockets library's client",
    )
    ap.add_argument(
        "--client-loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="the clients' event loop (auto: uvloop when installed, as the server uses)",
    )
    ap.add_argument(
        "--client-gc",
        choices=["off", "on"],
        default="off",
        help="off: no garbage collection in the client processes during the run (their pauses are not the server's)",
    )
    ap.add_argument(
        "--server-checkout",
        default=None,
        help="run the server from this checkout (another worktree) to compare servers; clients and writers stay",
    )
    ap.add_argument("--p99-target-ms", type=float, default=50.0)
    ap.add_argument("--tmpdir", default=tempfile.gettempdir())
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the line")
    args = ap.parse_args()
    if not (1 <= args.clients <= 2000 and 0 < args.seconds <= 120 and 0 < args.rate <= 20000):
        ap.error("bounded: 1-2000 clients, at most 120 s and 20000 changes/s")
    if not (1 <= args.client_procs <= args.clients and 1 <= args.writers <= 64):
        ap.error("--client-procs must be 1..clients and --writers 1..64")
    client_loop = args.client_loop
    if client_loop == "auto":
        client_loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    ctx = mp.get_context("spawn")
    count = max(1, int(args.rate * args.seconds / args.writers))
    load = _LoadSampler()
    load.start()
    procs: list[Any] = []
    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="bench-server-") as tmp:
        store_path = os.path.join(tmp, "store")
        filemem.Store(store_path).close()
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "filemem", "serve", store_path, "--port", str(port), "--retain", "200000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=args.server_checkout,  # ``-m filemem`` imports the package in the working directory first
        )
        server_cpu: float | None = None
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not _BANNER.search(line):
                raise SystemExit(f"server did not start: {line}{server.stdout.read()}")
            deadline = time.monotonic() + args.seconds * 3 + 60
            per = [
                args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
                for i in range(args.client_procs)
            ]
            for i, n in enumerate(per):
                cargs = (
                    port,
                    n,
                    args.frames,
                    args.client_impl,
                    client_loop,
                    args.client_gc,
                    args.writers,
                    count,
                    deadline,
                    f"{tmp}/ready{i}",
                    tmp,
                    f"{tmp}/c{i}.out",
                )
                p = ctx.Process(target=_client_proc, args=cargs)
                p.start()
                procs.append(p)
            while not all(os.path.exists(f"{tmp}/ready{i}") for i in range(len(per))):
                time.sleep(0.05)
                if any(not p.is_alive() for p in procs):
                    raise SystemExit("a client process died while connecting")
            go = f"{tmp}/go"
            writers = []
            for n in range(args.writers):
                wargs = (store_path, n, count, args.rate / args.writers, args.durability, go, f"{tmp}/w{n}.tmp")
                writers.append(ctx.Process(target=_writer, args=wargs))
            for w in writers:
                w.start()
                procs.append(w)
            while not all(os.path.exists(f"{tmp}/w{n}.tmp.ready") for n in range(args.writers)):
                time.sleep(0.01)
                if any(not w.is_alive() for w in writers):
                    raise SystemExit("a writer died while starting")
            server_cpu0 = _proc_cpu_s(server.pid)
            Path(f"{go}.tmp").write_text(repr(time.monotonic() + 0.2))
            os.replace(f"{go}.tmp", go)
            for w in writers:
                w.join()
            for n in range(args.writers):
                if not os.path.exists(f"{tmp}/w{n}.tmp"):
                    raise SystemExit(f"writer {n} failed")
                os.replace(f"{tmp}/w{n}.tmp", f"{tmp}/w{n}.json")  # the clients wait for these names
            for p in procs:
                p.join(args.seconds * 3 + 120)
            cpu_now = _proc_cpu_s(server.pid)
            if cpu_now is not None and server_cpu0 is not None:
                server_cpu = cpu_now - server_cpu0
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(10)
            server.terminate()
            server.wait(30)
            load.stop.set()
        wouts = [json.loads(Path(tmp, f"w{n}.json").read_text()) for n in range(args.writers)]
        outs = [json.loads(Path(tmp, f"c{i}.out").read_text()) for i in range(len(per))]
    load.join()
    first = min(w["start"] for w in wouts)
    end = max(w["acks"][-1] for w in wouts)
    lat = sorted(x for o in outs for x in o["latencies"])
    total = count * args.writers
    rate = total / (end - first) if end > first else float("inf")

    def total_of(name: str) -> int:
        return int(sum(o[name] for o in outs))

    clients = total_of("clients")
    result: dict[str, Any] = {
        "clients": clients,
        "client_procs": len(per),
        "writers": args.writers,
        "durability": args.durability,
        "frames": args.frames,
        "client_impl": args.client_impl,
        "client_loop": client_loop,
        "client_gc": args.client_gc,
        "client_gc_max_ms": max(o["gc_max_ms"] for o in outs),
        "server_checkout": args.server_checkout or "this one",
        "seconds": args.seconds,
        "changes": total,
        "target_rate_per_s": args.rate,
        "write_rate_per_s": round(rate, 1),
        "clients_complete": total_of("complete"),
        "client_errors": total_of("errors"),
        "client_error_examples": [e for o in outs for e in o["error_examples"]][:3],
        "deliveries_expected": total * clients,
        "deliveries": total_of("delivered"),
        "missed_messages": total_of("missed"),
        "null_changes": total_of("nulls"),
        "late_or_twice": total_of("late_or_twice"),
        "absent": total_of("absent"),
        "clients_cut_off": total_of("cut_off"),
        "absent_at_end": total_of("absent_at_end"),
        "silent_gaps": total_of("silent_gaps"),
        "frames_received": total_of("frames"),
        "p50_ms": _pct(lat, 0.50),
        "p99_ms": _pct(lat, 0.99),
        "max_ms": round(lat[-1], 2) if lat else None,
        "p99_target_ms": args.p99_target_ms,
        # Where the latency goes (per client process; the message's ``time`` is when the server's feed saw it).
        "split_per_client_proc": [o["split"] for o in outs],
        "cpu_s": {
            "server": round(server_cpu, 1) if server_cpu is not None else None,
            "clients": round(sum(o["cpu_s"] for o in outs), 1),
            "writers": round(sum(w["cpu_s"] for w in wouts), 1),
        },
        "load_1m": {
            "start": round(load.samples[0], 2),
            "end": round(load.samples[-1], 2),
            "max": round(max(load.samples), 2),
        },
        "cpus": os.cpu_count(),
    }
    result["checks"] = {
        "rate": rate >= 0.98 * args.rate,
        "every_change_in_order": result["clients_complete"] == clients == args.clients,
        "p99": result["p99_ms"] is not None and result["p99_ms"] < args.p99_target_ms,
    }
    result["pass"] = all(result["checks"].values())
    print(json.dumps(result) if args.json else _line(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
