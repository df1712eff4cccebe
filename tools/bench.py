"""Benchmark filemem against its peers on the same workloads, in one run.

Usage::

    python tools/bench.py --quick                 # a few minutes, latency sizes up to 100k
    python tools/bench.py                         # full (~10 minutes): latency sizes up to 1M records
    python tools/bench.py --workloads collector,visibility,fold --json
    python tools/bench.py --code-ref HEAD         # measure filemem as committed, not the working tree
    python tools/bench.py --sizes 1000,10000 --json --out results.json

Peers (each imported lazily; a missing one is skipped with a note):

* ``diskcache.Cache`` (defaults: SQLite WAL, ``synchronous=NORMAL``, pickled values)
* ``sqlitedict.SqliteDict(..., autocommit=True)`` (defaults: rollback journal,
  ``synchronous=FULL``, pickled values)
* ``lmdb.open(path, sync=True)`` and ``lmdb.open(path, sync=False)`` (JSON values)
* ``json+lock``: one JSON file holding a dict, guarded by an exclusive
  portalocker (flock) lock on a separate lock file, rewritten whole and
  atomically (temp file + ``os.replace``) on every put; a get parses the file.

Workloads (each a function below; every figure goes through the library's
public API, nothing is cached or short-cut by the harness):

1. ``puts``: 1 and 4 processes (``--procs``) (spawn) write their own distinct keys into
   one store/namespace, timed from a start barrier to the last finisher.
   Durable rows (filemem ``fsync``, lmdb ``sync=True``, diskcache and
   sqlitedict defaults, json+lock with fsync) and non-durable rows (filemem
   ``flush``, lmdb ``sync=False``, json+lock without fsync) are separate; a
   third group repeats the durable puts into a store already holding
   ``--put-prefill`` records (many shards, so writers rarely share one).
2. ``gets``: 1 and 4 processes do random gets on a store pre-populated with
   ``--get-keys`` records, after an identical warm-up for every peer (every
   key once, so 1 and 4 processes measure the same steady state; ``--get-warmup
   sample`` is the old 3,000 random gets). filemem is measured with its default
   ``consistency="cached"`` and with ``"strict"``; each cell also reports the
   CPU per get summed over its processes (``cpu_us_per_op``), the figure to
   compare on a loaded machine.
3. ``latency``: p50/p99 of single filemem puts (default ``fsync``) while the
   store holds 1k, 10k, 100k, 1M records (populated with ``durability="flush"``
   via ``store.batch()`` in chunks), the number of shard files, and random
   gets over the whole key space at each size.
4. ``batch``: one ``store.batch()`` of 1,000 records vs diskcache's 1,000
   per-record ``set()`` calls (lmdb one write txn and others for reference),
   into an empty store and into one holding ``--batch-prefill`` records.
5. ``collector``, 6. ``visibility``, 7. ``fold``: the figures issue 13 adds
   (collector throughput vs lmdb ``sync=False``, cross-process visibility to a
   reader spinning on cached gets, fold throughput, log size and peak RSS
   under 4 writers); see tools/bench_v2.py. They run unchanged on today's
   engine and on the write-ahead-log engine, printing "n/a (no log)" for what
   only a log has.
8. ``pg`` (issue 16; ``--only pg`` runs just it): durable puts and random gets
   from 1 and 4 processes on ``filemem file``, ``filemem postgres``
   (``Store(url)``), ``psycopg same statements`` (the backend's statement,
   the one-call put ``filemem_put_v1``, on one plain connection per process,
   from tools/bench_pg.py), ``psycopg 7 statements (old put)`` (what a put ran
   before), ``psycopg one upsert`` (the floor) and ``lmdb sync=True``, with
   ``filemem postgres`` / each row; then the change-feed latency. The server is
   ``--pg-url`` or a throwaway one started as tools/bench_pg.py does
   (tests/pgserver.py); with neither (no ``initdb``) the workload is skipped
   with a note.

Puts/gets cells are the median of ``--repeat`` interleaved runs; batch rows
the median of ``--rounds``. Ratios are always "filemem is N x faster" (>1:
filemem ahead, <1: behind). filemem is imported from a copy of the package
taken at start (``--code-ref`` to take it from git), so a checkout edited
during the run cannot mix versions. Temp stores go under ``--tmpdir``
(default: the system temp directory, or ``$FILEMEM_BENCH_TMP``); the run
notes it if that is tmpfs, which would make fsync free. See
docs/benchmarks.md for figures and analysis.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # so `python tools/bench.py` finds filemem without PYTHONPATH
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_v2, and spawned children find it too

import bench_v2  # noqa: E402 - after the path set-up above

NS = ("bench",)
PROC_COUNTS = (1, 4)
BARRIER_TIMEOUT_S = 120.0
WARMUP_GETS = 3_000
WARMUP_S = 0.5
#: Cap of the "every key once" warm-up of the gets workload (``--get-warmup keys``).
WARMUP_KEYS_S = 3.0
#: filemem/__init__.py of the code snapshot every process must import (set by main()).
EXPECTED_MODULE: list[str | None] = [None]


def make_value(i: int) -> dict[str, Any]:
    """The record every workload writes: a small JSON-able dict (~150 bytes encoded)."""
    return {"task": "login", "ok": True, "n": i, "text": "x" * 100}


# ---------------------------------------------------------------------- peers
#
# A peer is built from a picklable spec (kind, label, options) so that spawned
# children can construct their own handle: nothing is shared but the files.


class Peer:
    """One store under test: open it, put, get, bulk-populate, close."""

    kind = ""

    def __init__(self, path: str, opts: dict[str, Any]) -> None:
        self.path = path
        self.opts = opts

    def open(self) -> None:
        raise NotImplementedError

    def put(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def get(self, key: str) -> Any:
        raise NotImplementedError

    def populate(self, items: list[tuple[str, Any]]) -> None:
        """Bulk load through the library's own fastest real path (one transaction/batch)."""
        for k, v in items:
            self.put(k, v)

    def close(self) -> None:
        raise NotImplementedError


class FilememPeer(Peer):
    kind = "filemem"

    def open(self) -> None:
        import filemem

        kwargs: dict[str, Any] = {"durability": self.opts.get("durability", "fsync"), "codec": self.opts.get("codec")}
        if "consistency" in self.opts:
            kwargs["consistency"] = self.opts["consistency"]
        self.store = filemem.Store(self.path, **kwargs)
        self.module_file = filemem.__file__

    def put(self, key: str, value: Any) -> None:
        self.store.put(NS, key, value)

    def get(self, key: str) -> Any:
        return self.store.get(NS, key)

    def populate(self, items: list[tuple[str, Any]]) -> None:
        for start in range(0, len(items), 100_000):
            with self.store.batch() as b:
                for k, v in items[start : start + 100_000]:
                    b.put(NS, k, v)

    def close(self) -> None:
        self.store.close()


class DiskcachePeer(Peer):
    kind = "diskcache"

    def open(self) -> None:
        import diskcache

        self.cache = diskcache.Cache(self.path)

    def put(self, key: str, value: Any) -> None:
        self.cache.set(key, value)

    def get(self, key: str) -> Any:
        return self.cache.get(key)

    def populate(self, items: list[tuple[str, Any]]) -> None:
        with self.cache.transact():
            for k, v in items:
                self.cache.set(k, v)

    def close(self) -> None:
        self.cache.close()


class SqlitedictPeer(Peer):
    kind = "sqlitedict"

    def open(self) -> None:
        from sqlitedict import SqliteDict

        os.makedirs(self.path, exist_ok=True)
        self.file = os.path.join(self.path, "db.sqlite")
        self.db = SqliteDict(self.file, autocommit=True)

    def put(self, key: str, value: Any) -> None:
        self.db[key] = value

    def get(self, key: str) -> Any:
        return self.db.get(key)

    def populate(self, items: list[tuple[str, Any]]) -> None:
        from sqlitedict import SqliteDict

        with SqliteDict(self.file, autocommit=False) as db:
            for k, v in items:
                db[k] = v
            db.commit()

    def close(self) -> None:
        self.db.close()


