"""The compact queues of the collector (_spool): first in, first out, nothing lost, against a deque model."""

from __future__ import annotations

import os
import tempfile
from array import array
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import filemem._collector._spool as spool
from filemem._collector._journal import (
    JournalFile,
    TailPacker,
    decode_frame,
    encode_frame,
    frame_tail,
    frame_with_seq,
)
from filemem._collector._journal_thread import Bell
from filemem._collector._spool import HOT_INBOX_RECORDS, Inbox, Rec, Spool, recs_of_runs, recs_of_taken, sealed
from filemem._errors import StorageError

ops = st.lists(
    st.one_of(
        st.tuples(st.just("packed"), st.integers(1, 50)),
        st.tuples(st.just("object"), st.integers(1, 3)),
        st.tuples(st.just("pop"), st.integers(1, 80)),
        st.tuples(st.just("runs"), st.integers(1, 80)),
        st.tuples(st.just("putback"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_spool_is_a_fifo_of_packed_and_object_records(script: list[tuple[str, int]]) -> None:
    spool = Spool(1)
    model: deque[tuple[int, int, int]] = deque()  # (seq, off, size); off -1: held as an object
    seq = 0
    for op, n in script:
        if op == "packed":
            for _ in range(n):
                seq += 1
                spool.append_packed(seq, seq * 100, seq % 7 + 1)
                model.append((seq, seq * 100, seq % 7 + 1))
        elif op == "object":
            for _ in range(n):
                seq += 1
                spool.append(Rec(seq, 1, 0.0, ("ns",), f"k{seq}", b"v"))
                model.append((seq, -1, 0))
        elif op == "pop":
            got = spool.take(n)
            want = [model.popleft() for _ in range(min(n, len(model)))]
            assert [(r.seq, r.off, r.size if r.off >= 0 else 0) for r in got] == want
            assert all(r.loaded == (r.off < 0) for r in got)
        elif op == "runs":
            # What the apply thread takes under the collector's lock: array slices, made into records after.
            runs = spool.take_runs(n)
            got = recs_of_runs(runs)
            want = [model.popleft() for _ in range(min(n, len(model)))]
            assert [(r.seq, r.off, r.size if r.off >= 0 else 0) for r in got] == want
            assert sum(run.n for run in runs) == len(got)
            assert all(run.n > 0 and run.prio == 1 for run in runs)
            if runs:
                assert min(run.first_seq for run in runs) == got[0].seq
            assert all(r.loaded == (r.off < 0) for r in got)
        elif model:
            r = spool.popleft()
            spool.appendleft(r)
        assert len(spool) == len(model)
        assert spool.head_seq() == (model[0][0] if model else None)
    assert [r.seq for r in spool.in_memory()] == [s for s, off, _ in model if off < 0]


def test_a_long_lived_packed_chunk_drops_its_consumed_head() -> None:
    spool = Spool(0)
    for i in range(20_000):
        spool.append_packed(i, i, 1)
        if i % 2:
            assert spool.popleft().seq == i // 2
    chunk = spool._chunks[0]
    assert len(chunk.seqs) < 20_000, "the consumed head was compacted away"
    assert [r.seq for r in spool.take(3)] == [10_000, 10_001, 10_002]


inbox_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 20)),
        st.tuples(st.just("fields"), st.integers(1, 20)),
        st.tuples(st.just("drop"), st.integers(1, 5)),
        st.tuples(st.just("undrop"), st.just(0)),
        st.tuples(st.just("take"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(inbox_ops, st.sampled_from([1, 3, HOT_INBOX_RECORDS]))
def test_inbox_holds_frames_in_order(script: list[tuple[str, int]], bound: int) -> None:
    """Records queued as frames or as fields come out as the journal's frames, in id order, whatever the mix."""
    saved = spool.HOT_INBOX_RECORDS
    spool.HOT_INBOX_RECORDS = bound  # a small bound: fields, then frames after them, in one take
    try:
        _run_inbox_script(script)
    finally:
        spool.HOT_INBOX_RECORDS = saved


def _run_inbox_script(script: list[tuple[str, int]]) -> None:
    inbox = Inbox("json")
    model: deque[tuple[int, int, bytes]] = deque()
    seq = 0
    dropped: list[tuple[int, int, bytes]] = []
    for op, n in script:
        if op in ("add", "fields"):
            for _ in range(n):
                seq += 1
                fields = (float(seq), ("a",), f"k{seq}", b"1" * (seq % 9))
                frame = encode_frame(seq, fields[0], seq % 3, fields[1], fields[2], "json", fields[3])
                if op == "add" or not inbox.add_fields(seq, seq % 3, fields):
                    inbox.add(seq, seq % 3, frame)
                model.append((seq, seq % 3, frame))
        elif op == "drop":
            for _ in range(min(n, len(model))):
                got = inbox.popleft()
                assert got == model.popleft()
                dropped.append(got)
        elif op == "undrop" and dropped:
            back = dropped.pop()
            inbox.appendleft(*back)
            model.appendleft(back)
        elif op == "take":
            raw = inbox.take_all()
            assert [r.seq for r in recs_of_taken(raw)] == [s for s, _, _ in model]  # (close()'s path)
            taken = sealed(raw, "json")
            assert taken.fields is None
            assert taken.data == b"".join(f for _, _, f in model)
            assert list(taken.seqs) == [s for s, _, _ in model]
            assert list(taken.prios) == [p for _, p, _ in model]
            assert list(taken.sizes) == [len(f) for _, _, f in model]
            if taken.hot is not None:  # the fields handed on must be the frames' own
                assert [h[2] for h in taken.hot] == [decode_frame(f).key for _, _, f in model]
            model.clear()
        assert len(inbox) == len(model)
        assert inbox.head_seq() == (model[0][0] if model else None)
        assert inbox.peek() == (model[0] if model else None)


def test_frames_made_in_two_steps_are_the_journal_frames() -> None:
    for seq in (1, 127, 128, 65_536, 2**33):
        args = (1764000000.25, 2, ("agent", "events"), "ev-1", "json", b'{"ok":true}')
        frame = frame_with_seq(seq, frame_tail(*args))
        assert frame == encode_frame(seq, *args)
        rec = decode_frame(frame)
        assert (rec.seq, rec.collected_at, rec.priority, rec.namespace, rec.key, rec.payload) == (
            seq,
            *args[:4],
            args[5],
        )


_LENGTHS = st.sampled_from([0, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536, 70_000])


@settings(max_examples=200, deadline=None)
@given(
    seq=st.one_of(st.integers(0, 300), st.sampled_from([65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1])),
    ts=st.floats(allow_nan=False, allow_infinity=False),
    prio=st.integers(0, 2),
    ns=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=20).map(tuple),
    key_len=_LENGTHS,
    key_char=st.sampled_from(["k", "\u00e9", "\U0001f600"]),
    payload_len=_LENGTHS,
    codec=st.sampled_from(["json", "msgpack", "c" * 40]),
)
def test_frames_packed_by_hand_are_msgpacks_byte_for_byte(
    seq: int, ts: float, prio: int, ns: tuple[str, ...], key_len: int, key_char: str, payload_len: int, codec: str
) -> None:
    """collect() packs frames with struct, not msgpack: the bytes must be msgpack's, at every header size."""
    key = key_char * min(key_len, 1024)
    payload = b"v" * payload_len
    want = encode_frame(seq, ts, prio, ns, key, codec, payload)
    assert frame_with_seq(seq, frame_tail(ts, prio, ns, key, codec, payload)) == want
    packer = TailPacker(codec)
    assert frame_with_seq(seq, packer.pack(ts, prio, ns, key, payload)) == want
    assert frame_with_seq(seq, packer.pack(ts, prio, ns, key, payload)) == want  # the namespace, cached
    rec = decode_frame(want)
    assert (rec.seq, rec.namespace, rec.key, rec.payload) == (seq, ns, key, payload)
    inbox = Inbox()  # collect()'s path in a burst: the frame written into the buffer piece by piece
    inbox.add_tail(seq, prio, packer.pack(ts, prio, ns, key, payload))
    taken = sealed(inbox.take_all(), codec)
    assert bytes(taken.data) == want and list(taken.sizes) == [len(want)] and list(taken.seqs) == [seq]
    assert taken.hot is None
    inbox = Inbox(codec)  # collect()'s usual path: the fields, packed by the journal thread
    assert inbox.add_fields(seq, prio, (ts, ns, key, payload))
    taken = sealed(inbox.take_all(), codec)
    assert bytes(taken.data) == want and list(taken.sizes) == [len(want)] and list(taken.seqs) == [seq]
    assert taken.hot == [(ts, ns, key, payload)]  # the fields handed on beside the frame


def test_hot_fields_stay_aligned_with_their_frames_or_are_dropped() -> None:
    """The fields handed on beside the frames must belong to them: after a pop or a put-back they are not."""

    def put(inbox: Inbox, seq: int) -> None:
        assert inbox.add_fields(seq, 1, (1.0, ("a",), f"k{seq}", b"1"))

    inbox = Inbox("json")
    for seq in (1, 2, 3):
        put(inbox, seq)
    assert [h[2] for h in sealed(inbox.take_all(), "json").hot or []] == ["k1", "k2", "k3"]
    for seq in (4, 5, 6):
        put(inbox, seq)
    assert inbox.popleft()[0] == 4  # (on_full="drop_oldest")
    inbox.appendleft(4, 1, encode_frame(4, 1.0, 1, ("a",), "k4", "json", b"1"))  # (its letter failed)
    put(inbox, 7)
    taken = sealed(inbox.take_all(), "json")
    assert list(taken.seqs) == [4, 5, 6, 7] and taken.hot is None  # not aligned any more: read back instead
    ends = [sum(taken.sizes[: i + 1]) for i in range(4)]
    keys = [decode_frame(taken.data[e - taken.sizes[i] : e]).key for i, e in enumerate(ends)]
    assert keys == ["k4", "k5", "k6", "k7"]
    put(inbox, 8)
    inbox.add(9, 1, frame_with_seq(9, frame_tail(1.0, 1, ("a",), "k9", "json", b"1")))  # a frame without fields
    assert not inbox.add_fields(10, 1, (1.0, ("a",), "k10", b"1"))  # after a frame, frames only (id order)
    taken = sealed(inbox.take_all(), "json")
    assert list(taken.seqs) == [8, 9] and taken.hot is None
    assert inbox.add_fields(10, 1, (1.0, ("a",), "k10", b"1"))  # fields again after the take


def test_a_burst_past_the_hot_bound_keeps_frames_alone() -> None:
    """A caller outrunning the journal thread must not keep ~300 bytes of fields per record (the memory figure)."""
    packer = TailPacker("json")
    inbox = Inbox("json")
    seq = 0
    while inbox.add_fields(seq + 1, 1, (1.0, ("a",), "k", b"1")):
        seq += 1
    assert seq == HOT_INBOX_RECORDS and inbox.framed  # no more fields kept than the bound
    inbox.add_tail(seq + 1, 1, packer.pack(1.0, 1, ("a",), "k", b"1"))
    taken = sealed(inbox.take_all(), "json")
    assert taken.hot is None and list(taken.seqs) == list(range(1, HOT_INBOX_RECORDS + 2))  # read back later
    assert not inbox.framed and inbox.add_fields(1, 1, (1.0, ("a",), "k", b"1"))  # fields again after the take
    assert sealed(inbox.take_all(), "json").hot == [(1.0, ("a",), "k", b"1")]
    assert Inbox().framed and not Inbox().add_fields(1, 1, (1.0, ("a",), "k", b"1"))  # no codec: frames only


def test_a_hot_spool_hands_whole_records_and_a_cold_one_stubs() -> None:
    """Hot runs carry each record's fields (no read back); packed ones only where the frame is."""
    q = Spool(1)
    q.extend_packed(
        array("q", [1, 2]),
        array("q", [10, 20]),
        array("I", [10, 10]),
        [(1.0, ("a",), "k1", b"1"), (2.0, ("a",), "k2", b"2")],
    )
    q.extend_packed(array("q", [3]), array("q", [30]), array("I", [10]))  # past the bound: cold
    q.extend_packed(array("q", [4]), array("q", [40]), array("I", [10]), [(4.0, ("b",), "k4", b"4")])
    head = q.head()
    assert head is not None and head.loaded and head.key == "k1"
    recs = recs_of_runs(q.take_runs(10))
    assert [(r.seq, r.loaded, r.key, r.off) for r in recs] == [
        (1, True, "k1", 10),
        (2, True, "k2", 20),
        (3, False, "", 30),
        (4, True, "k4", 40),
    ]
    assert recs[3].ns == ("b",) and recs[3].payload == b"4" and len(q) == 0


def test_taking_everything_from_the_inbox_hands_the_buffer_over_without_copying() -> None:
    inbox = Inbox()
    frames = [frame_with_seq(i, frame_tail(1.0, 1, ("a",), f"k{i}", "json", b"1")) for i in range(1, 4)]
    for i, f in enumerate(frames, 1):
        inbox.add(i, 1, f)
    buf = inbox._buf
    taken = inbox.take_all()
    assert taken.data is buf and taken.data == b"".join(frames)
    assert list(taken.seqs) == [1, 2, 3] and not inbox and inbox._buf is not buf
    inbox.add(4, 0, frames[0])  # the inbox starts a new buffer: what was taken is not touched
    assert taken.data == b"".join(frames) and list(taken.seqs) == [1, 2, 3]


def test_a_bell_rung_once_wakes_one_wait_and_rings_are_not_counted() -> None:
    bell = Bell()
    assert not bell.wait(0.0)
    bell.ring()
    bell.ring()  # a second ring before the wait is the same ring
    assert bell.wait(0.0)
    assert not bell.wait(0.01)


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 2**40)),
            st.integers(0, 2),
            st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3).map(tuple),
            st.text(min_size=1, max_size=40),
            st.binary(max_size=300),
        ),
        min_size=1,
        max_size=20,
    ),
    gap_at=st.integers(0, 19),
)
def test_read_fields_gives_what_read_frames_gives(
    records: list[tuple[float, int, tuple[str, ...], str, bytes]], gap_at: int
) -> None:
    """The apply thread's lighter decode reads back every frame exactly as the full decode does."""
    with tempfile.TemporaryDirectory() as tmp:
        _read_back_both_ways(tmp, records, gap_at)


