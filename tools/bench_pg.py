"""Durable puts and gets on the PostgreSQL backend beside the file store, raw psycopg and lmdb (issue 16).

Usage::

    python tools/bench_pg.py                       # starts a throwaway server (needs initdb), ~2 minutes
    python tools/bench_pg.py --url postgresql://... --ops 2000 --json

Rows (every figure through the real code path; each cell the median of ``--repeat`` runs):

* ``filemem file``: ``Store(dir)`` with ``durability="fsync"`` (the default).
* ``filemem postgres``: ``Store(url)`` with ``durability="fsync"`` (``synchronous_commit=on``).
* ``psycopg same statements``: one plain psycopg connection per process running,
  per put, the statement the backend runs: one autocommit call of the
  store's ``filemem_put_v1`` (filemem/_backends/postgres/_put_fn.py: the
  key's advisory lock, the version check, nextval, the upsert, the
  postings, the outbox row and its NOTIFY, in one round trip) with the
  arguments the backend sends, each derived per put (the value encoded as
  compact JSON, the lock id hashed, the postings by filemem's own
  tokenizer, the changes and payload). What filemem adds on top of the
  server is the rest. Gets: the backend's SELECT on the same table.
* ``psycopg 7 statements``: the statements a put ran before the one-call
  put (BEGIN, the advisory lock, the read, nextval, the upsert, the outbox
  row with its NOTIFY, COMMIT; no postings), on tables of their own.
* ``psycopg one upsert``: a single autocommit ``INSERT ... ON CONFLICT`` per put
  (no lock, no version check, no feed): the floor a naive client pays.
* ``lmdb sync``: ``lmdb.open(sync=True)``, one write txn per put (local, for scale).

Search (``--search N``, ``--only-search`` skips the rest): the same N records
(random words, a number, a tag, in 20 namespaces) in a file store and a
server store; each query kind is timed warm (after one untimed run) as the
median of ``--repeat`` rounds of 20 searches, top 10, under the prefix of
half the namespaces: ``bm25`` (2 terms), ``bm25+filter``, ``vector`` (a
deterministic 16-dim toy embedding, or with ``--embed-dims N`` a sum of
seeded N-dim Gaussian word vectors), ``hybrid``, ``hybrid far`` (the
vector's words none of the query's), ``filter`` only (with
``rows read``: the vector rows the server store read per vector or hybrid
search, from its ``vector_rows_read`` counter). Which
vector path the server took is in the output (``vectors``: ``pgvector
0.6.2`` or ``real[] (why)``); ``--url`` of a server with pgvector (e.g.
``FILEMEM_PG_BINDIR=$(python -m tests.pgserver --pgvector-bindir) python -m
tests.pgserver``) measures that path.
Also the time to write the N records (batches of 500), which on the server
includes the postings. Ratios server/file in the last column.

``--aio`` adds the AsyncStore rows (issue 16): random gets of pre-written keys
from 1 and 16 concurrent coroutines on one ``AsyncStore(url)``, once through
the worker-thread path (the sync backend's get run by the store's Runner, as
for a file store) and once through the async pool on the loop (what
``filemem._async._pool.PoolReads``, the path ``AsyncStore.get`` takes when
``USE_ASYNC_POOL`` is set), alternating, same store, same keys; the ratio
pool/threads (>1: the pool is faster).

Puts: 1 and 4 processes (spawn) write distinct keys, timed from a barrier to
the last finisher. Gets: random gets of pre-written keys, 1 and 4 processes.
Also: change-feed latency, put returned -> subscriber callback in another
process's store object (p50/p99). Temp dirs under the system temp dir.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from typing import Any
from urllib.parse import quote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    # Appended, not put first: tools/bench.py imports this module after taking its code
    # snapshot, and the snapshot must stay the filemem its children import.
    sys.path.append(ROOT)

VALUE = {"task": "login", "ok": True, "notes": "x" * 60}


def _schema_url(base: str) -> str:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


# ---------------------------------------------------------------- raw psycopg, the backend's statements

_RAW_SETUP = """
CREATE TABLE IF NOT EXISTS raw_records (ns text COLLATE "C", key text COLLATE "C", value bytea, doc jsonb,
  version bigint, created_at float8, updated_at float8, expires_at float8, PRIMARY KEY (ns, key));
