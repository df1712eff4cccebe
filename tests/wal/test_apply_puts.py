"""``Engine.apply_puts`` (the collector's batches) logs exactly what ``Engine.apply`` logs for the same puts.

The same sequence of batches goes to two fresh stores under a fixed clock, one
through ``apply`` with undecoded plain-put ``Op`` s, one through ``apply_puts``
with ``(namespace, key, bytes)`` tuples: every frame payload must be the same
bytes, every result the same, and both stores must read back the same records
(own handle: the overlay; a new handle: the log and the shards). The batches
take each path of the new entry point: fresh keys, keys the overlay holds
(``created_at`` taken from the entry), a repeated key (handed to ``apply``),
and a batch logged blind (another handle wrote since).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import filemem
from filemem._engine import UNDECODED, Op
from filemem._engine._core import puts_as_ops
from filemem._wal import _format

_NOW = 1_800_000_000.0


def _marker(n: int) -> Op:
    return Op(("internal", "m"), "applied", "put", {"ranges": [[1, n]]})


_Puts = list[tuple[tuple[str, ...], str, bytes]]


def _batches(codec: str) -> list[tuple[str, _Puts, list[Op]]]:
    enc = filemem.codecs.get_codec(codec).encode
    fresh: _Puts = [(("a",), f"k{i}", enc({"i": i})) for i in range(40)] + [
        (("b", "c"), f"k{i}", enc([i])) for i in range(5)
    ]
    again: _Puts = [(("a",), f"k{i}", enc({"i": -i})) for i in range(0, 40, 3)]
    again.append((("a",), "new", enc("x")))
    repeated: _Puts = [(("a",), "r", enc(1)), (("b", "c"), "k1", enc(2)), (("a",), "r", enc(3))]
    other: _Puts = [(("b", "c"), "k2", enc("by the other handle"))]
    blind: _Puts = [(("a",), f"k{i}", enc(i)) for i in range(30, 50)]
    return [
        ("own", fresh, [_marker(1)]),
        ("own", again, [_marker(2)]),
        ("own", repeated, []),
        ("other", other, []),
        ("own", blind, [_marker(3)]),
    ]


def _run(root: Path, new: bool) -> tuple[list[bytes], list[Any], dict[str, Any], int]:
    with pytest.MonkeyPatch.context() as monkeypatch:  # (its own: the conftest's patches stay)
        return _run_patched(root, new, monkeypatch)


def _run_patched(
    root: Path, new: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[bytes], list[Any], dict[str, Any], int]:
    frames: list[bytes] = []
    real = _format.encode_batch

    def recording(first: int, now: float, ops: list[_format.LogOp]) -> bytes:
        out = real(first, now, ops)
        frames.append(out)
        return out

    monkeypatch.setattr(_format, "encode_batch", recording)
    monkeypatch.setattr(time, "time", lambda: _NOW)
    results: list[Any] = []
    with filemem.Store(str(root)) as own, filemem.Store(str(root)) as other:
        codec = own._engine.codec.name
        for who, puts, extra in _batches(codec):
            engine = own._engine if who == "own" else other._engine
            if new:
                results.append(engine.apply_puts(puts, extra))
            else:
                results.append(engine.apply([*puts_as_ops(codec, puts), *extra]))
        assert own._engine.log is not None
        blind = own._engine.log.blind_commits
        keys = [(ns, key) for _, puts, _ in _batches(codec) for ns, key, _ in puts]
        seen = {f"{ns}/{key}": own.get(ns, key) for ns, key in keys}
        seen["marker"] = own.get(("internal", "m"), "applied")
        meta = own._engine.read(("a",), "k0")
        seen["meta"] = meta
    with filemem.Store(str(root)) as fresh:
        seen.update({f"fresh {ns}/{key}": fresh.get(ns, key) for ns, key in keys})
        seen["fresh meta"] = fresh._engine.read(("a",), "k0")
    return frames, results, seen, blind


def test_apply_puts_logs_the_frames_apply_logs(tmp_path: Path) -> None:
    old = _run(tmp_path / "old", False)
    new = _run(tmp_path / "new", True)
    assert len(new[0]) == len(old[0]) == 5
    for i, (a, b) in enumerate(zip(old[0], new[0], strict=True)):
        assert a == b, f"frame {i} differs"
    assert new[1] == old[1]
    assert new[2] == old[2]
    assert old[3] == new[3] == 1  # the last batch was logged blind, both ways
    assert new[2]["meta"]["created_at"] == _NOW


def test_apply_puts_refuses_what_apply_refuses(tmp_path: Path) -> None:
    with filemem.Store(str(tmp_path / "s")) as store:
        engine = store._engine
        big = b"1" * (engine.max_value_bytes + 1)
        with pytest.raises(filemem.InvalidValueError):
            engine.apply_puts([(("a",), "ok", b"1"), (("a",), "big", big)])
        assert store.get("a", "ok") is None  # all or nothing
        assert engine.apply_puts([(("a",), "ok", b"2")], [Op(("a",), "x", "put", UNDECODED, encoded=("json", b"3"))])
        assert store.get("a", "ok") == 2 and store.get("a", "x") == 3
