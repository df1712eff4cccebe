"""How fast a SIGKILLed process's session is seen dead, on PostgreSQL and on files (issue 16).

Usage::

    python tools/bench_pg_sessions.py                      # starts a throwaway server (needs initdb)
    python tools/bench_pg_sessions.py --url postgresql://... --runs 30 --json

Each run: a spawned child opens ``Store(target)`` and a session, reports its
id and waits; the parent SIGKILLs it and, from just before the kill, polls
``store.session_info(id).alive`` as fast as it can (the real code path: on a
server one query reading ``pg_locks``; on files a shared probe of the lock
file). The figure is kill -> first ``alive == False``, p50 and max over the
runs. Also reported: the same from the start of a session to ``alive``
(``session()`` latency). Temp dirs under the system temp dir.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any
from urllib.parse import quote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _schema_url(base: str) -> str:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


def _child(target: str, ready: Any) -> None:
    import filemem

    store = filemem.Store(target)
    t0 = time.perf_counter()
    s = store.session("doomed")
    ready.put((s.id, time.perf_counter() - t0))
    time.sleep(120)


def _one(target: str, ctx: mp.context.SpawnContext) -> tuple[float, float]:
    import filemem

    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(target, q))
    p.start()
    try:
        session_id, start_s = q.get(timeout=60)
        with filemem.Store(target) as store:
            info = store.session_info(session_id)
            assert info is not None and info.alive
            t0 = time.perf_counter()
            os.kill(p.pid or 0, signal.SIGKILL)
            while True:
                info = store.session_info(session_id)
                if info is not None and not info.alive:
                    return time.perf_counter() - t0, start_s
                if time.perf_counter() - t0 > 120:
                    raise TimeoutError("session still alive 120 s after SIGKILL")
    finally:
        if p.is_alive():
            p.kill()
        p.join(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="an existing server (default: start a throwaway one with tests/pgserver.py)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--kinds", default="postgres,file")
    ap.add_argument("--json", action="store_true")
    cfg = ap.parse_args(argv)
    server = None
    base = cfg.url
    kinds = cfg.kinds.split(",")
    if base is None and "postgres" in kinds:
        from tests import pgserver

        bindir = pgserver.find_bindir()
        if bindir is None:
            print("no PostgreSQL server binaries; pass --url", file=sys.stderr)
            return 2
        server = pgserver.start(bindir)
        base = server.url
    tmp = tempfile.mkdtemp(prefix="filemem-benchsess-")
    ctx = mp.get_context("spawn")
    results: dict[str, Any] = {"runs": cfg.runs, "loadavg_start": os.getloadavg()}
    try:
        for kind in kinds:
            target = _schema_url(base) if kind == "postgres" and base else os.path.join(tmp, "store")
            dead, start = [], []
            for _ in range(cfg.runs):
                d, s = _one(target, ctx)
                dead.append(d * 1000)
                start.append(s * 1000)
            results[kind] = {
                "kill_to_dead_ms_p50": round(statistics.median(dead), 2),
                "kill_to_dead_ms_max": round(max(dead), 2),
                "session_start_ms_p50": round(statistics.median(start), 2),
            }
            if not cfg.json:
                print(kind, results[kind], flush=True)
        results["loadavg_end"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.stop()
    if cfg.json:
        print(json.dumps(results, indent=2))
    else:
        print("loadavg", results["loadavg_start"], "->", results["loadavg_end"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