CREATE SEQUENCE IF NOT EXISTS raw_version;
CREATE TABLE IF NOT EXISTS raw_outbox (id bigserial PRIMARY KEY, at float8, changes jsonb);
"""


def start_server(url: str | None) -> tuple[Any, str | None, str | None]:
    """(server to stop or None, base URL or None, why not): ``url`` as given, else a throwaway server.

    The one way both tools/bench_pg.py and tools/bench.py's ``pg`` workload get
    a server: tests/pgserver.py (initdb into the system temp dir, a free port).
    """
    if url is not None:
        return None, url, None
    from tests import pgserver

    bindir = pgserver.find_bindir()
    if bindir is None:
        return None, None, "no PostgreSQL server binaries (initdb, pg_ctl) on this machine; pass --pg-url/--url"
    server = pgserver.start(bindir)
    return server, server.url, None


def raw_store(url: str) -> tuple[str, str]:
    """Create the filemem store at ``url`` (tables, function) and return its (lock salt, NOTIFY channel).

    Both derived as filemem/_backends/postgres/_backend.py derives them, so the
    raw calls lock the same ids and notify the same channel as the backend.
    """
    import psycopg

    import filemem

    filemem.Store(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        return store_ids(conn)


def store_ids(conn: Any) -> tuple[str, str]:
    """(lock salt, NOTIFY channel) of the store on ``conn``'s schema, derived as the backend derives them."""
    import hashlib

    row = conn.execute("SELECT current_schema(), current_database()").fetchone()
    salt = f"{row[1]}.{row[0]}"
    return salt, "filemem_" + hashlib.blake2b(salt.encode(), digest_size=12).hexdigest()


class RawCall:
    """The backend's put as plain psycopg: one call of ``filemem_put_v1`` with the arguments the backend sends."""

    def __init__(self, conn: Any, salt: str, channel: str) -> None:
        from filemem._backends.postgres._index import index_terms
        from filemem._backends.postgres._put_fn import PUT_CALL
        from filemem._backends.postgres._writes import FEED_LOCK

        self.conn, self.salt, self.channel, self.sql, self.feed_lock = conn, salt, channel, PUT_CALL, FEED_LOCK
        self.terms_of = index_terms  # the postings must be the value's: filemem's tokenizer, per put

    def put(self, ns: str, key: str, value: Any) -> None:
        import hashlib

        data = json.dumps(value, separators=(",", ":")).encode()
        digest = hashlib.blake2b(f"{self.salt}\x00{ns}\x00{key}".encode(), digest_size=8).digest()
        counts = self.terms_of(value)
        n = len(counts)
        changes = json.dumps([[ns, [key]]], ensure_ascii=False, separators=(",", ":"))
        self.conn.execute(
            self.sql,
            (
                [int.from_bytes(digest, "big", signed=True)],
                [ns],
                [key],
                [data],
                [data.decode()],
                [None],
                [None],
                [ns],
                [key],
                list(counts),
                [ns] * n,
                [key] * n,
                list(counts.values()),
                [ns],
                [key],
                [sum(counts.values())],
                self.feed_lock,
                changes,
                self.channel,
                changes,
            ),
        )


def raw_get(conn: Any, ns: str, key: str, table: str = "filemem_records") -> list[Any]:
    """The backend's get, as one plain psycopg statement."""
    return conn.execute(  # type: ignore[no-any-return]
        f"SELECT value, version, created_at, updated_at, expires_at FROM {table}"
        " WHERE ns = %s AND key = %s AND (expires_at IS NULL OR expires_at >"
        " extract(epoch from statement_timestamp())::float8)",
        (ns, key),
    ).fetchall()


