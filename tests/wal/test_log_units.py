"""The write-ahead log's rooms one by one: framing, writer, reader, control page, overlay, checkpoint."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from filemem import StorageError
from filemem._wal import _format, _platform
from filemem._wal._control import Control, ControlPage
from filemem._wal._fold import Checkpoint, read_checkpoint, write_checkpoint
from filemem._wal._log import FIRST_POSITION, Log
from filemem._wal._overlay import Entry, Overlay
from filemem._wal._reader import LogReader
from filemem._wal._writer import LogWriter
from filemem.codecs import get_codec

CODECS: dict[str, Any] = {"json": get_codec("json"), "msgpack": get_codec("msgpack")}


def _put(ns: tuple[str, ...], key: str, value: Any, **kw: Any) -> _format.LogOp:
    return _format.LogOp(ns, key, _format.PUT, "json", CODECS["json"].encode(value), 1.5, kw.get("expires_at"))


# ---------------------------------------------------------------------- framing


def test_batch_round_trips_every_field() -> None:
    ops = [
        _put(("a", "b"), "k", {"x": [1, 2]}),
        _format.LogOp(("\x00internal", "applied"), "ключ", _format.DELETE),
        _put(("a",), "", None, expires_at=99.25),
    ]
    first, now, back = _format.decode_batch(_format.encode_batch(41, 7.5, ops))
    assert (first, now) == (41, 7.5)
    assert back == ops


@pytest.mark.parametrize("cut", [1, 5, 20])
@pytest.mark.parametrize("decode", [_format.decode_batch, _format.index_batch])
def test_truncated_batch_is_refused(cut: int, decode: Any) -> None:
    payload = _format.encode_batch(1, 0.0, [_put(("a",), "k", "v" * 30)])
    with pytest.raises(ValueError):
        decode(payload[:-cut])


def test_an_indexed_batch_gives_back_every_op_on_demand() -> None:
    """index_batch finds the keys without building values; op_at builds the op decode_batch would."""
    ops = [
        _put(("a", "b"), "k", {"x": [1, 2]}),
        _format.LogOp(("\x00internal", "applied"), "ключ", _format.DELETE),
        _put(("a",), "", None, expires_at=99.25),
        _format.LogOp(("a",), "m", _format.PUT, "msgpack", CODECS["msgpack"].encode([1, "z"]), float("nan")),
    ]
    payload = _format.encode_batch(41, 7.5, ops)
    first, now, indexed = _format.index_batch(payload)
    assert (first, now) == (41, 7.5)
    assert [(ns, key, kind) for ns, key, kind, _, _ in indexed] == [(op.namespace, op.key, op.kind) for op in ops]
    back = [_format.op_at(payload, op) for op in indexed]
    assert back[:3] == ops[:3] == _format.decode_batch(payload)[2][:3]
    assert back[3].value == ops[3].value and back[3].codec == "msgpack" and back[3].created_at != back[3].created_at


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p[:20] + b"\x07" + p[21:],  # op kind 7 (after the 20-byte batch head)
        lambda p: p[:21] + b"\x09" + p[22:],  # codec 9
        lambda p: p + b"\x00",  # trailing byte
    ],
)
def test_an_index_refuses_what_the_decoder_refuses(damage: Any) -> None:
    payload = damage(_format.encode_batch(1, 0.0, [_put(("a",), "k", "v")]))
    with pytest.raises(ValueError):
        _format.decode_batch(payload)
    with pytest.raises(ValueError):
        _format.index_batch(payload)


def test_frame_checks_crc_position_and_zeros() -> None:
    pos = _format.position(3, 4096)
    frame = _format.encode_frame(_format.BATCH, pos, b"payload!")
    assert len(frame) % 8 == 0
    head = frame[: _format.FRAME_HEADER_BYTES]
    crc, length, kind = _format.decode_frame_header(head, pos) or (0, 0, 0)
    assert (length, kind) == (8, _format.BATCH)
    body = frame[_format.FRAME_HEADER_BYTES : _format.FRAME_HEADER_BYTES + length]
    assert _format.check_frame(head, body, crc)
    assert not _format.check_frame(head, b"payload?", crc)
    # The same bytes at another position are stale data, not a frame.
    assert _format.decode_frame_header(head, pos + 8) is None
    assert _format.decode_frame_header(bytes(24), pos) is None


def test_segment_header_names_its_segment() -> None:
    head = _format.encode_segment_header(77)
    assert _format.decode_segment_header(head) == 77
    bad = bytearray(head)
    bad[9] ^= 1
    assert _format.decode_segment_header(bytes(bad)) is None


# ---------------------------------------------------------------------- writer + reader


def _write(tmp_path: Path, payloads: list[bytes], segment_bytes: int = 1 << 20) -> tuple[LogWriter, list[int]]:
    w = LogWriter(str(tmp_path), segment_bytes=segment_bytes, sync=True)
    at = FIRST_POSITION
    ends = []
    for p in payloads:
        _, at = w.append(at, _format.BATCH, p)
        w.sync(at)
        ends.append(at)
    return w, ends


def test_reader_returns_what_the_writer_wrote(tmp_path: Path) -> None:
    payloads = [bytes([i]) * (i * 37 % 200 + 1) for i in range(50)]
    w, ends = _write(tmp_path, payloads)
    w.close()
    r = LogReader(str(tmp_path))
    scan = r.scan(FIRST_POSITION, None)
    assert [f.payload for f in scan.frames] == payloads
    assert scan.end == ends[-1] and scan.stop == "end"
    part = r.scan(FIRST_POSITION, ends[9])
    assert len(part.frames) == 10 and part.stop == "limit"
    r.close()


def test_segments_roll_and_the_scan_follows(tmp_path: Path) -> None:
    payloads = [os.urandom(300) for _ in range(40)]
    w, _ = _write(tmp_path, payloads, segment_bytes=4096)
    w.close()
    segs = sorted(f for f in os.listdir(tmp_path) if f.endswith(".log"))
    assert len(segs) >= 3
    scan = LogReader(str(tmp_path)).scan(FIRST_POSITION, None)
    assert [f.payload for f in scan.frames if f.kind == _format.BATCH] == payloads
    assert _format.segment_of(scan.end) == len(segs)


def test_a_frame_bigger_than_a_segment_gets_its_own(tmp_path: Path) -> None:
    payloads = [b"a" * 100, os.urandom(10_000), b"b" * 100]
    w, _ = _write(tmp_path, payloads, segment_bytes=4096)
    w.close()
    scan = LogReader(str(tmp_path)).scan(FIRST_POSITION, None)
    assert [f.payload for f in scan.frames if f.kind == _format.BATCH] == payloads


@pytest.mark.parametrize("damage", ["flip", "truncate-payload", "garbage-header"])
def test_a_damaged_tail_ends_the_scan_at_the_last_good_frame(tmp_path: Path, damage: str) -> None:
    w, ends = _write(tmp_path, [b"x" * 64, b"y" * 64, b"z" * 64])
    w.close()
    seg = tmp_path / _format.segment_name(1)
    data = bytearray(seg.read_bytes())
    last = _format.offset_of(ends[1])
    if damage == "flip":
        data[last + 30] ^= 0x40
    elif damage == "truncate-payload":
        data[last + 40 : last + 100] = bytes(60)
    else:
        data[last : last + 8] = b"\xff" * 8
    seg.write_bytes(bytes(data))
    scan = LogReader(str(tmp_path)).scan(FIRST_POSITION, None)
    assert [f.payload for f in scan.frames] == [b"x" * 64, b"y" * 64]
    assert scan.end == ends[1] and scan.stop == "torn"


def test_missing_segment_is_reported(tmp_path: Path) -> None:
    scan = LogReader(str(tmp_path)).scan(FIRST_POSITION, None)
    assert scan.frames == [] and scan.stop == "missing" and scan.end == FIRST_POSITION


# ---------------------------------------------------------------------- control page


def test_control_page_round_trips_and_only_the_seqlock_guards_it(tmp_path: Path) -> None:
    path = str(tmp_path / "control")
    page = ControlPage(path)
    assert not page.valid()
    c = Control(appended=10, synced=9, commits=3, last_lsn=5, synced_lsn=4, folded=2, folded_lsn=1, folds=1)
    page.initialise(c, 1234)
    other = ControlPage(path)  # a second mapping sees the first's writes at once
    assert other.valid() and other.boot() == 1234 and other.read() == c and other.commits() == 3
    # A writer that died mid-update leaves seq odd: readers refuse the page, repair closes it.
    raw = bytearray(Path(path).read_bytes())
    seq = struct.unpack_from("<Q", raw, 16)[0]
    page._put(2, seq + 1)
    assert other.read() is None
    page.repair()
    assert other.read() == c
    # The append group's own seqlock (aseq, word 12) guards appended and last_lsn the same way.
    aseq = struct.unpack_from("<Q", raw, 96)[0]
    page._put(12, aseq + 1)
    assert other.read() is None and other.read_once() is None
    page.repair()
    assert other.read() == c
    page.close()
    other.close()


def test_a_page_lock_writer_never_writes_the_append_groups_words(tmp_path: Path) -> None:
    """``write`` (page lock) leaves ``appended`` and ``last_lsn`` to ``write_appended`` (append lock).

    An appender no longer takes the page lock, so a publisher holding a copy
    read before an append must not write its older ``appended`` back (the
    next frame would overwrite the appender's).
    """
    path = str(tmp_path / "control")
    page = ControlPage(path)
    page.initialise(Control(appended=10, synced=9, commits=1, last_lsn=5, synced_lsn=4), 7)
    stale = page.read()
    assert stale is not None
    page.write_appended(100, 50)  # an appender, between the publisher's read and its write
    stale.synced, stale.synced_lsn, stale.commits = 10, 5, 2
    page.write(stale)
    got = page.read()
    assert got == Control(appended=100, synced=10, commits=2, last_lsn=50, synced_lsn=5)
    assert page.layout() == 2 and page.valid()
    page.close()


@pytest.mark.skipif(_platform.PORTABLE, reason="the mapped page; the portable path reads the file")
def test_a_reader_waiting_out_an_update_yields_its_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that finds the page mid-update gives its core away after a few tight spins.

    With more processes than cores the writer is usually descheduled
    mid-update; a reader spinning in Python kept it off the CPU (four writers
    on two cores spent a fifth of their CPU spinning here).
    """
    path = str(tmp_path / "control")
    page = ControlPage(path)
    page.initialise(Control(appended=10, synced=9), 1)
    c = page.read()
    assert c is not None
    yields: list[int] = []
    finish_after = 5

    def writer_runs() -> None:  # the descheduled writer gets the core and finishes its update
        yields.append(1)
        if len(yields) == finish_after:
            page.repair()

    monkeypatch.setattr(_platform, "yield_cpu", writer_runs)
    page._put(2, page._get(2) + 1)  # seq odd: a writer is mid-update
    assert page.read() == c
    assert len(yields) == finish_after
    page.close()


# ---------------------------------------------------------------------- overlay


def test_overlay_serves_only_synced_entries_and_prunes_folded_ones() -> None:
    ov = Overlay(100)
    ns = ("a",)
    ov.add(200, [(ns, "k", Entry(1, {"value": 1, "version": 1}))], synced=True)
    ov.add(300, [(ns, "k", Entry(2, {"value": 2, "version": 2})), (ns, "j", Entry(3, None))], synced=False)
    assert ov.get(ns, "k").lsn == 1  # type: ignore[union-attr]
    assert ov.get_latest(ns, "k").lsn == 2  # type: ignore[union-attr]
    assert ov.get(ns, "j") is None and ov.get_latest(ns, "j").record is None  # type: ignore[union-attr]
    ov.promote(250)  # not past the pending frame's end
    assert ov.get(ns, "k").lsn == 1  # type: ignore[union-attr]
    ov.promote(300)
    assert ov.get(ns, "k").lsn == 2 and ov.pos == 300  # type: ignore[union-attr]
    assert sorted(ov.prune(2)) == [(ns, "k")]
    assert ov.get(ns, "k") is None and ov.get(ns, "j") is not None and ov.count == 1


def test_overlay_latest_is_the_newest_pending_entry_across_frames_and_partial_promotes() -> None:
    # A writer's decision looks keys up among many pending frames (4 writers' unsynced
    # batches): the index must answer exactly as a scan of them newest-first would.
    ov = Overlay(100)
    a, b = ("a",), ("b",)
    ov.add(200, [(a, "k", Entry(1, {"value": 1})), (b, "k", Entry(2, {"value": 2}))], synced=False)
    ov.add(300, [(a, "k", Entry(3, {"value": 3})), (a, "k", Entry(4, None))], synced=False)
    ov.add(400, [(b, "j", Entry(5, {"value": 5}))], synced=False)
    assert ov.get_latest(a, "k").lsn == 4 and ov.get_latest(a, "k").record is None  # type: ignore[union-attr]
    assert ov.get_latest(b, "k").lsn == 2 and ov.get_latest(b, "j").lsn == 5  # type: ignore[union-attr]
    assert ov.get_latest(a, "j") is None and ov.get(a, "k") is None  # nothing synced yet
    ov.promote(200)  # the first frame only: (b, k) is committed now, the others still pending
    assert ov.get(b, "k").lsn == 2 and ov.get_latest(b, "k").lsn == 2  # type: ignore[union-attr]
    assert ov.get_latest(a, "k").lsn == 4 and ov.get(a, "k").lsn == 1  # type: ignore[union-attr]
    ov.promote(400)
    assert ov.latest == {} and ov.get_latest(a, "k").lsn == 4 and ov.get_latest(b, "j").lsn == 5  # type: ignore[union-attr]
    ov.add(500, [(a, "z", Entry(6, {"value": 6}))], synced=False)
    ov.reset(600, 6)
    assert ov.get_latest(a, "z") is None and ov.get_latest(a, "k") is None


# ---------------------------------------------------------------------- checkpoint


def test_checkpoint_round_trips_and_a_damaged_one_reads_as_none(tmp_path: Path) -> None:
    assert read_checkpoint(str(tmp_path)) is None
    write_checkpoint(str(tmp_path), Checkpoint(FIRST_POSITION + 64, 17), sync=True)
    assert read_checkpoint(str(tmp_path)) == Checkpoint(FIRST_POSITION + 64, 17)
    path = tmp_path / "checkpoint"
    path.write_bytes(path.read_bytes().replace(b"17", b"18"))
    assert read_checkpoint(str(tmp_path)) is None


# ---------------------------------------------------------------------- the coordinator


def _log(root: Path, **kw: Any) -> Log:
    (root / "wal").mkdir(exist_ok=True)
    return Log(str(root), readonly=kw.pop("readonly", False), sync=True, codecs=CODECS, lock_timeout_s=5.0, **kw)


def _put_decision(ns: tuple[str, ...], key: str, value: Any) -> Any:
    def decide(latest: Any, first: int, now: float) -> Any:
        prev = latest(ns, key)
        op = _put(ns, key, value)
        return [op], [first, prev.lsn if prev else 0], [(ns, key, Entry(first, {"value": value, "version": first}))]

    return decide


def test_two_handles_see_each_others_commits_at_the_next_refresh(tmp_path: Path) -> None:
    a, b = _log(tmp_path), _log(tmp_path)
    try:
        assert a.commit(_put_decision(("n",), "k", 1)) == [1, 0]
        assert b.changed()
        b.refresh()
        got = b.get(("n",), "k")
        assert got is not None and got.record is not None
        assert (got.record["value"], got.record["version"], got.record["created_at"]) == (1, 1, 1.5)
        assert not b.changed()
        assert b.commit(_put_decision(("n",), "k", 2)) == [2, 1]  # decided on a's record
        a.refresh()
        assert a.get(("n",), "k").lsn == 2  # type: ignore[union-attr]
    finally:
        a.close()
        b.close()


def test_fold_installs_the_newest_record_per_key_and_moves_the_checkpoint(tmp_path: Path) -> None:
    log = _log(tmp_path)
    got: list[Any] = []
    try:
        for i in range(5):
            log.commit(_put_decision(("n",), f"k{i % 2}", i))
        assert log.fold(lambda recs, _before: got.extend(recs), wait=True)
        assert [(k, lsn, r["value"]) for _, k, lsn, r in got] == [("k0", 5, 4), ("k1", 4, 3)]
        cp = read_checkpoint(str(tmp_path / "wal"))
        assert cp is not None and cp.folded_lsn == 5
        log.refresh()
        assert log.overlay.count == 0  # pruned: the shards hold them now
    finally:
        log.close()


def test_a_fold_that_dies_part_way_keeps_what_it_moved(tmp_path: Path) -> None:
    """Issue 13: the fold checkpoints every step, so a folder killed mid-fold costs one step, not the whole range."""
    log = _log(tmp_path, fold_step_bytes=4096)
    pad = "x" * 1000
    try:
        for i in range(40):  # ~40 KiB of log: about ten steps
            log.commit(_put_decision(("n",), f"k{i}", pad))
        calls: list[int] = []

        def install(records: list[Any], _before: float) -> None:
            calls.append(len(records))
            if len(calls) == 3:
                raise OSError(errno.EIO, "the folder dies here")

        with pytest.raises(StorageError):
            log.fold(install, wait=True)
        cp = read_checkpoint(str(tmp_path / "wal"))
        assert cp is not None and 0 < cp.folded_lsn < 40, cp  # two steps kept
        got: list[Any] = []
        assert log.fold(lambda recs, _before: got.extend(recs), wait=True)
        assert sorted(lsn for _, _, lsn, _ in got) == list(range(cp.folded_lsn + 1, 41))  # resumed there
        assert read_checkpoint(str(tmp_path / "wal")).folded_lsn == 40  # type: ignore[union-attr]
    finally:
        log.close()


def test_a_lost_control_page_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    log = _log(tmp_path)
    for i in range(3):
        log.commit(_put_decision(("n",), "k", i))
    log.close()
    os.unlink(tmp_path / "wal" / "control")
    again = _log(tmp_path)
    try:
        again.refresh()
        assert again.get(("n",), "k").lsn == 3  # type: ignore[union-attr]
        assert again.commit(_put_decision(("n",), "k", 9))[0] == 4  # numbers never repeat
    finally:
        again.close()


def test_a_failed_sync_is_fatal_for_the_handle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path)
    try:
        log.commit(_put_decision(("n",), "k", 1))

        def eio(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(_platform, "datasync", eio)
        with pytest.raises(StorageError):
            log.commit(_put_decision(("n",), "k", 2))
        monkeypatch.undo()
        with pytest.raises(StorageError):  # never retried into a false success
            log.commit(_put_decision(("n",), "k", 3))
    finally:
        log.close()


def test_the_unfolded_span_counts_past_an_oversized_segment(tmp_path: Path) -> None:
    """A position in a segment grown past ``segment_bytes`` (one frame bigger than a segment): the span stays right.

    The span is what the fold triggers and the back-pressure bound read: a
    negative one hid the whole backlog behind such a segment (issue 13).
    """
    (tmp_path / "wal").mkdir()
    log = Log(str(tmp_path), readonly=False, sync=False, codecs={}, lock_timeout_s=1.0, segment_bytes=1 << 20)
    try:
        header = _format.SEGMENT_HEADER_BYTES
        big_end = _format.position(2, header + (3 << 20))  # the end of a 3 MiB frame alone in segment 2
        assert log._span(big_end, _format.position(3, header + 100)) == header + 100
        assert log._span(_format.position(2, header), big_end) == 3 << 20
        assert log._span(_format.position(1, header), _format.position(3, header)) == (2 << 20)
        assert log._span(big_end, _format.position(5, 4096)) == (1 << 20) * 2 + 4096
        assert log._span(_format.position(1, 500), _format.position(1, 500)) == 0
    finally:
        log.close()
