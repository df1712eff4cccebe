"""What one fold costs the process that runs it: peak RSS and time of a close fold (issue 13 diagnostic).

A store of ``--prefill`` records is filled in a child process; this process
then opens it, puts ``--puts`` random keys (half of them new) with the
background fold and the back-pressure fold switched off, so the whole log is
left to the close, and closes: the close folds it all. Printed: VmHWM after
opening, after the puts (the overlay of unfolded records) and after the close
(the fold's own peak on top), the close's time and the records it folded.
``--trace`` adds tracemalloc's largest allocations at the fold's peak (slow).

Usage::

    python tools/diag_fold.py                      # the filemem next to this tool
    python tools/diag_fold.py --code <dir>         # the filemem package under <dir> (A/B runs)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

NS = ("bench",)


def _status(field: str) -> float:
    """A /proc/self/status figure in MB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--prefill", type=int, default=10_000)
    ap.add_argument("--puts", type=int, default=10_000)
    ap.add_argument("--tmpdir", default=None, help="base directory for the store (a real disk, not tmpfs)")
    ap.add_argument("--trace", action="store_true")
    a = ap.parse_args()
    code = os.path.abspath(a.code)
    sys.path.insert(0, code)
    import filemem
    from filemem._engine import _log as engine_log

    assert filemem.__file__.startswith(code), filemem.__file__
    path = tempfile.mkdtemp(dir=a.tmpdir, prefix="filemem-diag-fold-")
    try:
        fill = (
            f"import sys; sys.path.insert(0, {code!r}); import filemem\n"
            f"with filemem.Store({path!r}, durability='flush') as s, s.batch() as b:\n"
            f"    for i in range({a.prefill}): b.put({NS!r}, f'k{{i}}', {{'task': 'login', 'n': i, 'text': 'x' * 100}})\n"
        )
        subprocess.run([sys.executable, "-c", fill], check=True)  # its memory is not ours
        engine_log.LogGlue._poke_folder = lambda self, *, now: None  # type: ignore[method-assign]
        engine_log.FOLD_BYTES = engine_log.BACKLOG_BYTES = 1 << 40  # type: ignore[misc]
        rng = random.Random(1)
        store = filemem.Store(path, durability="flush")
        store.get(NS, "k0")
        opened = _status("VmHWM")
        for i in range(a.puts):
            store.put(NS, f"k{rng.randrange(2 * a.prefill)}", {"task": "login", "n": i, "text": "x" * 100})
        engine: Any = store._backend.engine  # type: ignore[attr-defined]
        unfolded = engine.log.unfolded_bytes()
        loaded = _status("VmHWM")
        snap: list[Any] = [0, None]
        if a.trace:
            from filemem._engine import _commit

            commit = _commit.Commits._commit

            def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
                got = commit(self, *args, **kwargs)
                now = tracemalloc.get_traced_memory()[0]
                if now > snap[0]:
                    snap[0], snap[1] = now, tracemalloc.take_snapshot()
                return got

            _commit.Commits._commit = spy  # type: ignore[method-assign]
            tracemalloc.start(10)
            base = tracemalloc.take_snapshot()
        t = time.perf_counter()
        store.close()
        took = time.perf_counter() - t
        folded = engine.counters["records_folded"]
        print(f"filemem:  {filemem.__file__}")
        print(f"log:      {unfolded / 1e6:.2f} MB unfolded after {a.puts:,} puts into {a.prefill:,} records")
        print(
            f"VmHWM:    open {opened:.1f} MB, after the puts {loaded:.1f} MB, after the close fold {_status('VmHWM'):.1f} MB"
        )
        print(f"close:    {took:.2f} s, {folded:,} records folded ({folded / took:,.0f}/s)")
        if a.trace and snap[1] is not None:
            print(f"traced at the fold's peak: {snap[0] / 1e6:.1f} MB above the start of the close")
            for stat in snap[1].compare_to(base, "lineno")[:15]:
                print(f"  {stat}")
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
