#!/usr/bin/env python3
"""Crash stress for filemem: N writer processes, a kill -9 loop, then a full audit.

Each writer does a random mix of puts, updates, compare-and-set puts,
deletes and cross-namespace batches, and acknowledges every write by
appending one line to an ack file *after* the call returned. Meanwhile the
parent SIGKILLs random writers at random moments and restarts them. At the
end it kills the survivors too, opens the store (which recovers dead batches)
and checks every acknowledgement:

* a put of a new key is there with exactly the value written;
* a counter (update / compare-and-set / overwritten key) is at least the
  acknowledged value;
* an acknowledged delete is still deleted;
* every batch is all or nothing, acknowledged or not;

then every shard loads, ``check(fix=True)`` repairs what the kills left and
``check()`` must be clean. Exit status 0 only if nothing was lost.

Example::

    PYTHONPATH=. python tools/stress.py --writers 4 --seconds 60 --kills 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from typing import Any

NAMESPACES = [("stress", "a"), ("stress", "b"), ("stress", "c", "deep")]
PAD = "s" * 80


def _ack(fd: int, *fields: Any) -> None:
    os.write(fd, (json.dumps(list(fields)) + "\n").encode())


def _incr(v: Any) -> dict[str, Any]:
    return {"n": (v["n"] if v else 0) + 1, "pad": PAD}


def writer(path: str, opts: dict[str, Any], ack_path: str, wid: int, inc: int, seed: int) -> None:
    """One writer incarnation: mixed writes, each acked after it returned, until killed."""
    import filemem

    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        store = filemem.Store(path, **opts)
        rng = random.Random(seed * 1_000_003 + wid * 1009 + inc)
        _ack(fd, "start", "", "", inc)
        i = 0
        while True:
            i += 1
            ns = rng.choice(NAMESPACES)
            nss = "/".join(ns)
            r = rng.random()
            if r < 0.25:
                key = f"ctr{rng.randrange(8)}"
                _ack(fd, "upd", nss, key, store.update(ns, key, _incr)["n"])
            elif r < 0.35:
                key = f"cas{rng.randrange(4)}"
                while True:
                    item = store.get_item(ns, key)
                    n = item.value["n"] + 1 if item is not None else 1
                    try:
                        store.put(ns, key, {"n": n, "pad": PAD}, if_version=item.version if item else 0)
                        break
                    except filemem.ConflictError:
                        continue
                _ack(fd, "cas", nss, key, n)
            elif r < 0.6:
                key = f"p{wid}-{inc}-{i}"
                store.put(ns, key, {"n": i, "pad": PAD})
                _ack(fd, "put", nss, key, i)
            elif r < 0.7:
                key = f"last{wid}"
                seq = inc * 1_000_000 + i
                store.put(ns, key, {"n": seq, "pad": PAD})
                _ack(fd, "last", nss, key, seq)
            elif r < 0.8:
                key = f"d{wid}-{inc}-{i}"
                store.put(ns, key, {"n": i, "pad": PAD})
                if not store.delete(ns, key):
                    raise AssertionError(f"delete of {nss}/{key} found nothing right after the put")
                _ack(fd, "del", nss, key, 0)
            else:
                tag = f"b{wid}-{inc}-{i}"
                with store.batch() as b:
                    for n_ in NAMESPACES:
                        b.update(n_, "bctr", _incr)
                    for n_ in NAMESPACES:
                        b.put(n_, tag, {"n": i, "pad": PAD})
                _ack(fd, "batch", "", tag, b.results[0]["n"])
    except BaseException as exc:
        _ack(fd, "error", "", "", f"writer {wid}.{inc}: {exc!r}")
        raise


def read_acks(path: str) -> list[list[Any]]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.split(b"\n")[:-1]:  # a torn last line is no promise
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def verify(store: Any, acks: list[list[Any]]) -> tuple[int, list[str]]:
    """Check every acknowledgement; return (verified, problems)."""
    problems: list[str] = []
    values: dict[tuple[str, str], Any] = {}
    for ns in NAMESPACES:
        for it in store.items(ns):
            values[("/".join(ns), it.key)] = it.value
    floors: dict[tuple[str, str], int] = {}
    verified = 0
    batch_floor = 0
    for kind, ns, key, v in acks:
        if kind in ("upd", "cas", "last"):
            floors[(ns, key)] = max(floors.get((ns, key), 0), v)
        elif kind == "put":
            if values.get((ns, key)) != {"n": v, "pad": PAD}:
                problems.append(f"lost put {ns}/{key}={v}: found {values.get((ns, key))}")
            else:
                verified += 1
        elif kind == "del":
            if (ns, key) in values:
                problems.append(f"deleted key came back: {ns}/{key}")
            else:
                verified += 1
        elif kind == "batch":
            missing = [n for n in NAMESPACES if ("/".join(n), key) not in values]
            if missing:
                problems.append(f"acked batch {key} missing in {missing}")
            else:
                verified += 1
            batch_floor = max(batch_floor, v)
    for (ns, key), floor in floors.items():
        got = values.get((ns, key))
        if got is None or got["n"] < floor:
            problems.append(f"{ns}/{key} is {got and got['n']}, acked at least {floor}")
        else:
            verified += 1
    bctr = [values.get(("/".join(n), "bctr"), {"n": 0})["n"] for n in NAMESPACES]
    if len(set(bctr)) != 1 or bctr[0] < batch_floor:
        problems.append(f"batch counters torn or lost: {bctr}, acked at least {batch_floor}")
    tags = [{k for (n, k) in values if n == "/".join(ns) and k.startswith("b") and k != "bctr"} for ns in NAMESPACES]
    if not tags[0] == tags[1] == tags[2]:
        problems.append(f"batches applied to some namespaces only: {sorted(tags[0] ^ tags[1] | tags[1] ^ tags[2])[:5]}")
    return verified, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--writers", type=int, default=4, help="writer processes (default 4)")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the writers run (default 30)")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs spread over the run (default 10)")
    ap.add_argument("--path", default=None, help="store directory (default: a temp dir, removed if all is well)")
    ap.add_argument("--codec", choices=["json", "msgpack"], default="json")
    ap.add_argument("--shard-max-bytes", type=int, default=2048, help="small: shards split all the time")
    ap.add_argument("--durability", choices=["fsync", "flush"], default="fsync")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)

    import filemem

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="filemem-stress-")
    path = args.path or os.path.join(work, "store")
    ack_path = os.path.join(work, "acks.log")
    opts = {"durability": args.durability, "shard_max_bytes": args.shard_max_bytes}
    filemem.Store(path, codec=args.codec).close()
    ctx = mp.get_context("spawn")
    incarnation = [0] * args.writers
    procs: dict[int, Any] = {}
    kills = 0
    failed: list[str] = []

    def launch(wid: int) -> None:
        incarnation[wid] += 1
        p = ctx.Process(
            target=writer,
            args=(path, opts, ack_path, wid, incarnation[wid], seed),
            name=f"writer-{wid}.{incarnation[wid]}",
            daemon=True,
        )
        p.start()
        procs[wid] = p

    print(
        f"stress: {args.writers} writers, {args.seconds:g}s, {args.kills} kills, codec={args.codec}, "
        f"shard_max_bytes={args.shard_max_bytes}, durability={args.durability}, seed={seed}, store={path}",
        flush=True,
    )
    t0 = time.monotonic()
    try:
        for wid in range(args.writers):
            launch(wid)
        kill_at = sorted(rng.uniform(0.5, max(args.seconds - 0.5, 0.6)) for _ in range(args.kills))
        for when in kill_at:
            time.sleep(max(0.0, t0 + when - time.monotonic()))
            for wid, p in procs.items():  # a writer that died by itself is a failure
                if not p.is_alive():
                    failed.append(f"{p.name} exited with {p.exitcode}")
                    launch(wid)
            wid = rng.randrange(args.writers)
            procs[wid].kill()
            procs[wid].join(30)
            kills += 1
            launch(wid)
        time.sleep(max(0.0, t0 + args.seconds - time.monotonic()))
        for p in procs.values():  # the end is a crash too: the audit starts from what kill -9 left
            if not p.is_alive():
                failed.append(f"{p.name} exited with {p.exitcode}")
            p.kill()
            p.join(30)
    except KeyboardInterrupt:
        failed.append("interrupted")
    finally:
        for p in procs.values():
            if p.is_alive():
                p.kill()
                p.join(10)
    elapsed = time.monotonic() - t0

    acks = read_acks(ack_path)
    errors = [a[3] for a in acks if a[0] == "error"]
    writes = [a for a in acks if a[0] not in ("start", "error")]
    kinds = Counter(a[0] for a in writes)
    with filemem.Store(path, readonly=True) as ro:
        before = Counter(f.code for f in ro.check())  # what the kills left, before any recovery
    problems: list[str] = []
    try:
        with filemem.Store(path, **opts) as s:  # opening recovers dead batches
            for ns in s.list_namespaces():
                s.items(ns)  # every shard loads
            verified, problems = verify(s, writes)
            fixed = s.check(fix=True)
            after = s.check()
            verified_after, problems_after = verify(s, writes)
            if verified_after != verified or problems_after != problems:
                problems.append(f"check(fix=True) changed the data: {verified} -> {verified_after} verified")
    except filemem.FileMemError as exc:
        problems.append(f"store unreadable: {exc!r}")
        verified, fixed, after = 0, [], []
    shards = sum(f.endswith(".shard") for _, _, fs in os.walk(path) for f in fs)

    print(f"time      {elapsed:.1f}s")
    print(f"ops       {len(writes)} acked writes ({len(writes) / elapsed:.0f}/s): {dict(sorted(kinds.items()))}")
    print(f"kills     {kills} during the run, {args.writers} at the end (writer incarnations: {sum(incarnation)})")
    print(f"acked     {len(writes)}")
    print(f"verified  {verified} promises (counters checked once each, at their highest ack)")
    print(f"shards    {shards}")
    print(f"findings  before recovery: {dict(before) or 'none'}")
    print(f"          check(fix=True): {dict(Counter((f.code, f.fixed) for f in fixed)) or 'none'}")
    print(f"          check() after:   {[(f.code, f.path) for f in after] or 'clean'}")
    for line in failed + errors:
        print(f"FAILED    {line}")
    for line in problems[:20]:
        print(f"LOST      {line}")
    ok = not problems and not after and not failed and not errors
    print("result    " + ("OK: nothing acknowledged was lost, the store is clean" if ok else "PROBLEMS"))
    if ok:
        shutil.rmtree(work, ignore_errors=True)  # the acks, and the store if it was ours
    else:
        print(f"kept      {work} (acks.log) and {path} for inspection")
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up children like Ctrl-C
    sys.exit(main())