def _raw_put(conn: Any, ns: str, key: str, data: bytes, notify: bool = True) -> None:
    """The 7 statements a put ran before the one-call put; ``notify=False``: the outbox row only (a feed that polls)."""
    import hashlib

    lid = int.from_bytes(hashlib.blake2b(f"{ns}\x00{key}".encode(), digest_size=8).digest(), "big", signed=True)
    now = "extract(epoch from statement_timestamp())::float8"
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lid,))
        conn.execute("SELECT value, version FROM raw_records WHERE ns = %s AND key = %s", (ns, key)).fetchall()
        version = conn.execute(f"SELECT {now}, nextval('raw_version')").fetchone()[1]
        conn.execute(
            f"INSERT INTO raw_records VALUES (%s, %s, %s, %s::jsonb, %s, {now}, {now}, NULL)"
            " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, doc = excluded.doc,"
            " version = excluded.version, updated_at = excluded.updated_at",
            (ns, key, data, data.decode(), version),
        )
        changes = json.dumps([[ns, [key]]])
        if not notify:
            conn.execute(
                f"WITH l AS (SELECT pg_advisory_xact_lock(1)) INSERT INTO raw_outbox (at, changes)"
                f" SELECT {now}, %s::jsonb FROM l",
                (changes,),
            )
            return
        conn.execute(
            f"WITH l AS (SELECT pg_advisory_xact_lock(1)), o AS (INSERT INTO raw_outbox (at, changes)"
            f" SELECT {now}, %s::jsonb FROM l RETURNING id) SELECT pg_notify('raw', id::text || ' ' || %s) FROM o",
            (changes, changes),
        )


# ---------------------------------------------------------------- workers (spawn)


def _worker(kind: str, target: str, op: str, keys: list[str], barrier: Any, out: Any) -> None:
    data = json.dumps(VALUE, separators=(",", ":")).encode()
    if kind in ("file", "postgres"):
        import filemem

        store = filemem.Store(target)
        barrier.wait(120)
        t0 = time.perf_counter()
        if op == "put":
            for k in keys:
                store.put("bench", k, VALUE)
        else:
            for k in keys:
                store.get("bench", k)
        out.put(time.perf_counter() - t0)
        store.close()
    elif kind in ("raw", "raw7", "raw1"):
        import psycopg

        conn = psycopg.connect(target, autocommit=True)
        call = RawCall(conn, *store_ids(conn)) if kind == "raw" else None
        barrier.wait(120)
        t0 = time.perf_counter()
        if op == "put" and call is not None:
            for k in keys:
                call.put("bench", k, VALUE)
        elif op == "put" and kind == "raw7":
            for k in keys:
                _raw_put(conn, "bench", k, data)
        elif op == "put":
            for k in keys:
                conn.execute(
                    "INSERT INTO raw_records (ns, key, value, version) VALUES (%s, %s, %s, 1)"
                    " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                    ("bench", k, data),
                )
        else:
            for k in keys:
                raw_get(conn, "bench", k, "filemem_records" if kind == "raw" else "raw_records")
        out.put(time.perf_counter() - t0)
        conn.close()
    elif kind == "lmdb":
        import lmdb

        env = lmdb.open(target, sync=True, map_size=1 << 30, lock=True)
        barrier.wait(120)
        t0 = time.perf_counter()
        if op == "put":
            for k in keys:
                with env.begin(write=True) as txn:
                    txn.put(f"bench/{k}".encode(), data)
        else:
            for k in keys:
                with env.begin() as txn:
                    txn.get(f"bench/{k}".encode())
        out.put(time.perf_counter() - t0)
        env.close()


def _run(kind: str, target: str, op: str, procs: int, ops: int, prefilled: list[str]) -> float:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    per = ops // procs
    children = []
    for p in range(procs):
        if op == "put":
            keys = [f"p{p}-{uuid.uuid4().hex[:6]}-{i}" for i in range(per)]
        else:
            rng = random.Random(p)
            keys = [rng.choice(prefilled) for _ in range(per)]
        children.append(ctx.Process(target=_worker, args=(kind, target, op, keys, barrier, out), daemon=True))
    t0 = time.perf_counter()
    for c in children:
        c.start()
    try:
        times = [out.get(timeout=600) for _ in children]
    finally:
        for c in children:
            c.join(60)
            if c.is_alive():
                c.kill()
    del t0
    return (per * procs) / max(times)  # ops/s from the barrier to the last finisher


