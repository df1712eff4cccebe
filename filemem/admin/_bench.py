"""A short, self-contained benchmark: filemem beside a JSON file guarded by a lock (part of :mod:`filemem.admin`).

The baseline is what a careful script would do without filemem: one JSON
file holding a dict, an exclusive lock on a separate lock file around every
read-modify-write, the file rewritten whole through a temp file and
``os.replace`` (with the same fsync policy as the store), and a get that
parses the file. Both sides run in this one process on the same machine, so
the *ratios* are the meaningful figures. tools/bench.py compares against
SQLite-based and LMDB peers with many processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .. import _fs, _locks
from .._store import Store
from .._types import Durability

__all__ = ["BenchReport", "bench"]


@dataclass(frozen=True, slots=True)
class BenchReport:
    """Operations per second of each side, and filemem's ratio over the baseline (>1: filemem is faster)."""

    records: int
    value_bytes: int
    durability: str
    filemem_put_per_s: float
    filemem_get_per_s: float
    filemem_get_strict_per_s: float
    baseline_put_per_s: float
    baseline_get_per_s: float
    put_ratio: float
    get_ratio: float
    get_strict_ratio: float

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON)."""
        return asdict(self)


class _JsonFileBaseline:
    def __init__(self, directory: str, *, sync: bool) -> None:
        self.path = os.path.join(directory, "data.json")
        self.lock = os.path.join(directory, "data.lock")
        self.sync = sync
        _fs.atomic_write(self.path, b"{}", sync=sync)

    def put(self, key: str, value: Any) -> None:
        with _locks.exclusive(self.lock, 10.0):
            with open(self.path, "rb") as fh:
                data = json.loads(fh.read())
            data[key] = value
            _fs.atomic_write(self.path, json.dumps(data).encode(), sync=self.sync)

    def get(self, key: str) -> Any:
        # Lock-free like filemem's get: the file is only ever replaced whole.
        with open(self.path, "rb") as fh:
            return json.loads(fh.read()).get(key)


def _rate(n: int, fn: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    elapsed = time.perf_counter() - started
    return n / elapsed if elapsed > 0 else float("inf")


def bench(
    directory: str | None = None,
    *,
    records: int = 500,
    value_bytes: int = 100,
    durability: Durability = "fsync",
    seed: int = 1,
) -> BenchReport:
    """Time ``records`` puts then ``records`` random gets on a new filemem store and on the baseline.

    ``directory``: where the two temporary stores go (removed afterwards;
    default: the system temp directory; use a real disk, since tmpfs makes
    fsync free). Takes a few seconds at the default size.

    Example::

        report = filemem.admin.bench(records=200, durability="flush")
        print(f"puts {report.put_ratio:.1f}x, gets {report.get_ratio:.1f}x the JSON-file baseline")
    """
    if records < 1 or value_bytes < 0:
        raise ValueError("records must be positive and value_bytes non-negative")
    rng = random.Random(seed)  # noqa: S311 - a reproducible read order, not crypto
    payload = "x" * value_bytes
    keys = [f"k{i:07d}" for i in range(records)]
    order = [rng.randrange(records) for _ in range(records)]
    work = tempfile.mkdtemp(prefix="filemem-bench-", dir=directory)
    try:
        with Store(os.path.join(work, "store"), durability=durability, watch="off") as store:
            ns = ("bench",)
            put = _rate(records, lambda i: store.put(ns, keys[i], {"i": i, "p": payload}))
            get = _rate(records, lambda i: store.get(ns, keys[order[i]]))
            strict = _rate(records, lambda i: store.get(ns, keys[order[i]], consistency="strict"))
        base_dir = os.path.join(work, "baseline")
        os.mkdir(base_dir, 0o700)
        base = _JsonFileBaseline(base_dir, sync=durability == "fsync")
        bput = _rate(records, lambda i: base.put(keys[i], {"i": i, "p": payload}))
        bget = _rate(records, lambda i: base.get(keys[order[i]]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BenchReport(
        records=records,
        value_bytes=value_bytes,
        durability=durability,
        filemem_put_per_s=round(put, 1),
        filemem_get_per_s=round(get, 1),
        filemem_get_strict_per_s=round(strict, 1),
        baseline_put_per_s=round(bput, 1),
        baseline_get_per_s=round(bget, 1),
        put_ratio=round(put / bput, 2),
        get_ratio=round(get / bget, 2),
        get_strict_ratio=round(strict / bget, 2),
    )