def _read_back_both_ways(tmp: str, records: list[tuple[float, int, tuple[str, ...], str, bytes]], gap_at: int) -> None:
    journal = JournalFile(os.path.join(tmp, "journals"), "j1", sync=False)
    try:
        spans = []
        for seq, (ts, prio, ns, key, payload) in enumerate(records, 1):
            frame = encode_frame(seq, ts, prio, ns, key, "json", payload)  # an int timestamp takes the full check
            spans.append((journal.offset, len(frame)))
            journal.append(frame)
        spans = spans[:gap_at] + spans[gap_at + 1 :] if len(spans) > 1 else spans  # runs with a hole in them
        got = journal.read_fields([o for o, _ in spans], [n for _, n in spans])
        want = journal.read_frames(spans)
        assert [(seq, ts, prio, ns, key, codec, payload) for seq, ts, prio, ns, key, codec, payload in got] == [
            (r.seq, r.collected_at, r.priority, r.namespace, r.key, r.codec, r.payload) for r in want
        ]
        assert all(type(f[1]) is float and type(f[3]) is tuple for f in got)
    finally:
        journal.release()


def test_read_fields_refuses_a_frame_that_does_not_read_back(tmp_path: Path) -> None:
    journal = JournalFile(str(tmp_path / "journals"), "jbad", sync=False)
    try:
        frame = encode_frame(1, 1.0, 1, ("a",), "k", "json", b"12345")
        off = journal.offset
        journal.append(frame)
        os.pwrite(journal.fd, b"X", off + len(frame) - 1)  # the checksum no longer matches
        with pytest.raises(StorageError, match="does not read back"):
            journal.read_fields([off], [len(frame)])
    finally:
        journal.release()
