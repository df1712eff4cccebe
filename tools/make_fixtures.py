"""Build the golden stores in fixtures/ (format version 1), clean and damaged.

Run once per format version; the committed files are what tests read, so
that a change to the on-disk format can never slip in unnoticed:
``tests/regressions/test_fixtures.py`` opens them with today's code.

    python tools/make_fixtures.py            # refuses to overwrite existing fixtures
    python tools/make_fixtures.py --force
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="replace existing fixtures")
    args = parser.parse_args()
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
