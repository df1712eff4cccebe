"""The collector's journal goes through the portable I/O layer (issue 13, portability).

The journal and the dead-letter files called ``os.pwrite``, ``os.pread`` and
``os.fdatasync`` directly: on a platform without them (Windows) a collector
failed, and ``FILEMEM_PORTABLE_IO=1`` never reached that code. A child
process without those three functions (removed before filemem is imported)
collects, flushes and reopens: every record is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_CHILD = """
import json, os, sys
for name in ("pwrite", "pread", "fdatasync"):
    if hasattr(os, name):
        delattr(os, name)
import filemem
with filemem.Store(sys.argv[1]) as s:
    with s.collector() as c:
        for i in range(50):
            c.collect(("col",), f"k{i}", {"i": i})
        c.flush()
with filemem.Store(sys.argv[1]) as s:
    got = sorted(s.keys(("col",)))
    print(json.dumps({"n": len(got), "v": s.get(("col",), "k49"), "check": [str(f) for f in s.check()]}))
"""


def test_a_collector_works_without_pwrite_pread_and_fdatasync(tmp_path: Path) -> None:
    env = {**os.environ, "FILEMEM_PORTABLE_IO": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"n": 50, "v": {"i": 49}, "check": []}
