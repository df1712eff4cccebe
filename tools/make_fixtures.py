"""Build the golden stores in fixtures/: format version 1 (clean and damaged) and version 2.

Run once per format version; the committed files are what tests read, so
that a change to the on-disk format can never slip in unnoticed:
``tests/regressions/test_fixtures.py`` opens them with today's code.

    python tools/make_fixtures.py            # refuses to overwrite existing fixtures
    python tools/make_fixtures.py --force
    python tools/make_fixtures.py --v2       # only the version 2 stores (v2-*), if missing

Version 2: ``v2-<codec>`` is a store at rest (every record folded into the
shards; the log's segment holds the folded frames), ``v2-<codec>-unfolded-log``
the same store after a writer was killed (SIGKILL) with records in the log
that no fold moved into the shards (``UNFOLDED``). Segments are trimmed of
their preallocated zeros (zeros are the end of the log either way) and lock
files are left out; the control page is kept (its boot id is this machine's:
elsewhere it is re-derived from the log, as after a reboot).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import filemem  # noqa: E402
from filemem import _fs  # noqa: E402

FIXTURES = ROOT / "fixtures"
#: What every clean golden store holds (also in fixtures/expected.json).
EXPECTED: dict[str, dict[str, object]] = {
    "agent-1/episodic": {
        f"ep-{i:03d}": {"task": f"task {i}", "ok": i % 3 != 0, "steps": list(range(i % 4))} for i in range(60)
    },
    "agent-1/facts": {"sky": "blue", "unicode": "naïve café ✓", "nested": {"a": [1, 2, {"b": None}]}},
    "Tenant Acme/sub.ns": {"k": 1},
    "tenant/acme-corp": {"k": 2},
}


#: What the killed writer of ``v2-<codec>-unfolded-log`` logged and never folded.
UNFOLDED: dict[str, dict[str, object]] = {
    "agent-1/facts": {"sky": "grey", "logged-only": {"n": 7}},
    "agent-2/new": {"k": "only in the log"},
}


def _ns(name: str) -> tuple[str, ...]:
    return tuple(name.split("/"))


def build_clean(path: Path, codec: str) -> None:
    with filemem.Store(path, codec=codec, shard_max_bytes=2048) as store:
        for ns, records in EXPECTED.items():
            for key, value in records.items():
                store.put(_ns(ns), key, value)
        store.put(("agent-1", "facts"), "far-future", "still here", ttl=10 * 365 * 24 * 3600)
        assert store.check() == []
    _strip_locks(path)


def _strip_locks(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for f in files:
            if f.endswith(".lock"):
                os.unlink(os.path.join(dirpath, f))


def _a_shard(path: Path) -> Path:
    d = path / "ns" / "agent-1" / "facts"
    return sorted(d.glob("s*.shard"))[0]


def build_damaged(clean: Path, codec: str) -> None:
    def copy(name: str) -> Path:
        dest = FIXTURES / f"v1-{codec}-{name}"
        shutil.copytree(clean, dest)
        return dest

    d = copy("flipped-byte")
    shard = _a_shard(d)
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x04
    shard.write_bytes(bytes(data))

    d = copy("truncated")
    shard = _a_shard(d)
    shard.write_bytes(shard.read_bytes()[:-20])

    d = copy("leftover-temp")
    shard = _a_shard(d)
    Path(str(shard) + _fs.TEMP_MARK + "4999999-deadbeef").write_bytes(shard.read_bytes()[:30])

    d = copy("foreign-file")
    (d / "ns" / "agent-1" / "notes.txt").write_text("a person left this here\n")

    # An unfinished batch: the intent committed, one shard renamed, one not.
    d = copy("unfinished-batch")
    with filemem.Store(d) as store:
        real = _fs.replace
        calls = {"n": 0}

        def crash(src: str, dst: str) -> None:
            calls["n"] += 1
            if dst.endswith(".batch") or calls["n"] == 2:
                real(src, dst)
                return
            raise KeyboardInterrupt("writer died")

        _fs.replace = crash  # type: ignore[assignment]
        try:
            with store.batch() as b:
                b.put(("agent-1", "facts"), "sky", "grey")
                b.put(("tenant", "acme-corp"), "k", 3)
        except KeyboardInterrupt:
            pass
        finally:
            _fs.replace = real  # type: ignore[assignment]
    _strip_locks(d)


_KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {root!r})
import filemem
from filemem._engine import _log
_log.FOLD_IDLE_S = 1e9  # no background fold: the records stay in the log
store = filemem.Store({path!r})
for ns, records in {unfolded!r}.items():
    for key, value in records.items():
        store.put(tuple(ns.split("/")), key, value)
store.delete(("agent-1", "episodic"), "ep-000")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _trim_segments(path: Path) -> None:
    """Cut each segment at the end of its last good frame (what follows is preallocated zeros)."""
    from filemem._wal import _format
    from filemem._wal._reader import LogReader

    for seg in sorted((path / "wal").glob("*.log")):
        n = int(seg.stem, 16)
        reader = LogReader(str(path / "wal"))
        try:
            scan = reader.scan(_format.position(n, _format.SEGMENT_HEADER_BYTES), _format.position(n + 1, 0))
        finally:
            reader.close()
        end = _format.offset_of(scan.end) if _format.segment_of(scan.end) == n else seg.stat().st_size
        data = seg.read_bytes()
        assert not any(data[end:]), f"{seg}: bytes after the last frame"
        seg.write_bytes(data[:end])


def build_v2(codec: str) -> None:
    """The v2 golden stores of ``codec`` (see the module docstring)."""
    import subprocess

    clean = FIXTURES / f"v2-{codec}"
    env = {**os.environ, "FILEMEM_STORE_FORMAT": "2"}
    script = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import tools.make_fixtures as m; from pathlib import Path; m.build_clean(Path({str(clean)!r}), {codec!r})"
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    unfolded = FIXTURES / f"v2-{codec}-unfolded-log"
    shutil.copytree(clean, unfolded)
    code = _KILLED_WRITER.format(root=str(ROOT), path=str(unfolded), unfolded=UNFOLDED)
    got = subprocess.run([sys.executable, "-c", code], check=False, env=env)
    assert got.returncode == -9, got
    for store in (clean, unfolded):
        _trim_segments(store)
        _strip_locks(store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="replace existing fixtures")
    parser.add_argument("--v2", action="store_true", help="build only the version 2 stores (v2-*), if missing")
    args = parser.parse_args()
    if args.v2:
        if any(FIXTURES.glob("v2-*")) and not args.force:
            raise SystemExit("v2 fixtures exist; they are golden.")
        for old in FIXTURES.glob("v2-*"):
            shutil.rmtree(old)
        for codec in ("json", "msgpack"):
            build_v2(codec)
        print("fixtures written:", ", ".join(sorted(p.name for p in FIXTURES.glob("v2-*"))))
        return
    if any(FIXTURES.glob("v1-*")) and not args.force:
        raise SystemExit("fixtures exist; they are golden. Use --force only for a new format version.")
    for old in FIXTURES.glob("v1-*"):
        shutil.rmtree(old)
    FIXTURES.mkdir(exist_ok=True)
    for codec in ("json", "msgpack"):
        clean = FIXTURES / f"v1-{codec}"
        build_clean(clean, codec)
        build_damaged(clean, codec)
    (FIXTURES / "expected.json").write_text(json.dumps(EXPECTED, indent=1, ensure_ascii=False) + "\n")
    print("fixtures written:", ", ".join(sorted(p.name for p in FIXTURES.glob("v1-*"))))


if __name__ == "__main__":
    main()