def _targets(kinds: list[str], base_url: str, tmp: str) -> dict[str, str]:
    import psycopg

    out: dict[str, str] = {}
    for kind in kinds:
        if kind == "file":
            out[kind] = os.path.join(tmp, f"file-{uuid.uuid4().hex[:6]}")
        elif kind == "postgres":
            out[kind] = _schema_url(base_url)
        elif kind in ("raw", "raw7", "raw1"):
            url = _schema_url(base_url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(_RAW_SETUP)
            if kind == "raw":
                raw_store(url)  # the filemem tables and function the call runs against
            out[kind] = url
        elif kind == "lmdb":
            out[kind] = os.path.join(tmp, f"lmdb-{uuid.uuid4().hex[:6]}")
    return out


def _prefill(kind: str, target: str, keys: list[str]) -> None:
    data = json.dumps(VALUE, separators=(",", ":")).encode()
    if kind in ("file", "postgres"):
        import filemem

        with filemem.Store(target, durability="flush") as s, s.batch() as b:
            for k in keys:
                b.put("bench", k, VALUE)
    elif kind in ("raw", "raw7", "raw1"):
        import psycopg

        table = "filemem_records" if kind == "raw" else "raw_records"
        with psycopg.connect(target) as conn:
            conn.cursor().executemany(
                f"INSERT INTO {table} (ns, key, value, version, created_at, updated_at)"
                " VALUES ('bench', %s, %s, 1, 0, 0) ON CONFLICT DO NOTHING",
                [(k, data) for k in keys],
            )
    elif kind == "lmdb":
        import lmdb

        env = lmdb.open(target, map_size=1 << 30)
        with env.begin(write=True) as txn:
            for k in keys:
                txn.put(f"bench/{k}".encode(), data)
        env.close()


def _feed_latency(url: str, n: int) -> dict[str, float]:
    """put() returned in one store object -> the callback of a subscriber in another, p50/p99 in ms."""
    import filemem

    seen: dict[str, float] = {}
    cond = threading.Condition()

    def on_change(change: Any) -> None:
        t = time.perf_counter()
        with cond:
            for k in change.keys or ():
                seen.setdefault(k, t)
            cond.notify_all()

    lat = []
    with filemem.Store(url) as writer, filemem.Store(url) as reader, reader.subscribe(on_change, ("lat",)):
        for i in range(n):
            k = f"k{i}"
            writer.put("lat", k, i)
            t_ret = time.perf_counter()
            with cond:
                while k not in seen:
                    cond.wait(5)
            lat.append(max(0.0, seen[k] - t_ret) * 1000)
    lat.sort()
    return {"p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99) - 1]}


_WORDS = [f"w{i}" for i in range(400)]


def _toy_embed(text: str) -> list[float]:
    import hashlib

    vec = [0.0] * 16
    for word in text.split():
        h = hashlib.blake2b(word.encode(), digest_size=2).digest()
        vec[h[0] % 16] += 1.0 + h[1] / 255
    return vec


class _WordEmbed:
    """``dims``-dimensional embedding: the sum of one seeded Gaussian vector per word (distinct cosines)."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self._words: dict[str, list[float]] = {}

    def __call__(self, text: str) -> list[float]:
        out = [0.0] * self.dims
        for word in text.split():
            vec = self._words.get(word)
            if vec is None:
                rnd = random.Random(f"{self.dims}/{word}")
                vec = self._words[word] = [rnd.gauss(0.0, 1.0) for _ in range(self.dims)]
            out = [a + b for a, b in zip(out, vec, strict=True)]
        return out


def _search_bench(base: str, tmp: str, n_docs: int, repeat: int, embed_dims: int = 0) -> dict[str, Any]:
    """``embed_dims`` 0: the 16-bucket toy embedding; else ``_WordEmbed(embed_dims)``."""
    import filemem

    embed: Any = _toy_embed if not embed_dims else _WordEmbed(embed_dims)
    embed_id = "toy16" if not embed_dims else f"words{embed_dims}"

    rnd = random.Random(1)
    records = []
    for i in range(n_docs):
        text = " ".join(rnd.choice(_WORDS[: 50 + rnd.randrange(350)]) for _ in range(rnd.randint(3, 30)))
        records.append(((f"ns{i % 20:02d}", "mem"), f"k{i}", {"text": text, "n": i % 100, "tag": rnd.choice("xyz")}))
    prefix = None  # every namespace; a prefix of one namespace is below
    kinds: dict[str, dict[str, Any]] = {
        "bm25": {"query": "w3 w17"},
        "bm25+filter": {"query": "w3 w17", "filter": {"n": {"$gte": 50}, "tag": "x"}},
        "bm25 1 ns": {"query": "w3 w17", "prefix": ("ns03",)},
        "vector": {"vector": "w3 w17 w200"},
        "hybrid": {"query": "w3 w17", "vector": "w3 w17 w200"},
        # The vector far from the query's words: BM25's top hits sit deep in the vector order.
        "hybrid far": {"query": "w3 w17", "vector": "w260 w310 w390"},
        "filter": {"filter": {"n": {"$gte": 98}, "tag": "x"}},
    }
    out: dict[str, Any] = {"docs": n_docs, "embed": embed_id}
    stores = {
        "file": filemem.Store(os.path.join(tmp, "search-file"), embed=embed, embed_id=embed_id),
        "postgres": filemem.Store(_schema_url(base), embed=embed, embed_id=embed_id),
    }
    out["vectors"] = stores["postgres"].stats()["vectors"]  # pgvector on the server, or real[]
    try:
        for name, store in stores.items():
            t0 = time.perf_counter()
            for i in range(0, len(records), 500):
                with store.batch() as b:
                    for ns, key, value in records[i : i + 500]:
                        b.put(ns, key, value)
            out[f"write {name} s"] = round(time.perf_counter() - t0, 3)
        for kind, spec in kinds.items():
            kw = dict(spec)
            pre = kw.pop("prefix", prefix)
            row: dict[str, float] = {}
            pages = {}
            for name, store in stores.items():
                pages[name] = [(h.item.key, h.score) for h in store.search(pre, limit=10, **kw)]  # warm-up
                runs = []
                read0 = store.stats().get("vector_rows_read", 0)
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    for _ in range(20):
                        store.search(pre, limit=10, **kw)
                    runs.append((time.perf_counter() - t0) / 20 * 1000)
                row[f"{name} ms"] = round(statistics.median(runs), 2)
                if name == "postgres" and "vector" in kw:
                    # Vectors the server store read into Python per search (the file store reads all).
                    row["rows read"] = round((store.stats().get("vector_rows_read", 0) - read0) / (20 * repeat))
            row["ratio"] = round(row["postgres ms"] / row["file ms"], 2)
            row["same page"] = pages["file"] == pages["postgres"]
            out[kind] = row
    finally:
        for store in stores.values():
            store.close()
    return out


def _aio_reads(url: str, ops: int, repeat: int) -> dict[str, Any]:
    """AsyncStore gets: worker threads vs the async pool, 1 and 16 coroutines, median ops/s of ``repeat`` runs."""
    import asyncio

    from filemem._async._pool import PoolReads
    from filemem.aio import AsyncStore

    keys = [f"g{i}" for i in range(500)]
    _prefill("postgres", url, keys)

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with AsyncStore(url) as store:
            pool = PoolReads(store.sync, store.max_in_flight, enabled=True)  # the path AsyncStore may take
            rng = random.Random(7)
            picks = [rng.choice(keys) for _ in range(ops)]

            async def via_threads(k: str) -> Any:
                return await store._runner.run(store.sync.get, "bench", k)

            async def via_pool(k: str) -> Any:
                return await pool.get("bench", k, None)

            assert await via_pool(keys[0]) == await via_threads(keys[0]) == VALUE
            for conc in (1, 16):
                cells: dict[str, list[float]] = {"threads": [], "pool": []}
                for _ in range(repeat):
                    for name, fn in (("threads", via_threads), ("pool", via_pool)):
                        sem = asyncio.Semaphore(conc)

                        async def one(k: str, fn: Any = fn, sem: asyncio.Semaphore = sem) -> None:
                            async with sem:
                                await fn(k)

                        t0 = time.perf_counter()
                        await asyncio.gather(*(one(k) for k in picks))
                        cells[name].append(ops / (time.perf_counter() - t0))
                th, po = statistics.median(cells["threads"]), statistics.median(cells["pool"])
                out[f"aio gets {conc}c threads"] = round(th)
                out[f"aio gets {conc}c pool"] = round(po)
                out[f"aio gets {conc}c pool/threads"] = round(po / th, 2)
            out["aio pool reads served"] = pool.stats().get("async_reads", 0)
            await pool.close()
        return out

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="an existing server (default: start a throwaway one with tests/pgserver.py)")
    ap.add_argument("--ops", type=int, default=1200, help="puts (and gets) per cell, split over the processes")
    ap.add_argument("--procs", default="1,4", help="process counts (default 1,4)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is reported")
    ap.add_argument("--kinds", default="file,postgres,raw,raw7,raw1,lmdb")
    ap.add_argument("--aio", action="store_true", help="also AsyncStore gets: worker threads vs the async pool")
    ap.add_argument("--aio-only", action="store_true", help="only the AsyncStore rows")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--search", type=int, default=5000, help="records in the search comparison (0: skip it)")
    ap.add_argument("--only-search", action="store_true", help="run only the search comparison")
    ap.add_argument(
        "--embed-dims", type=int, default=0, help="search: N-dim word embedding (default: the 16-bucket toy one)"
    )
    cfg = ap.parse_args(argv)
    procs = [int(p) for p in cfg.procs.split(",")]
    kinds = cfg.kinds.split(",")
    server, base, why = start_server(cfg.url)
    if base is None:
        print(why, file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="filemem-benchpg-")
    results: dict[str, Any] = {"ops": cfg.ops, "repeat": cfg.repeat, "loadavg_start": os.getloadavg()}
    try:
        if cfg.search:
            results["search"] = _search_bench(base, tmp, cfg.search, cfg.repeat, cfg.embed_dims)
            if not cfg.json:
                for kind, row in results["search"].items():
                    print(f"search {kind:12s} {row}", flush=True)
        if cfg.aio or cfg.aio_only:
            got = _aio_reads(_schema_url(base), cfg.ops, cfg.repeat)
            results.update(got)
            if not cfg.json:
                for k, v in got.items():
                    print(f"{k:32s} {v}", flush=True)
        for op in ("put", "get") if not (cfg.aio_only or cfg.only_search) else ():
            for n in procs:
                for kind in kinds:
                    runs = []
                    for _ in range(cfg.repeat):
                        target = _targets([kind], base, tmp)[kind]
                        prefilled: list[str] = []
                        if op == "get":
                            prefilled = [f"g{i}" for i in range(2000)]
                            _prefill(kind, target, prefilled)
                        elif kind == "lmdb" or kind == "file":
                            pass
                        runs.append(_run(kind, target, op, n, cfg.ops, prefilled))
                    results[f"{op}s {n}p {kind}"] = round(statistics.median(runs))
                    if not cfg.json:
                        print(f"{op}s  {n} proc  {kind:9s} {statistics.median(runs):10.0f} ops/s", flush=True)
        if not (cfg.only_search or cfg.aio_only):
            results["feed_latency"] = _feed_latency(_schema_url(base), 300)
        results["loadavg_end"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.stop()
    if cfg.json:
        print(json.dumps(results, indent=2))
    else:
        if "feed_latency" in results:
            print("feed latency (put returned -> other store's callback):", results["feed_latency"])
        print("loadavg", results["loadavg_start"], "->", results["loadavg_end"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
