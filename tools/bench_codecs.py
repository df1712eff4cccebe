"""orjson against the standard library's json on shard-sized data (issue 13; docs/benchmarks.md).

Usage::

    python tools/bench_codecs.py                  # all cases, about a minute
    python tools/bench_codecs.py --quick --json   # fewer repeats, raw results as JSON

Both sides are filemem's own ``JsonCodec``: once as shipped (orjson where it
agrees with the stdlib) and once with ``codec.fast = None`` (the stdlib path
alone, which is what filemem ran before orjson). Each case is timed for both,
interleaved, ``--repeat`` times; the table shows the median and the ratio
(stdlib time / orjson time: above 1.00x orjson is faster).

Cases (the record is the one tools/bench.py writes, plus created/updated times):

1. ``dump``: encode a 1,000-record shard from scratch through the shard
   layer (``encode_shard``: one ``encode_pair`` per record, then ``join_map``).
2. ``load``: ``decode_shard`` of that shard's bytes (header, checksum, body
   decode, split into pairs): what every cache miss pays.
3. ``cold reads``: a fresh ``Store`` (empty shard cache) reads one key from
   every shard of a store holding ``--records`` records: file read plus
   decode, through the public API.
4. ``fold rewrite``: decode a 1,000-record shard, replace 100 of its records,
   encode it again (unchanged records reuse their encoded pairs): the CPU of
   folding log records into a shard.
5. ``batch``: ``store.batch()`` of 1,000 new records into a store holding
   ``--records`` records (``durability="flush"``, so the disk's sync time
   does not hide the codec), end to end through the public API.

Temp stores go under ``--tmpdir`` (default: the system temp directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import filemem  # noqa: E402
from filemem import codecs as fcodecs  # noqa: E402
from filemem._shard import Shard, decode_shard, encode_shard  # noqa: E402

NS = ("bench",)


def record(i: int) -> dict[str, Any]:
    now = 1_764_000_000.0 + i / 7
    return {
        "value": {"task": "login", "ok": True, "n": i, "text": "x" * 100},
        "version": i + 1,
        "created_at": now,
        "updated_at": now,
    }


def codec_pair() -> dict[str, fcodecs.JsonCodec]:
    fast = fcodecs.JsonCodec()
    if fast.fast is None:
        raise SystemExit("orjson is not installed: pip install -e . (it is a dependency)")
    std = fcodecs.JsonCodec()
    std.fast = None
    return {"stdlib json": std, "orjson": fast}


def timed(fn: Callable[[], Any], inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def case_dump(codec: fcodecs.JsonCodec, n: int) -> Callable[[], Any]:
    records = {f"key-{i}": record(i) for i in range(n)}

    def run() -> Any:
        return encode_shard(Shard("", "json", 1, records), codec)

    return run


def case_load(codec: fcodecs.JsonCodec, n: int) -> Callable[[], Any]:
    data = encode_shard(Shard("", "json", 1, {f"key-{i}": record(i) for i in range(n)}), codec_pair()["stdlib json"])
    codecs = {"json": codec}

    def run() -> Any:
        return decode_shard(data, "bench.shard", codecs)

    return run


def case_fold(codec: fcodecs.JsonCodec, n: int) -> Callable[[], Any]:
    data = encode_shard(Shard("", "json", 1, {f"key-{i}": record(i) for i in range(n)}), codec_pair()["stdlib json"])
    codecs = {"json": codec}
    changed = {f"key-{i}": record(i + 1) for i in range(0, n, 10)}

    def run() -> Any:
        shard = decode_shard(data, "bench.shard", codecs)
        for k, r in changed.items():
            shard.set(k, r)
        return encode_shard(shard, codec)

    return run


def with_codec(fast: bool) -> Any:
    """Make every JsonCodec built from now on (a Store's) use orjson or not; returns the undo."""
    saved = fcodecs._ORJSON
    fcodecs._ORJSON = saved if fast else None
    return saved


def store_cases(tmp: str, records: int, repeat: int) -> dict[str, dict[str, list[float]]]:
    """Cold reads and batch() through the public API, each side in its own store."""
    out: dict[str, dict[str, list[float]]] = {"cold reads": {}, "batch": {}}
    base = os.path.join(tmp, "store")
    with filemem.Store(base, durability="flush") as s, s.batch() as b:
        for i in range(records):
            b.put(NS, f"k{i}", record(i)["value"])
    saved = fcodecs._ORJSON
    try:
        for _ in range(repeat):
            for label, fast in (("stdlib json", False), ("orjson", True)):
                fcodecs._ORJSON = saved if fast else None
                with filemem.Store(base, durability="flush") as s:
                    shard_keys = _one_key_per_shard(s, records)
                with filemem.Store(base, durability="flush") as s:
                    assert s._engine.codec.fast is fcodecs._ORJSON  # type: ignore[attr-defined]
                    t = time.perf_counter()
                    for k in shard_keys:
                        s.get(NS, k)
                    out["cold reads"].setdefault(label, []).append(time.perf_counter() - t)
                path = os.path.join(tmp, f"batch-{label.replace(' ', '')}")
                shutil.rmtree(path, ignore_errors=True)
                shutil.copytree(base, path)
                with filemem.Store(path, durability="flush") as s:
                    t = time.perf_counter()
                    with s.batch() as b:
                        for i in range(1000):
                            b.put(NS, f"new{i}", record(i)["value"])
                    out["batch"].setdefault(label, []).append(time.perf_counter() - t)
                shutil.rmtree(path, ignore_errors=True)
    finally:
        fcodecs._ORJSON = saved
    out["cold reads"]["shards"] = [float(len(shard_keys))]
    return out


def _one_key_per_shard(store: filemem.Store, records: int) -> list[str]:
    """One key of each shard file (found by reading every key once and noting new parses)."""
    keys = []
    parses = store.stats()["shard_parses"]
    for i in range(records):
        store.get(NS, f"k{i}")
        now = store.stats()["shard_parses"]
        if now != parses:
            keys.append(f"k{i}")
            parses = now
    return keys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--records", type=int, default=10_000, help="records in the store for cold reads and batch")
    ap.add_argument("--shard-records", type=int, default=1_000, help="records in the shard of cases 1, 2 and 4")
    ap.add_argument("--repeat", type=int, help="timed runs per case and side (median shown); default 5, quick 3")
    ap.add_argument("--tmpdir", default=tempfile.gettempdir(), help="base directory for temp stores")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON")
    a = ap.parse_args(argv)
    repeat = a.repeat or (3 if a.quick else 5)
    inner = 5 if a.quick else 20
    results: dict[str, Any] = {
        "command": "python tools/bench_codecs.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "orjson": __import__("orjson").__version__,
        "cases": {},
    }
    pair = codec_pair()
    for name, make in (("dump", case_dump), ("load", case_load), ("fold rewrite", case_fold)):
        fns = {label: make(c, a.shard_records) for label, c in pair.items()}
        times: dict[str, list[float]] = {label: [] for label in fns}
        for _ in range(repeat):
            for label, fn in fns.items():
                times[label].append(timed(fn, inner))
        results["cases"][f"{name} ({a.shard_records:,}-record shard)"] = times
    tmp = tempfile.mkdtemp(prefix="filemem-bench-codecs-", dir=a.tmpdir)
    try:
        sc = store_cases(tmp, a.records, repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shards = int(sc["cold reads"].pop("shards")[0])
    results["cases"][f"cold reads (fresh Store, 1 get per shard, {shards} shards of {a.records:,} records)"] = sc[
        "cold reads"
    ]
    results["cases"][f"batch() of 1,000 into {a.records:,} records, durability=flush"] = sc["batch"]
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"orjson {results['orjson']} vs stdlib json, Python {results['python']}, {results['cpus']} CPUs, "
        f"load {results['loadavg']} -> {results['loadavg_end']}"
    )
    print(f"command: {results['command']}")
    print(f"{'case':75s} {'stdlib ms':>10s} {'orjson ms':>10s} {'ratio':>7s}")
    for name, t in results["cases"].items():
        s, o = statistics.median(t["stdlib json"]), statistics.median(t["orjson"])
        print(f"{name:75s} {s * 1e3:10.3f} {o * 1e3:10.3f} {s / o:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