class LmdbPeer(Peer):
    kind = "lmdb"

    def open(self) -> None:
        import lmdb

        self.env = lmdb.open(self.path, sync=self.opts["sync"], map_size=self.opts.get("map_size", 1 << 31))

    def put(self, key: str, value: Any) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key.encode(), json.dumps(value).encode())

    def get(self, key: str) -> Any:
        with self.env.begin() as txn:
            raw = txn.get(key.encode())
        return None if raw is None else json.loads(raw)

    def populate(self, items: list[tuple[str, Any]]) -> None:
        with self.env.begin(write=True) as txn:
            for k, v in items:
                txn.put(k.encode(), json.dumps(v).encode())

    def close(self) -> None:
        self.env.close()


class JsonFilePeer(Peer):
    """The naive baseline: one JSON dict in one file, whole-file rewrite under a lock."""

    kind = "jsonfile"

    def open(self) -> None:
        import portalocker

        self._pl = portalocker
        os.makedirs(self.path, exist_ok=True)
        self.file = os.path.join(self.path, "data.json")
        self.lock_file = os.path.join(self.path, "data.lock")
        self.fsync = bool(self.opts["fsync"])
        self.lock_fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.file, "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return {}

    def _write(self, data: dict[str, Any]) -> None:
        tmp = f"{self.file}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(json.dumps(data, separators=(",", ":")).encode())
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, self.file)
        if self.fsync:
            dfd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _locked(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self._pl.lock(self.lock_fd, self._pl.LockFlags.EXCLUSIVE)
        try:
            data = self._load()
            fn(data)
            self._write(data)
        finally:
            self._pl.unlock(self.lock_fd)

    def put(self, key: str, value: Any) -> None:
        self._locked(lambda d: d.__setitem__(key, value))

    def get(self, key: str) -> Any:
        return self._load().get(key)  # replaced by rename: a reader sees a whole file, no lock needed

    def populate(self, items: list[tuple[str, Any]]) -> None:
        self._locked(lambda d: d.update(items))

    def close(self) -> None:
        os.close(self.lock_fd)


class PsycopgPeer(Peer):
    """Plain psycopg on one autocommit connection, running the statements the PostgreSQL backend runs.

    ``path`` is a server URL (one schema per cell). ``mode`` (tools/bench_pg.py
    holds the one implementation of each):

    * ``call`` (the default): the backend's put, one call of the store's
      ``filemem_put_v1`` with the arguments the backend sends
      (``bench_pg.RawCall``); gets: the backend's SELECT (``raw_get``).
    * ``old``: the 7 statements a put ran before the one-call put
      (``bench_pg._raw_put``), on tables of their own.
    * ``one``: one autocommit ``INSERT ... ON CONFLICT`` per put, no lock,
      no version, no feed: the floor.

    Values are the compact JSON the default codec writes, encoded per put.
    """

    kind = "psycopg"

    def open(self) -> None:
        import bench_pg
        import psycopg

        self.mode = str(self.opts.get("mode", "call"))
        self.conn = psycopg.connect(self.path, autocommit=True)
        self.conn.execute(bench_pg._RAW_SETUP)
        self.table = "filemem_records" if self.mode == "call" else "raw_records"
        if self.mode == "call":
            self.conn.close()
            ids = bench_pg.raw_store(self.path)  # the filemem tables and function
            self.conn = psycopg.connect(self.path, autocommit=True)
            self.call = bench_pg.RawCall(self.conn, *ids)
        self._put = bench_pg._raw_put
        self._get = bench_pg.raw_get

    def put(self, key: str, value: Any) -> None:
        if self.mode == "call":
            self.call.put("bench", key, value)
            return
        data = json.dumps(value, separators=(",", ":")).encode()
        if self.mode == "old":
            self._put(self.conn, "bench", key, data)
        else:
            self.conn.execute(
                "INSERT INTO raw_records (ns, key, value, version) VALUES ('bench', %s, %s, 1)"
                " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                (key, data),
            )

    def get(self, key: str) -> Any:
        rows = self._get(self.conn, "bench", key, self.table)
        return json.loads(rows[0][0]) if rows else None

    def populate(self, items: list[tuple[str, Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {self.table} (ns, key, value, version, created_at, updated_at)"
                " VALUES ('bench', %s, %s, 1, 0, 0) ON CONFLICT DO NOTHING",
                [(k, json.dumps(v, separators=(",", ":")).encode()) for k, v in items],
            )

    def close(self) -> None:
        self.conn.close()


PEER_CLASSES: dict[str, type[Peer]] = {
    c.kind: c for c in (FilememPeer, DiskcachePeer, SqlitedictPeer, LmdbPeer, JsonFilePeer, PsycopgPeer)
}
IMPORT_NAMES = {
    "filemem": "filemem",
    "diskcache": "diskcache",
    "sqlitedict": "sqlitedict",
    "lmdb": "lmdb",
    "jsonfile": "portalocker",
    "psycopg": "psycopg",
}

Spec = tuple[str, str, dict[str, Any]]  # (kind, label, options)

FILEMEM_DURABLE: Spec = ("filemem", "filemem fsync", {"durability": "fsync"})
FILEMEM_FLUSH: Spec = ("filemem", "filemem flush", {"durability": "flush"})
DURABLE_PEERS: list[Spec] = [
    ("diskcache", "diskcache", {}),
    ("sqlitedict", "sqlitedict", {}),
    ("lmdb", "lmdb sync=True", {"sync": True}),
    ("jsonfile", "json+lock fsync", {"fsync": True}),
]
NONDURABLE_PEERS: list[Spec] = [
    ("lmdb", "lmdb sync=False", {"sync": False}),
    ("jsonfile", "json+lock no-fsync", {"fsync": False}),
]


def build_peer(spec: Spec, path: str) -> Peer:
    kind, _, opts = spec
    return PEER_CLASSES[kind](path, opts)


def create_store(spec: Spec, path: str, items: list[tuple[str, Any]] | None = None) -> None:
    """Create the store in the parent (so workers time puts, not racing to create it), optionally populated."""
    peer = build_peer(spec, path)
    peer.open()
    if items:
        peer.populate(items)
    peer.close()


def peer_missing(kind: str) -> str | None:
    """None if the peer's library imports, else why not."""
    try:
        __import__(IMPORT_NAMES[kind])
    except ImportError as exc:
        return f"{kind} skipped: {exc}"
    return None


# ---------------------------------------------------------------------- multi-process runner


def _worker(
    spec: Spec,
    path: str,
    op: str,
    wid: int,
    n_ops: int,
    n_keys: int,
    budget_s: float,
    barrier: Any,
    out: Any,
    warmup: str = "sample",
) -> None:
    """Child entry point (spawn): open the peer, wait at the barrier, run ops, report.

    ``warmup`` (gets only): ``"sample"`` = up to WARMUP_GETS random gets or
    WARMUP_S seconds; ``"keys"`` = every key once, in a random order, up to
    WARMUP_KEYS_S seconds. Either is the same code for every peer.
    """
    peer: Peer | None = None
    try:
        peer = build_peer(spec, path)
        peer.open()
        if op == "put":
            work = [(f"w{wid}-{i}", make_value(i)) for i in range(n_ops)]
        else:
            rng = random.Random(1000 + wid)
            work = [(f"k{rng.randrange(n_keys)}", None) for _ in range(n_ops)]
            # Warm-up, identical for every peer: up to WARMUP_GETS random gets or WARMUP_S seconds,
            # so the figure is the steady state of a long-lived process (filemem's shard cache,
            # SQLite's page cache, lmdb's mapping), not the cost of starting one.
            # "keys" makes the figure independent of how the gets are split: with "sample", one
            # process doing all 40,000 gets has met most keys before the few it meets first, while
            # each of 4 processes doing 10,000 meets far more keys for the first time, so the two
            # process counts measured different mixes of first and repeated reads (issue 13).
            if warmup == "keys":
                order = [f"k{i}" for i in range(n_keys)]
                rng.shuffle(order)
                warm_until = time.perf_counter() + WARMUP_KEYS_S
            else:
                order = [f"k{rng.randrange(n_keys)}" for _ in range(WARMUP_GETS)]
                warm_until = time.perf_counter() + WARMUP_S
            for key in order:
                peer.get(key)
                if time.perf_counter() > warm_until:
                    break
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        clock = time.perf_counter
        cpu0 = time.process_time()  # CPU of this process: the load of other processes does not inflate it
        t0 = clock()
        deadline = t0 + budget_s
        done = misses = 0
        if op == "put":
            put = peer.put
            for key, value in work:
                put(key, value)
                done += 1
                if clock() > deadline:
                    break
        else:
            get = peer.get
            for key, _ in work:
                if get(key) is None:
                    misses += 1
                done += 1
                if clock() > deadline:
                    break
        t1 = clock()
        cpu = time.process_time() - cpu0
        out.put(
            {
                "wid": wid,
                "ok": True,
                "ops": done,
                "t0": t0,
                "t1": t1,
                "cpu_s": cpu,
                "misses": misses,
                "module": getattr(peer, "module_file", None),
            }
        )
    except BaseException as exc:
        barrier.abort()  # let the siblings fail fast instead of waiting out the timeout
        out.put({"wid": wid, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        if peer is not None:
            with contextlib.suppress(Exception):  # best effort in a child that is exiting anyway
                peer.close()


def run_procs(
    spec: Spec,
    path: str,
    op: str,
    nprocs: int,
    ops_total: int,
    n_keys: int,
    budget_s: float,
    warmup: str = "sample",
) -> dict[str, Any]:
    """Run ``op`` from ``nprocs`` spawned processes; return ops/s over the wall time after the barrier."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(nprocs)
    out = ctx.Queue()
    per = max(1, ops_total // nprocs)
    procs = [
        ctx.Process(target=_worker, args=(spec, path, op, w, per, n_keys, budget_s, barrier, out, warmup), daemon=True)
        for w in range(nprocs)
    ]
    results: list[dict[str, Any]] = []
    try:
        for p in procs:
            p.start()
        limit = time.monotonic() + BARRIER_TIMEOUT_S + budget_s + 60
        dead_since: float | None = None
        while len(results) < nprocs:
            try:
                results.append(out.get(timeout=0.5))
                continue
            except queue.Empty:
                pass
            if time.monotonic() > limit:
                return {"error": f"timed out waiting for {nprocs - len(results)} worker(s)"}
            if any(p.is_alive() for p in procs):
                dead_since = None
            elif dead_since is None:
                dead_since = time.monotonic()  # give the queue's pipe a moment to drain
            elif time.monotonic() - dead_since > 2:
                codes = [p.exitcode for p in procs]
                return {"error": f"{nprocs - len(results)} worker(s) died without reporting (exit codes {codes})"}
    finally:
        for p in procs:
            p.join(timeout=10)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        out.close()
        out.join_thread()
    errors = [r["error"] for r in results if not r["ok"]]
    strays = {r.get("module") for r in results if r["ok"] and r.get("module")} - {EXPECTED_MODULE[0]}
    if EXPECTED_MODULE[0] and strays:
        errors.append(f"worker imported filemem from {sorted(strays)}, not the snapshot {EXPECTED_MODULE[0]}")
    if errors:
        return {"error": "; ".join(sorted(set(errors)))[:300]}
    ops = sum(r["ops"] for r in results)
    wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    row: dict[str, Any] = {"ops": ops, "wall_s": round(wall, 4), "rate": round(ops / wall, 1)}
    # CPU per op summed over the processes: what one op costs, whatever else loads the machine.
    row["cpu_us_per_op"] = round(sum(r.get("cpu_s", 0.0) for r in results) / max(ops, 1) * 1e6, 2)
    if op == "get":
        row["misses"] = sum(r["misses"] for r in results)
    if ops < per * nprocs:
        row["time_capped"] = True
    return row


# ---------------------------------------------------------------------- helpers


class TempDirs:
    """Fresh directories under one base; everything is removed at the end."""

    def __init__(self, base: str) -> None:
        os.makedirs(base, exist_ok=True)
        self.root = tempfile.mkdtemp(prefix="filemem-bench-", dir=base)
        self.n = 0

    def new(self, label: str) -> str:
        self.n += 1
        safe = "".join(c if c.isalnum() else "_" for c in label)
        return os.path.join(self.root, f"{self.n:03d}-{safe}")

    @staticmethod
    def drop(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, math.ceil(q / 100 * len(sorted_vals)) - 1))
    return sorted_vals[i]


def count_shards(store_path: str) -> int:
    n = 0
    for _dirpath, _dirs, files in os.walk(os.path.join(store_path, "ns")):
        n += sum(1 for f in files if f.endswith(".shard") and ".tmp-" not in f)
    return n


def dir_bytes(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):  # a file removed meanwhile
                total += os.path.getsize(os.path.join(dirpath, f))
    return total


def machine_info(tmp_base: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            info["mem_total"] = fh.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        df = subprocess.run(["df", "-T", tmp_base], capture_output=True, text=True, timeout=10, check=False)
        lines = df.stdout.strip().splitlines()
        if len(lines) >= 2:
            fields = lines[-1].split()
            info["filesystem"] = {"device": fields[0], "type": fields[1], "mount": fields[-1]}
            with open("/proc/mounts") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 4 and parts[1] == fields[-1]:
                        info["filesystem"]["options"] = parts[3]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    versions = {}
    for mod in ("filemem", "diskcache", "sqlitedict", "lmdb", "portalocker", "msgpack"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except ImportError:
            versions[mod] = None
    try:
        import lmdb

        versions["liblmdb"] = ".".join(str(x) for x in lmdb.version())
    except ImportError:
        pass
    info["versions"] = versions
    info["tmpdir"] = tmp_base
    info["filemem_git"] = git_state()
    info["fs_probe_us"] = fs_probe(tmp_base)
    info["loadavg_start"] = loadavg()
    return info


def snapshot_code(dest: str, ref: str | None) -> dict[str, Any]:
    """Copy the filemem package under ``dest`` and import it from there, in this process and every child.

    The checkout may change while a long run goes on (spawned children import
    afresh); a snapshot makes every figure of one run come from one code version.
    ``ref``: take the package as committed at that git ref (``git archive``)
    instead of the working tree.
    """
    code = os.path.join(dest, "code")
    os.makedirs(code)
    if ref:
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", "--format=tar", ref, "filemem"], capture_output=True, timeout=60, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(code, filter="data")
    else:
        src = os.path.join(ROOT, "filemem")
        shutil.copytree(src, os.path.join(code, "filemem"), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha256()
    for dirpath, dirs, files in os.walk(os.path.join(code, "filemem")):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(dirpath, f)
            digest.update(os.path.relpath(full, code).encode() + b"\0")
            with open(full, "rb") as fh:
                digest.update(fh.read())
    sys.path.insert(0, code)  # spawn children inherit sys.path
    if "filemem" in sys.modules:
        raise RuntimeError("filemem was imported before the code snapshot was taken")
    import filemem

    EXPECTED_MODULE[0] = filemem.__file__
    out: dict[str, Any] = {"path": filemem.__file__, "sha256": digest.hexdigest()[:16], "ref": ref}
    if ref:
        out["commit"] = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", ref], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    return out


def git_state() -> dict[str, Any] | None:
    """Commit of the filemem checkout and which of its files differ from it (the code measured)."""
    try:
        head = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "filemem"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "modified": [line[3:] for line in dirty if line.strip()]}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def fs_probe(base: str, n: int = 200) -> dict[str, float]:
    """p50 in microseconds of the file-system primitives a filemem put is made of, on ``base``."""
    d = tempfile.mkdtemp(prefix="probe-", dir=base)
    data = b"x" * 16384
    out: dict[str, list[float]] = {k: [] for k in ("create", "write_16k", "fsync_file", "rename_over", "fsync_dir")}
    clock = time.perf_counter
    try:
        target = os.path.join(d, "target")
        with open(target, "wb") as fh:
            fh.write(data)
        for i in range(n):
            tmp = os.path.join(d, f"t{i}")
            t0 = clock()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            t1 = clock()
            os.write(fd, data)
            t2 = clock()
            os.fsync(fd)
            t3 = clock()
            os.close(fd)
            t4 = clock()
            os.replace(tmp, target)
            t5 = clock()
            dfd = os.open(d, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
            t6 = clock()
            for k, v in zip(out, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t6 - t5), strict=True):
                out[k].append(v)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {k: round(statistics.median(v) * 1e6, 1) for k, v in out.items()}


# ---------------------------------------------------------------------- workloads


def available(specs: Iterable[Spec], notes: list[str]) -> list[Spec]:
    out = []
    for spec in specs:
        why = peer_missing(spec[0])
        if why is None:
            out.append(spec)
        elif why not in notes:
            notes.append(why)
    return out


def median_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (an error anywhere marks the cell), with every rate kept."""
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"error": errors[0], "runs": len(runs)}
    ordered = sorted(runs, key=lambda r: r["rate"])
    cell = dict(ordered[(len(ordered) - 1) // 2])
    cell["rates"] = [r["rate"] for r in runs]
    cell["time_capped"] = any(r.get("time_capped") for r in runs)
    return cell


def workload_puts(cfg: argparse.Namespace, dirs: TempDirs, notes: list[str]) -> dict[str, Any]:
    """Concurrent puts of distinct keys into one fresh store per cell, durable and non-durable.

    Repeats are interleaved (every peer once, then again) so a burst of
    outside noise does not land on one peer's every run.
    """
    groups = {
        "durable": available([FILEMEM_DURABLE, *DURABLE_PEERS], notes),
        "nondurable": available([FILEMEM_FLUSH, *NONDURABLE_PEERS], notes),
    }
    if cfg.put_prefill:
        # The same puts into a store that already has many shards: writers rarely share one.
        groups["durable_prefilled"] = available([FILEMEM_DURABLE, DURABLE_PEERS[0], DURABLE_PEERS[2]], notes)
    prefill_items = [(f"k{i}", make_value(i)) for i in range(cfg.put_prefill)]
    res: dict[str, Any] = {
        "prefill": cfg.put_prefill,
        "ops_total": cfg.put_ops,
        "budget_s": cfg.budget,
        "repeat": cfg.repeat,
        "procs": list(cfg.procs),
        "rows": {},
    }
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for rep in range(cfg.repeat):
        for group, specs in groups.items():
            for spec in specs:
                for n in cfg.procs:
                    path = dirs.new(f"put-{spec[1]}-{n}-{rep}")
                    try:
                        create_store(spec, path, prefill_items if group == "durable_prefilled" else None)
                        r = run_procs(spec, path, "put", n, cfg.put_ops, 0, cfg.budget)
                    finally:
                        dirs.drop(path)
                    runs.setdefault((group, spec[1], n), []).append(r)
                    log(f"  puts #{rep + 1} {group:10s} {spec[1]:20s} {n}p: {_fmt_rate(r)}")
    for (group, label, n), cell_runs in runs.items():
        res["rows"].setdefault(group, {}).setdefault(label, {})[str(n)] = median_cell(cell_runs)
    return res


PG_FILE: Spec = ("filemem", "filemem file", {"durability": "fsync"})
PG_SERVER: Spec = ("filemem", "filemem postgres", {"durability": "fsync"})
PG_RAW: Spec = ("psycopg", "psycopg same statements", {"mode": "call"})
PG_RAW_OLD: Spec = ("psycopg", "psycopg 7 statements (old put)", {"mode": "old"})
PG_RAW_ONE: Spec = ("psycopg", "psycopg one upsert", {"mode": "one"})
PG_LMDB: Spec = ("lmdb", "lmdb sync=True", {"sync": True})


def workload_pg(cfg: argparse.Namespace, dirs: TempDirs, notes: list[str]) -> dict[str, Any]:
    """Durable puts and gets from N processes: file store, PostgreSQL backend, raw psycopg, lmdb (issue 16).

    The server is ``--pg-url`` or a throwaway one started as tools/bench_pg.py
    does (tests/pgserver.py; ``fsync`` on, ``synchronous_commit=on``). Every
    server cell gets a fresh schema. ``psycopg same statements`` runs the
    backend's statement (the one-call put, ``filemem_put_v1``) on one plain
    connection per process: ``filemem postgres`` / it is what filemem adds
    (the issue's bound: within 2x). ``psycopg 7 statements (old put)`` runs
    what a put ran before the one-call put (no postings); ``psycopg one
    upsert`` is the floor (no lock, no version check, no feed). Repeats are
    interleaved; then the change-feed latency (put returned -> another store's
    callback, p50/p99).
    """
    import bench_pg

    server, base, why = bench_pg.start_server(cfg.pg_url)
    if base is None:
        notes.append(f"pg skipped: {why}")
        return {"skipped": why}
    try:
        put_specs = available([PG_FILE, PG_SERVER, PG_RAW, PG_RAW_OLD, PG_RAW_ONE, PG_LMDB], notes)
        get_specs = [s for s in put_specs if s not in (PG_RAW_OLD, PG_RAW_ONE)]
        res: dict[str, Any] = {
            "ops_total": cfg.put_ops,
            "get_ops_total": cfg.get_ops,
            "keys": cfg.get_keys,
            "budget_s": cfg.budget,
            "repeat": cfg.repeat,
            "server": "--pg-url" if cfg.pg_url else "throwaway (tests/pgserver.py)",
            "puts": {},
            "gets": {},
        }

        def target(spec: Spec, label: str) -> str:
            server_specs = (PG_SERVER, PG_RAW, PG_RAW_OLD, PG_RAW_ONE)
            return bench_pg._schema_url(base) if spec in server_specs else dirs.new(label)

        runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for rep in range(cfg.repeat):
            for spec in put_specs:
                for n in cfg.procs:
                    path = target(spec, f"pgput-{spec[1]}-{n}-{rep}")
                    try:
                        create_store(spec, path)
                        r = run_procs(spec, path, "put", n, cfg.put_ops, 0, cfg.budget)
                    finally:
                        if "://" not in path:
                            dirs.drop(path)
                    runs.setdefault(("puts", spec[1], n), []).append(r)
                    log(f"  pg puts #{rep + 1} {spec[1]:28s} {n}p: {_fmt_rate(r)}")
        items = [(f"k{i}", make_value(i)) for i in range(cfg.get_keys)]
        paths = {}
        for spec in get_specs:
            paths[spec[1]] = target(spec, f"pgget-{spec[1]}")
            create_store(spec, paths[spec[1]], items)
        # Settle the server before timing: without this, autovacuum of the freshly loaded tables
        # (filemem's also hold the search postings) lands on whichever cell runs a minute later.
        import psycopg

        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
        for rep in range(cfg.repeat):
            for spec in get_specs:
                for n in cfg.procs:
                    r = run_procs(spec, paths[spec[1]], "get", n, cfg.get_ops, cfg.get_keys, cfg.budget)
                    runs.setdefault(("gets", spec[1], n), []).append(r)
                    log(f"  pg gets #{rep + 1} {spec[1]:28s} {n}p: {_fmt_rate(r)}")
        for path in paths.values():
            if "://" not in path:
                dirs.drop(path)
        for (op, label, n), cell_runs in runs.items():
            res[op].setdefault(label, {})[str(n)] = median_cell(cell_runs)
        res["feed_latency"] = bench_pg._feed_latency(bench_pg._schema_url(base), cfg.feed_samples)
        log(f"  pg feed latency {res['feed_latency']}")
        return res
    finally:
        if server is not None:
            server.stop()


def render_pg(pg: dict[str, Any], procs: list[int]) -> list[str]:
    """The pg workload's tables: each row's rate, and beside it filemem postgres / that row."""
    if "skipped" in pg:
        return ["", f"P. PostgreSQL backend: skipped ({pg['skipped']})"]
    out: list[str] = []
    ref = "filemem postgres"
    for op, title, total in (("puts", "durable puts", pg["ops_total"]), ("gets", "random gets", pg["get_ops_total"])):
        rows = pg[op]
        if ref not in rows:
            continue
        trows = []
        for label, row in rows.items():
            cells = [label]
            for n in procs:
                r = row.get(str(n), {})
                if "error" in r:
                    cells += ["ERROR", ""]
                    continue
                cells.append(f"{r['rate']:,.0f}/s" + ("*" if r.get("time_capped") else ""))
                cells.append("" if label == ref else _fmt_ratio(ratio(rate_of(rows[ref], n), r["rate"])))
            trows.append(cells)
        headers = ["store"]
        for n in procs:
            headers += [f"{n} proc", f"pg/{n}p"]
        out += [
            "",
            f"P. {title.capitalize()}/s, PostgreSQL backend beside the file store, raw psycopg and lmdb: {total:,} ops "
            f"split over N processes (server: {pg['server']}); pg/Np = filemem postgres rate / that row's",
            table(headers, trows),
        ]
    feed = pg.get("feed_latency")
    if feed:
        out.append(
            f"P. Change-feed latency on the server (put returned -> another store's callback): "
            f"p50 {feed['p50_ms']:.2f} ms, p99 {feed['p99_ms']:.2f} ms"
        )
    return out


def workload_gets(cfg: argparse.Namespace, dirs: TempDirs, notes: list[str]) -> dict[str, Any]:
    """Random gets from N processes on a store pre-populated with ``cfg.get_keys`` records."""
    specs = available(
        [
            ("filemem", "filemem", {"durability": "fsync"}),
            ("filemem", "filemem strict", {"durability": "fsync", "consistency": "strict"}),
            ("diskcache", "diskcache", {}),
            ("sqlitedict", "sqlitedict", {}),
            ("lmdb", "lmdb", {"sync": True}),
            ("jsonfile", "json+lock", {"fsync": True}),
        ],
        notes,
    )
    items = [(f"k{i}", make_value(i)) for i in range(cfg.get_keys)]
    res: dict[str, Any] = {
        "keys": cfg.get_keys,
        "warmup": cfg.get_warmup,
        "ops_total": cfg.get_ops,
        "budget_s": cfg.budget,
        "repeat": cfg.repeat,
        "rows": {},
    }
    paths: dict[str, str] = {}
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for spec in specs:
            label = spec[1]
            path = paths[label] = dirs.new(f"get-{label}")
            peer = build_peer(spec, path)
            peer.open()
            t = time.perf_counter()
            peer.populate(items)
            res["rows"][label] = {"populate_s": round(time.perf_counter() - t, 3)}
            peer.close()
        for rep in range(cfg.repeat):
            for spec in specs:
                label = spec[1]
                for n in cfg.procs:
                    r = run_procs(spec, paths[label], "get", n, cfg.get_ops, cfg.get_keys, cfg.budget, cfg.get_warmup)
                    runs.setdefault((label, n), []).append(r)
                    log(f"  gets #{rep + 1} {label:20s} {n}p: {_fmt_rate(r)}")
    finally:
        for path in paths.values():
            dirs.drop(path)
    for (label, n), cell_runs in runs.items():
        res["rows"][label][str(n)] = median_cell(cell_runs)
    return res


def workload_latency(cfg: argparse.Namespace, dirs: TempDirs, notes: list[str]) -> dict[str, Any]:
    """p50/p99 of single fsync puts as the store grows (filemem only)."""
    import filemem

    path = dirs.new("latency")
    rows: list[dict[str, Any]] = []
    try:
        pop = filemem.Store(path, durability="flush")
        n = 0
        for size in cfg.sizes:
            t = time.perf_counter()
            while n < size:
                m = min(cfg.chunk, size - n)
                with pop.batch() as b:
                    for i in range(n, n + m):
                        b.put(NS, f"k{i}", make_value(i))
                n += m
            populate_s = time.perf_counter() - t
            shards_before = count_shards(path)
            # A fresh Store in default (fsync) durability, as a new process would open it:
            # pass 1 puts new keys with a cold shard cache (what a short-lived agent sees);
            # pass 2 overwrites the same keys in the same Store (shards now cached: the pure write path).
            store = filemem.Store(path)
            lat: list[float] = []
            warm: list[float] = []
            try:
                for j in range(cfg.lat_puts):
                    key = f"lat{size}-{j}"
                    value = make_value(j)
                    t0 = time.perf_counter()
                    store.put(NS, key, value)
                    lat.append(time.perf_counter() - t0)
                stats = dict(store.stats())
                for j in range(cfg.lat_puts):
                    key = f"lat{size}-{j}"
                    value = make_value(j + 1)
                    t0 = time.perf_counter()
                    store.put(NS, key, value)
                    warm.append(time.perf_counter() - t0)
                warm_parses = store.stats()["shard_parses"] - stats["shard_parses"]
                # Random gets over the whole key space, same long-lived Store: shows whether the
                # shard cache still holds the working set at this size.
                rng = random.Random(size)
                get_keys = [f"k{rng.randrange(size)}" for _ in range(cfg.lat_gets)]
                parses0 = store.stats()["shard_parses"]
                t0 = time.perf_counter()
                got = 0
                for key in get_keys:
                    if store.get(NS, key) is not None:
                        got += 1
                    if time.perf_counter() - t0 > cfg.budget:
                        break
                get_s = time.perf_counter() - t0
                gets_done = max(got, 1)
                get_parses = store.stats()["shard_parses"] - parses0
            finally:
                store.close()
            n += cfg.lat_puts
            lat.sort()
            warm.sort()
            row = {
                "records": size,
                "shards": shards_before,
                "puts": len(lat),
                "p50_ms": round(pct(lat, 50) * 1e3, 3),
                "p90_ms": round(pct(lat, 90) * 1e3, 3),
                "p99_ms": round(pct(lat, 99) * 1e3, 3),
                "max_ms": round(lat[-1] * 1e3, 3),
                "mean_ms": round(statistics.fmean(lat) * 1e3, 3),
                "shard_parses": stats["shard_parses"],
                "splits": stats["splits"],
                "warm_p50_ms": round(pct(warm, 50) * 1e3, 3),
                "warm_p99_ms": round(pct(warm, 99) * 1e3, 3),
                "warm_max_ms": round(warm[-1] * 1e3, 3),
                "warm_shard_parses": warm_parses,
                "gets_per_s": round(gets_done / get_s, 1),
                "gets": gets_done,
                "get_parses": get_parses,
                "populate_s": round(populate_s, 2),
                "store_mb": round(dir_bytes(path) / 1e6, 1),
            }
            rows.append(row)
            log(
                f"  latency {size:>9,} records, {shards_before:>5} shards: p50 {row['p50_ms']:.3f} ms, "
                f"p99 {row['p99_ms']:.3f} ms; warm p50 {row['warm_p50_ms']:.3f} ms, p99 {row['warm_p99_ms']:.3f} ms "
                f"(populate {populate_s:.1f}s)"
            )
        pop.close()
    finally:
        dirs.drop(path)
    return {"puts_per_size": cfg.lat_puts, "chunk": cfg.chunk, "rows": rows}


def _time_rounds(
    rounds: int, setup: Callable[[int], Any], body: Callable[[Any, int], None], teardown: Callable[[Any], None]
) -> list[float]:
    times = []
    for r in range(rounds):
        ctx = setup(r)
        try:
            t = time.perf_counter()
            body(ctx, r)
            times.append(time.perf_counter() - t)
        finally:
            teardown(ctx)
    return times


def workload_batch(cfg: argparse.Namespace, dirs: TempDirs, notes: list[str]) -> dict[str, Any]:
    """1,000 records in one filemem batch() vs per-record puts elsewhere; into an empty and a 10k store."""
    n = cfg.batch_n
    res: dict[str, Any] = {"records": n, "rounds": cfg.rounds, "scenarios": {}}
    have = {k: peer_missing(k) is None for k in PEER_CLASSES}
    for w in (peer_missing(k) for k in PEER_CLASSES):
        if w and w not in notes:
            notes.append(w)

    def items(r: int) -> list[tuple[str, Any]]:
        return [(f"b{r}-{i}", make_value(i)) for i in range(n)]

    prefill_items = [(f"k{i}", make_value(i)) for i in range(cfg.batch_prefill)]

    for prefill in (0, cfg.batch_prefill):
        methods: list[tuple[str, Spec, Callable[[Peer, int], None], bool]] = []

        def fm_batch(p: Peer, r: int) -> None:
            with p.store.batch() as b:  # type: ignore[attr-defined]
                for k, v in items(r):
                    b.put(NS, k, v)

        def per_record(p: Peer, r: int) -> None:
            for k, v in items(r):
                p.put(k, v)

        def dc_transact(p: Peer, r: int) -> None:
            with p.cache.transact():  # type: ignore[attr-defined]
                for k, v in items(r):
                    p.cache.set(k, v)  # type: ignore[attr-defined]

        def one_txn(p: Peer, r: int) -> None:
            p.populate(items(r))

        if have["filemem"]:
            methods.append(("filemem batch() fsync", FILEMEM_DURABLE, fm_batch, True))
        if have["diskcache"]:
            methods.append(("diskcache per-record set()", ("diskcache", "diskcache", {}), per_record, True))
            methods.append(("diskcache transact() [ref]", ("diskcache", "diskcache", {}), dc_transact, False))
        if have["lmdb"]:
            methods.append(("lmdb one txn sync=True [ref]", ("lmdb", "lmdb", {"sync": True}), one_txn, False))
        if have["sqlitedict"]:
            methods.append(
                ("sqlitedict autocommit per-record [ref]", ("sqlitedict", "sqlitedict", {}), per_record, False)
            )
        if have["filemem"]:
            methods.append(("filemem per-record put() fsync [ref]", FILEMEM_DURABLE, per_record, False))

        rows: dict[str, Any] = {}
        for label, spec, body, _required in methods:

            def setup(r: int, spec: Spec = spec, label: str = label, prefill: int = prefill) -> Peer:
                p = build_peer(spec, dirs.new(f"batch-{label}-{prefill}-{r}"))
                p.open()
                if prefill:
                    p.populate(prefill_items)
                return p

            def teardown(p: Peer) -> None:
                p.close()
                dirs.drop(p.path)

            times = _time_rounds(cfg.rounds, setup, body, teardown)
            med = statistics.median(times)
            rows[label] = {
                "median_ms": round(med * 1e3, 2),
                "min_ms": round(min(times) * 1e3, 2),
                "max_ms": round(max(times) * 1e3, 2),
                "records_per_s": round(n / med, 1),
            }
            log(f"  batch prefill={prefill:>6} {label:40s} median {med * 1e3:9.2f} ms")
        res["scenarios"][str(prefill)] = rows
    return res


# ---------------------------------------------------------------------- report


def _fmt_rate(r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR " + r["error"][:60]
    s = f"{r['rate']:,.0f}/s"
    if r.get("cpu_us_per_op") is not None:
        s += f" ({r['cpu_us_per_op']:.2f} us CPU/op)"
    if r.get("misses"):
        s += f" ({r['misses']} misses!)"
    return s + ("*" if r.get("time_capped") else "")


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return a / b


def _fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    sep = "  ".join("-" * w for w in widths)
    body = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    return "\n".join([line, sep, *body])


def rate_of(row: dict[str, Any], n: int) -> float | None:
    r = row.get(str(n), {})
    return r.get("rate") if "error" not in r else None


def rate_table(rows: dict[str, Any], ref: str, procs: list[int]) -> str:
    """Rows of stores, columns of process counts; each cell 'rate (filemem/peer)'."""
    headers = ["store", *(f"{n} proc" for n in procs)]
    out = []
    for label, row in rows.items():
        cells = [label]
        for n in procs:
            r = row.get(str(n), {})
            if "error" in r:
                cells.append("ERROR")
                continue
            cell = f"{r['rate']:,.0f}/s" + ("*" if r.get("time_capped") else "")
            if not label.startswith("filemem"):
                cell += f" ({_fmt_ratio(ratio(rate_of(rows[ref], n), r['rate']))})"
            cells.append(cell)
        out.append(cells)
    return table(headers, out)


def _ok(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A workload's results, or None if it was not run or failed."""
    got = results.get(name)
    return got if got and "error" not in got else None


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    gets = _ok(results, "gets")
    for label, what in (("filemem", "default consistency='cached'"), ("filemem strict", "consistency='strict'")):
        if not gets or "diskcache" not in gets["rows"] or label not in gets["rows"]:
            continue
        fm, dc = gets["rows"][label], gets["rows"]["diskcache"]
        per = {n: ratio(rate_of(fm, n), rate_of(dc, n)) for n in results["config"]["procs"]}
        met = all(x is not None and x > 1 for x in per.values())
        detail = ", ".join(f"{n}p {_fmt_ratio(x)}" for n, x in per.items())
        targets.append(
            {
                "target": f"filemem gets ({what}) ahead of diskcache gets, every process count",
                "met": met,
                "detail": detail,
            }
        )
    puts = _ok(results, "puts")
    if puts:
        rows = puts["rows"].get("durable", {})
        if "filemem fsync" in rows and "lmdb sync=True" in rows and 4 in results["config"]["procs"]:
            x = ratio(rate_of(rows["filemem fsync"], 4), rate_of(rows["lmdb sync=True"], 4))
            targets.append(
                {
                    "target": "durable puts from 4 processes ahead of lmdb sync=True (the issue expects 2x or more)",
                    "met": x is not None and x > 1,
                    "detail": f"filemem/lmdb = {_fmt_ratio(x)} "
                    f"({rate_of(rows['filemem fsync'], 4)} vs {rate_of(rows['lmdb sync=True'], 4)} puts/s)",
                }
            )
    batch = _ok(results, "batch")
    if batch:
        for prefill, rows in batch["scenarios"].items():
            fm = rows.get("filemem batch() fsync")
            dc = rows.get("diskcache per-record set()")
            if fm and dc:
                x = ratio(dc["median_ms"], fm["median_ms"])
                targets.append(
                    {
                        "target": f"batch() of {batch['records']:,} records ahead of diskcache per-record puts"
                        + (" (empty store)" if prefill == "0" else f" (store holding {int(prefill):,} records)"),
                        "met": x is not None and x > 1,
                        "detail": f"{fm['median_ms']} ms vs {dc['median_ms']} ms = {_fmt_ratio(x)}",
                    }
                )
    if gets and "filemem" in gets["rows"] and "lmdb" in gets["rows"] and 4 in results["config"]["procs"]:
        x = ratio(rate_of(gets["rows"]["filemem"], 4), rate_of(gets["rows"]["lmdb"], 4))
        targets.append(
            {
                "target": "cached gets from 4 processes ahead of lmdb (one read txn per get)",
                "met": x is not None and x > 1,
                "detail": f"filemem/lmdb = {_fmt_ratio(x)}",
            }
        )
    if batch:
        rows = batch["scenarios"].get(str(batch.get("prefill", results["config"].get("batch_prefill"))), {})
        fm, lm = rows.get("filemem batch() fsync"), rows.get("lmdb one txn sync=True [ref]")
        if fm and lm:
            x = fm["median_ms"] / lm["median_ms"]
            targets.append(
                {
                    "target": "batch() of 1,000 records into a store holding "
                    f"{results['config']['batch_prefill']:,} within 2x of one lmdb sync=True transaction",
                    "met": x <= 2,
                    "detail": f"{fm['median_ms']} ms vs {lm['median_ms']} ms = filemem takes {x:.2f}x lmdb's time",
                }
            )
    targets += bench_v2.targets(results)
    lat = _ok(results, "latency")
    if lat and len(lat["rows"]) >= 2:
        first, last = lat["rows"][0], lat["rows"][-1]
        for pre, what in (("", "fresh Store, new keys"), ("warm_", "warm Store, overwrites")):
            g50 = last[f"{pre}p50_ms"] / first[f"{pre}p50_ms"]
            g99 = last[f"{pre}p99_ms"] / first[f"{pre}p99_ms"]
            targets.append(
                {
                    "target": f"put latency ({what}) flat within 2x from {first['records']:,} "
                    f"to {last['records']:,} records (p50 and p99)",
                    "met": g50 <= 2 and g99 <= 2,
                    "detail": f"p50 {first[f'{pre}p50_ms']} -> {last[f'{pre}p50_ms']} ms ({g50:.2f}x), "
                    f"p99 {first[f'{pre}p99_ms']} -> {last[f'{pre}p99_ms']} ms ({g99:.2f}x)",
                }
            )
    return targets


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    cfg = results["config"]
    fs = m.get("filesystem", {})
    parts = [
        "filemem benchmark",
        "=================",
        f"date:     {m['date_utc']}",
        f"command:  {results['command']}",
        f"machine:  {m.get('cpu_count')} CPUs ({m.get('cpu_model', '?')}), {m.get('mem_total', '?')} RAM, {m['platform']}",
        f"python:   {m['implementation']} {m['python']}",
        f"fs:       {fs.get('type', '?')} on {fs.get('device', '?')} mounted at {fs.get('mount', '?')} ({fs.get('options', '')})",
        "filemem:  "
        + (
            f"git {m['filemem_git']['commit']}"
            + (
                f" + uncommitted changes in {', '.join(m['filemem_git']['modified'])}"
                if m["filemem_git"]["modified"]
                else ""
            )
            if m.get("filemem_git")
            else "?"
        ),
        "code:     "
        + (
            (
                f"snapshot {results['code_snapshot']['sha256']} of filemem/ "
                + (
                    f"as committed at {results['code_snapshot']['ref']} ({results['code_snapshot']['commit']})"
                    if results["code_snapshot"].get("ref")
                    else "from the working tree at start"
                )
            )
            if results.get("code_snapshot")
            else "live checkout (--no-snapshot)"
        ),
        "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        "fs probe: "
        + ", ".join(f"{k} {v:.0f}us" for k, v in m.get("fs_probe_us", {}).items())
        + " (p50 of the primitives of one atomic file replace)",
        f"total:    {results['elapsed_s']:.0f} s (load average at start {m.get('loadavg_start')}, "
        f"at end {m.get('loadavg_end')})",
    ]
    for note in results["notes"]:
        parts.append(f"note:     {note}")
    parts.append(
        "Ratios in parentheses: the table's first filemem row / peer (>1.00x: filemem ahead). "
        "*: stopped by the time budget."
    )
    if cfg.get("repeat", 1) > 1:
        parts.append(f"Puts/gets cells: median of {cfg['repeat']} interleaved runs (all runs in the JSON output).")
    procs = cfg["procs"]
    puts = _ok(results, "puts")
    if puts:
        for group, ref, title in (
            ("durable", "filemem fsync", "durable, into an empty store"),
            ("nondurable", "filemem flush", "non-durable, into an empty store"),
            ("durable_prefilled", "filemem fsync", f"durable, into a store holding {puts.get('prefill', 0):,} records"),
        ):
            rows = puts["rows"].get(group)
            if rows and ref in rows:
                parts += [
                    "",
                    f"1. Puts/s, {title}: {puts['ops_total']:,} distinct keys split over N processes, "
                    f"one fresh store per cell (budget {puts['budget_s']} s)",
                    rate_table(rows, ref, procs),
                ]
    gets = _ok(results, "gets")
    if gets and "filemem" in gets["rows"]:
        warm = (
            f"up to {WARMUP_GETS:,} gets/{WARMUP_S} s"
            if gets.get("warmup", "sample") == "sample"
            else f"every key once (up to {WARMUP_KEYS_S} s)"
        )
        parts += [
            "",
            f"2. Gets/s: random reads of {gets['keys']:,} pre-populated keys, {gets['ops_total']:,} gets split over "
            f"N processes after a warm-up of {warm} each (budget {gets['budget_s']} s)",
            rate_table(gets["rows"], "filemem", procs),
            "CPU per get (us, summed over the processes): "
            + "; ".join(
                f"{label} " + "/".join(f"{row.get(str(n), {}).get('cpu_us_per_op', '-')}" for n in procs)
                for label, row in gets["rows"].items()
            ),
        ]
    lat = _ok(results, "latency")
    if lat and lat["rows"]:
        base = lat["rows"][0]
        rows = [
            [
                f"{r['records']:,}",
                str(r["shards"]),
                f"{r['p50_ms']:.3f}",
                f"{r['p90_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                f"{r['max_ms']:.3f}",
                f"{r['p50_ms'] / base['p50_ms']:.2f}x",
                f"{r['p99_ms'] / base['p99_ms']:.2f}x",
                str(r["shard_parses"]),
                str(r["splits"]),
                f"{r['warm_p50_ms']:.3f}",
                f"{r['warm_p99_ms']:.3f}",
                f"{r['warm_p50_ms'] / base['warm_p50_ms']:.2f}x",
                f"{r['warm_p99_ms'] / base['warm_p99_ms']:.2f}x",
                f"{r['gets_per_s']:,.0f}",
                f"{r['get_parses'] / r['gets']:.2f}",
                f"{r['store_mb']}",
                f"{r['populate_s']}",
            ]
            for r in lat["rows"]
        ]
        parts += [
            "",
            f"3. filemem put latency as the store grows (durability=fsync; {lat['puts_per_size']} puts of new keys "
            "in a fresh Store, then 'warm': the same keys overwritten in that Store; then random gets "
            "of the whole key space in that Store)",
            table(
                [
                    "records",
                    "shards",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "p50/first",
                    "p99/first",
                    "parses",
                    "splits",
                    "warm p50",
                    "warm p99",
                    "p50/first",
                    "p99/first",
                    "gets/s",
                    "parses/get",
                    "MB",
                    "populate s",
                ],
                rows,
            ),
        ]
    batch = _ok(results, "batch")
    if batch:
        for prefill, rows in batch["scenarios"].items():
            fm = rows.get("filemem batch() fsync")
            trows = []
            for label, r in rows.items():
                x = ratio(r["median_ms"], fm["median_ms"]) if fm and label != "filemem batch() fsync" else None
                trows.append(
                    [
                        label,
                        f"{r['median_ms']:.2f}",
                        f"{r['min_ms']:.2f}",
                        f"{r['max_ms']:.2f}",
                        f"{r['records_per_s']:,.0f}",
                        "" if x is None else _fmt_ratio(x),
                    ]
                )
            where = "an empty store" if prefill == "0" else f"a store holding {int(prefill):,} records"
            parts += [
                "",
                f"4. {batch['records']:,} records into {where} (median of {batch['rounds']} rounds, fresh store each)",
                table(["method", "median ms", "min ms", "max ms", "records/s", "filemem batch() ahead by"], trows),
            ]
    pg = results.get("pg")
    if pg and "error" not in pg:
        parts += render_pg(pg, procs)
    parts += bench_v2.render(results, table)
    parts += ["", "Targets"]
    for t in results["targets"]:
        parts.append(f"  [{'MET   ' if t['met'] else 'MISSED'}] {t['target']}: {t['detail']}")
    return "\n".join(parts)


# ---------------------------------------------------------------------- main


def workload_collector(cfg: argparse.Namespace, dirs: TempDirs, notes: list[str]) -> dict[str, Any]:
    """Collector sustained durable throughput from 1 and 4 processes vs lmdb sync=False (tools/bench_v2.py)."""
    have_lmdb = bool(available([("lmdb", "lmdb", {})], notes))
    return bench_v2.workload_collector(cfg, dirs, notes, have_lmdb, EXPECTED_MODULE[0])


WORKLOADS: dict[str, Callable[[argparse.Namespace, TempDirs, list[str]], dict[str, Any]]] = {
    "puts": workload_puts,
    "gets": workload_gets,
    "latency": workload_latency,
    "batch": workload_batch,
    "collector": workload_collector,
    "visibility": bench_v2.workload_visibility,
    "fold": bench_v2.workload_fold,
    "pg": workload_pg,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller op counts; latency sizes stop at 100k")
    ap.add_argument("--sizes", help="comma-separated store sizes for the latency workload (default 1k,10k,100k,1M)")
    ap.add_argument(
        "--procs",
        default=",".join(map(str, PROC_COUNTS)),
        help="process counts of the puts and gets workloads (default 1,4)",
    )
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    ap.add_argument("--only", help="run just these workloads (same as --workloads; e.g. --only pg)")
    ap.add_argument("--pg-url", help="PostgreSQL server for the pg workload (default: start a throwaway one)")
    ap.add_argument("--feed-samples", type=int, default=300, help="puts timed for the pg change-feed latency")
    ap.add_argument("--put-ops", type=int, help="puts per cell, split over the processes")
    ap.add_argument(
        "--put-prefill",
        type=int,
        default=10_000,
        help="records in the store for the extra 'prefilled' puts rows (0: skip)",
    )
    ap.add_argument("--get-ops", type=int, help="gets per cell, split over the processes")
    ap.add_argument("--get-keys", type=int, default=10_000, help="records pre-populated for the gets workload")
    ap.add_argument(
        "--get-warmup",
        choices=("keys", "sample"),
        default="keys",
        help="gets warm-up per process: every key once (default) or the old 3,000 random gets (sample)",
    )
    ap.add_argument("--budget", type=float, help="seconds after which a worker stops early (cell marked *)")
    ap.add_argument("--lat-puts", type=int, help="measured single puts per store size")
    ap.add_argument("--lat-gets", type=int, default=20_000, help="random gets per store size (latency workload)")
    ap.add_argument("--chunk", type=int, default=100_000, help="records per batch() when populating the latency store")
    ap.add_argument("--batch-n", type=int, default=1000, help="records per batch in the batch workload")
    ap.add_argument(
        "--batch-prefill", type=int, default=10_000, help="records already in the store, second batch scenario"
    )
    ap.add_argument(
        "--max-size", type=float, help="largest store size of the latency workload (default 1M, 100k with --quick)"
    )
    ap.add_argument("--collector-records", type=int, help="records per process (collector workload)")
    ap.add_argument(
        "--collector-shard-kib",
        type=int,
        default=0,
        help="the collector workload's Store(shard_max_bytes=...) in KiB (default: the store's, 32)",
    )
    ap.add_argument("--vis-samples", type=int, help="puts timed from returned to seen (visibility workload)")
    ap.add_argument("--fold-seconds", type=float, help="seconds of sustained 4-writer load (fold workload)")
    ap.add_argument("--fold-prefill", type=int, default=10_000, help="records in the store before the fold load")
    ap.add_argument("--repeat", type=int, help="runs per puts/gets cell, median reported (default 1 quick, 3 full)")
    ap.add_argument("--rounds", type=int, help="rounds of the batch workload (median reported)")
    ap.add_argument(
        "--tmpdir",
        default=os.environ.get("FILEMEM_BENCH_TMP", tempfile.gettempdir()),
        help="base directory for temp stores (default: the system temp dir; must be a real disk, not tmpfs)",
    )
    ap.add_argument(
        "--no-snapshot",
        dest="snapshot",
        action="store_false",
        help="import filemem from the live checkout instead of a copy taken at start",
    )
    ap.add_argument(
        "--code-ref", help="benchmark filemem as committed at this git ref (e.g. HEAD), not the working tree"
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    ap.add_argument("--out", help="also write the JSON results to this file")
    a = ap.parse_args(argv)
    q = a.quick
    a.procs = [int(x) for x in a.procs.split(",") if x]
    a.workloads = [w for w in (a.only or a.workloads).split(",") if w]
    for w in a.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    if a.sizes:
        a.sizes = sorted(int(float(x)) for x in a.sizes.split(",") if x)
    else:
        top = int(a.max_size) if a.max_size else (100_000 if q else 1_000_000)
        a.sizes = [x for x in (1_000, 10_000, 100_000, 1_000_000, 10_000_000) if x <= top] or [top]
    a.put_ops = a.put_ops or (800 if q else 2_000)
    a.get_ops = a.get_ops or (40_000 if q else 100_000)
    a.budget = a.budget or (1.5 if q else 2.0)
    a.lat_puts = a.lat_puts or (300 if q else 1_000)
    a.rounds = a.rounds or (3 if q else 5)
    a.repeat = a.repeat or (1 if q else 3)
    a.collector_records = a.collector_records or (5_000 if q else 20_000)
    a.vis_samples = a.vis_samples or (200 if q else 500)
    a.fold_seconds = a.fold_seconds or (5.0 if q else 15.0)
    return a


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: children are killed and temp dirs removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dirs = TempDirs(cfg.tmpdir)
    notes: list[str] = []
    started = time.perf_counter()
    try:
        code = snapshot_code(dirs.root, cfg.code_ref) if cfg.snapshot else None
        results: dict[str, Any] = {
            "command": " ".join(
                [
                    "python",
                    os.path.relpath(sys.argv[0], ROOT) if argv is None else "tools/bench.py",
                    *(sys.argv[1:] if argv is None else argv),
                ]
            ),
            "machine": machine_info(cfg.tmpdir),
            "code_snapshot": code,
            "config": {k: v for k, v in vars(cfg).items() if k not in ("json", "out")},
            "notes": notes,
        }
        load = results["machine"].get("loadavg_start")
        if load and load[0] > 0.5:
            notes.append(f"load average {load[0]} at start: other work on this machine may add noise")
        if results["machine"].get("filesystem", {}).get("type") in ("tmpfs", "ramfs"):
            notes.append(f"{cfg.tmpdir} is on tmpfs: fsync costs nothing there, durable figures are meaningless")
        for name in cfg.workloads:
            log(f"[{time.perf_counter() - started:6.1f}s] workload {name}")
            try:
                results[name] = WORKLOADS[name](cfg, dirs, notes)
            except Exception as exc:  # one broken workload must not lose the others' figures
                log(traceback.format_exc())
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                notes.append(f"workload {name} failed: {type(exc).__name__}: {exc}")
    finally:
        dirs.cleanup()
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["machine"]["loadavg_end"] = loadavg()
    results["targets"] = evaluate_targets(results)
    if cfg.out:
        with open(cfg.out, "w") as fh:
            json.dump(results, fh, indent=2)
            fh.write("\n")
    if cfg.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
