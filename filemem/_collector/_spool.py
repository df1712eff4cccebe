"""The line of records waiting to be applied, per priority, held compactly (layer L4).

Invariant: a record the journal holds waits here as three numbers (its id,
and where its frame starts in the journal file and how long it is: 20 bytes
in packed arrays), not as a Python object; the apply side reads its frame
back when it takes it. Records the journal does not hold (a collector without
a journal, or records handed on unjournaled while closing with a failing
journal) wait as :class:`Rec` objects. Order is first in, first out; records
put back go to the front.

:class:`Inbox` holds what ``collect()`` queued and the journal thread has not
written yet: a few thousand records as their fields (the journal thread packs
their frames, off ``collect()``'s path), and past that bound as the journal
frames themselves, appended to one buffer (about 100 bytes a record instead
of a 300-byte object), which the journal thread writes as it is.

Why: a million queued records cost 298 bytes each as objects (313.6 MB),
against the seeds' budget of 50 MB for queue and cache. Their frames are
already on disk (in the page cache, not in this process's memory), written
and fsynced by the journal thread before the record was handed on.
"""

from __future__ import annotations

import struct
from array import array
from collections import deque
from typing import Final, NamedTuple
from zlib import crc32

from ._journal import FRAME, decode_frame, encode_frame, pack_frames, pack_uint

__all__ = [
    "HOT_INBOX_RECORDS",
    "Hot",
    "Inbox",
    "Rec",
    "Run",
    "Spool",
    "Taken",
    "rec_of_frame",
    "recs_of_hot",
    "recs_of_runs",
    "recs_of_taken",
    "sealed",
]

#: Most records the inbox keeps as fields (beyond it, records come as frames and the group is handed on cold).
HOT_INBOX_RECORDS: Final = 8192
#: A frame's first bytes: msgpack's 7-element array header, then the id as uint 16 / uint 32.
_SEQ_U16: Final = struct.Struct(">BBH")
_SEQ_U32: Final = struct.Struct(">BBI")
#: Drop the consumed head of a packed chunk once this many entries are consumed (and half of it).
_COMPACT_AFTER: Final = 4096


class Rec:
    """One queued record (kept small: a million may wait).

    ``off``/``size``: where its frame is in the journal (``off`` -1: not in
    the journal). A record taken from a :class:`Spool` starts with only
    ``seq``, ``prio``, ``off`` and ``size``; ``loaded`` tells whether the rest
    was read back from the journal yet.
    """

    __slots__ = ("key", "loaded", "ns", "off", "payload", "prio", "seq", "size", "ts")

    def __init__(
        self,
        seq: int,
        prio: int,
        ts: float,
        ns: tuple[str, ...],
        key: str,
        payload: bytes,
        off: int = -1,
        size: int = 0,
    ) -> None:
        self.seq = seq
        self.prio = prio
        self.ts = ts
        self.ns = ns
        self.key = key
        self.payload = payload
        self.off = off
        self.size = size
        self.loaded = True

    @classmethod
    def stub(cls, seq: int, prio: int, off: int, size: int) -> Rec:
        """A journaled record whose fields are still in its frame (see ``_journal.load_records``)."""
        r = cls(seq, prio, 0.0, (), "", b"", off, size)
        r.loaded = False
        return r


#: A journaled record's fields kept beside its frame (a *hot* record): collected_at, namespace, key, payload.
Hot = tuple[float, tuple[str, ...], str, bytes]


class _Packed:
    """Journaled records: ids, frame offsets and sizes in parallel arrays; ``head`` is the next to take.

    ``hot``: the records' fields too, in a list beside the arrays (None: read them back from the journal).
    """

    __slots__ = ("head", "hot", "offs", "seqs", "sizes")

    def __init__(self, hot: bool = False) -> None:
        self.seqs = array("q")
        self.offs = array("q")
        self.sizes = array("I")
        self.hot: list[Hot] | None = [] if hot else None
        self.head = 0

    def __len__(self) -> int:
        return len(self.seqs) - self.head

    def compact(self) -> None:
        """Drop the consumed head (dead weight in a long-lived chunk appended to while taken from)."""
        h = self.head
        del self.seqs[:h], self.offs[:h], self.sizes[:h]
        if self.hot is not None:
            del self.hot[:h]
        self.head = 0


class Spool:
    """FIFO of records of one priority; see the module docstring. Not thread-safe (the collector's lock guards it)."""

    __slots__ = ("_chunks", "_count", "prio")

    def __init__(self, prio: int) -> None:
        self.prio = prio
        self._chunks: deque[_Packed | deque[Rec]] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def append(self, rec: Rec) -> None:
        """Add one record at the back: packed if the journal holds it, else as the object."""
        if rec.off >= 0:
            self.append_packed(rec.seq, rec.off, rec.size)
            return
        tail = self._chunks[-1] if self._chunks else None
        if not isinstance(tail, deque):
            tail = deque()
            self._chunks.append(tail)
        tail.append(rec)
        self._count += 1

    def append_packed(self, seq: int, off: int, size: int) -> None:
        """Add a journaled record at the back, by where its frame is."""
        tail = self._chunks[-1] if self._chunks else None
        if not isinstance(tail, _Packed) or tail.hot is not None:
            tail = _Packed()
            self._chunks.append(tail)
        tail.seqs.append(seq)
        tail.offs.append(off)
        tail.sizes.append(size)
        self._count += 1

    def extend_packed(
        self, seqs: array[int], offs: array[int], sizes: array[int], hot: list[Hot] | None = None
    ) -> None:
        """Add journaled records at the back, by where their frames are (three arrays of one length).

        ``hot``: their fields as well (one per record), kept so that the apply
        side need not read them back; the caller bounds how many wait so.
        """
        tail = self._chunks[-1] if self._chunks else None
        if not isinstance(tail, _Packed) or (tail.hot is None) != (hot is None):
            tail = _Packed(hot is not None)
            self._chunks.append(tail)
        tail.seqs.extend(seqs)
        tail.offs.extend(offs)
        tail.sizes.extend(sizes)
        if hot is not None:
            assert tail.hot is not None
            tail.hot += hot
        self._count += len(seqs)

    def appendleft(self, rec: Rec) -> None:
        """Put one record back at the front (a batch interrupted, a drop undone)."""
        if rec.off >= 0 and not rec.loaded:
            chunk = _Packed()
            chunk.seqs.append(rec.seq)
            chunk.offs.append(rec.off)
            chunk.sizes.append(rec.size)
            self._chunks.appendleft(chunk)
        else:
            self._chunks.appendleft(deque([rec]))
        self._count += 1

    def head_seq(self) -> int | None:
        """The id of the record at the front, or None."""
        for chunk in self._chunks:
            if isinstance(chunk, deque):
                if chunk:
                    return chunk[0].seq
            elif len(chunk):
                return chunk.seqs[chunk.head]
        return None

    def head(self) -> Rec | None:
        """The record at the front (a stub if packed), left in place; None if empty."""
        for chunk in self._chunks:
            if isinstance(chunk, deque):
                if chunk:
                    return chunk[0]
            elif len(chunk):
                return chunk_rec(chunk, chunk.head, self.prio)
        return None

    def popleft(self) -> Rec:
        """Take the record at the front (a stub if packed). IndexError if empty."""
        while self._chunks:
            chunk = self._chunks[0]
            if isinstance(chunk, deque):
                if chunk:
                    self._count -= 1
                    rec = chunk.popleft()
                    if not chunk:
                        self._chunks.popleft()
                    return rec
            elif len(chunk):
                i = chunk.head
                rec = chunk_rec(chunk, i, self.prio)
                chunk.head = i + 1
                self._count -= 1
                if not len(chunk):
                    self._chunks.popleft()
                elif chunk.head >= _COMPACT_AFTER and chunk.head * 2 >= len(chunk.seqs):
                    chunk.compact()
                return rec
            self._chunks.popleft()
        raise IndexError("pop from an empty spool")

    def take(self, n: int) -> list[Rec]:
        """Take up to ``n`` records from the front."""
        out: list[Rec] = []
        while self._count and len(out) < n:
            out.append(self.popleft())
        return out

    def take_runs(self, n: int) -> list[Run]:
        """Take up to ``n`` records from the front as runs: slices of the packed arrays, or objects.

        No per-record work for packed records (three array slices per run):
        the caller holds the collector's lock, which ``collect()`` waits for;
        :func:`recs_of_runs` makes the records afterwards, without the lock.
        """
        out: list[Run] = []
        while self._count and n > 0:
            chunk = self._chunks[0]
            if isinstance(chunk, deque):
                k = min(n, len(chunk))
                out.append(Run(self.prio, k, None, None, None, [chunk.popleft() for _ in range(k)]))
            else:
                i = chunk.head
                k = min(n, len(chunk))
                hot = chunk.hot
                out.append(
                    Run(
                        self.prio,
                        k,
                        chunk.seqs[i : i + k],
                        chunk.offs[i : i + k],
                        chunk.sizes[i : i + k],
                        None,
                        None if hot is None else hot[i : i + k],
                    )
                )
                chunk.head = i + k
                if len(chunk) and chunk.head >= _COMPACT_AFTER and chunk.head * 2 >= len(chunk.seqs):
                    chunk.compact()
            self._count -= k
            n -= k
            if not len(chunk):
                self._chunks.popleft()
        return out

    def in_memory(self) -> list[Rec]:
        """The records held as objects (the journal does not hold them)."""
        return [r for chunk in self._chunks if isinstance(chunk, deque) for r in chunk]

    def clear(self) -> None:
        self._chunks.clear()
        self._count = 0


class Inbox:
    """What ``collect()`` queued and the journal thread has not written yet, in id order.

    Two forms, one line: while the journal thread keeps up, a record waits as
    its fields (``add_fields``: its id and priority in arrays, a :data:`Hot`
    tuple beside them) and the journal thread packs its frame, outside
    ``collect()``'s path (issue 13: packing the frame in the caller's thread
    was a third of ``collect()``, cold after a paced caller's sleep). Once
    :data:`HOT_INBOX_RECORDS` wait so (a burst outruns the journal thread),
    further records come as journal frames in one buffer (``add_tail``,
    ``add``; ``framed`` is then True): ~100 bytes a record instead of ~300,
    the 1M-queued memory figure. Fields always come before frames, and
    records put back (``appendleft``: on_full="drop_oldest") before both.

    Not thread-safe (the collector's lock guards it). ``take_all`` hands the
    whole content to the journal thread at once, without copying.
    """

    __slots__ = (
        "_buf",
        "_codec",
        "_front",
        "_head",
        "_off",
        "_phot",
        "_pprios",
        "_prios",
        "_pseqs",
        "_seqs",
        "_sizes",
        "framed",
    )

    def __init__(self, codec: str | None = None) -> None:
        #: The codec name written into a frame this inbox packs (None: it keeps no fields, frames only).
        self._codec = codec
        self._pseqs = array("q")
        self._pprios = array("b")
        self._phot: list[Hot] = []
        self._buf = bytearray()
        self._seqs = array("q")
        self._prios = array("b")
        self._sizes = array("I")
        self._head = 0  # next framed entry to take
        self._off = 0  # its offset in the buffer
        self._front: deque[tuple[int, int, bytes]] = deque()  # records put back, before everything
        #: New records must come as frames (``add_fields`` refuses them): read without the lock by
        #: collect(), which packs the frame outside the lock then (a stale read only costs a pack).
        self.framed = codec is None

    def __len__(self) -> int:
        return len(self._front) + len(self._pseqs) + len(self._seqs) - self._head

    def __bool__(self) -> bool:
        return len(self) > 0

    def add_fields(self, seq: int, prio: int, hot: Hot) -> bool:
        """Queue a record as its fields (collect()'s path, under its lock); False: it must come as a frame."""
        if self.framed:
            return False
        self._pseqs.append(seq)
        self._pprios.append(prio)
        phot = self._phot
        phot.append(hot)
        if len(phot) >= HOT_INBOX_RECORDS:
            self.framed = True
        return True

    def add(self, seq: int, prio: int, frame: bytes) -> None:
        self._buf += frame
        self._seqs.append(seq)
        self._prios.append(prio)
        self._sizes.append(len(frame))
        self.framed = True

    def add_tail(self, seq: int, prio: int, tail: bytes) -> None:
        """``add(seq, prio, frame_with_seq(seq, tail))``, written into the buffer piece by piece.

        collect()'s path when the inbox is ``framed``, under its lock: no joined frame object, one call.
        """
        # A 7-element array: the id, then the tail's six fields. One struct call for the two usual
        # id sizes (pack_uint is a call more, on collect()'s path under its lock).
        if 65536 <= seq < 4294967296:
            head = _SEQ_U32.pack(0x97, 0xCE, seq)
        elif 256 <= seq < 65536:
            head = _SEQ_U16.pack(0x97, 0xCD, seq)
        else:
            head = b"\x97" + pack_uint(seq)
        body = len(head) + len(tail)
        buf = self._buf
        buf += FRAME.pack(body, crc32(tail, crc32(head)))
        buf += head
        buf += tail
        self._seqs.append(seq)
        self._prios.append(prio)
        self._sizes.append(FRAME.size + body)
        self.framed = True

    def head_seq(self) -> int | None:
        if self._front:
            return self._front[0][0]
        if self._pseqs:
            return self._pseqs[0]
        return self._seqs[self._head] if self._head < len(self._seqs) else None

    def _fields_frame(self, i: int) -> tuple[int, int, bytes]:
        """Entry ``i`` of the records queued as fields, as (id, priority, frame)."""
        assert self._codec is not None
        seq, prio = self._pseqs[i], self._pprios[i]
        ts, ns, key, payload = self._phot[i]
        return seq, prio, encode_frame(seq, ts, prio, ns, key, self._codec, payload)

    def popleft(self) -> tuple[int, int, bytes]:
        """The oldest (id, priority, frame). IndexError if empty."""
        if self._front:
            return self._front.popleft()
        if self._pseqs:
            got = self._fields_frame(0)
            del self._pseqs[0], self._pprios[0], self._phot[0]  # (on_full="drop_oldest" only: rare)
        else:
            i = self._head
            if i >= len(self._seqs):
                raise IndexError("pop from an empty inbox")
            size = self._sizes[i]
            got = self._seqs[i], self._prios[i], bytes(self._buf[self._off : self._off + size])
            self._head, self._off = i + 1, self._off + size
        if not self:
            self.take_all()  # empty: start over (fields first, a new buffer)
        return got

    def appendleft(self, seq: int, prio: int, frame: bytes) -> None:
        self._front.appendleft((seq, prio, frame))

    def peek(self) -> tuple[int, int, bytes] | None:
        """The oldest (id, priority, frame), left in place."""
        if self._front:
            return self._front[0]
        if self._pseqs:
            return self._fields_frame(0)
        i = self._head
        if i >= len(self._seqs):
            return None
        return self._seqs[i], self._prios[i], bytes(self._buf[self._off : self._off + self._sizes[i]])

    def take_all(self) -> Taken:
        """Everything queued, in order, and the inbox emptied.

        In the common case (nothing put back or popped) the arrays, the
        fields and the buffer themselves are handed over, with no copy and no
        per-record work: the caller holds the collector's lock, which
        ``collect()`` waits for. The records queued as fields come as
        ``Taken.fields``, to be packed with :func:`sealed` outside the lock.
        """
        h = self._head
        if not self._front and h == 0:
            fields = (self._pseqs, self._pprios, self._phot) if self._pseqs else None
            taken = Taken(self._buf, self._seqs, self._prios, self._sizes, None, fields)
        else:
            # Something was put back or popped (on_full="drop_oldest"): rare, so copied and packed here.
            front = list(self._front)
            front += [self._fields_frame(i) for i in range(len(self._pseqs))]
            taken = Taken(
                b"".join(frame for _, _, frame in front) + bytes(memoryview(self._buf)[self._off :]),
                array("q", [seq for seq, _, _ in front]) + self._seqs[h:],
                array("b", [prio for _, prio, _ in front]) + self._prios[h:],
                array("I", [len(frame) for _, _, frame in front]) + self._sizes[h:],
            )
        self._pseqs, self._pprios, self._phot = array("q"), array("b"), []
        self._buf = bytearray()
        self._seqs, self._prios, self._sizes = array("q"), array("b"), array("I")
        self._head = self._off = 0
        self._front.clear()
        self.framed = self._codec is None
        return taken


class Taken(NamedTuple):
    """What the journal thread took from the inbox: frames back to back, and each one's id, priority, size.

    ``fields``: records queued before those frames as their fields (ids,
    priorities, :data:`Hot` tuples), not packed yet: :func:`sealed` packs
    them. ``hot``: each frame's fields, when known for every frame (else None).
    """

    data: bytes | bytearray
    seqs: array[int]
    prios: array[int]
    sizes: array[int]
    hot: list[Hot] | None = None
    fields: tuple[array[int], array[int], list[Hot]] | None = None

    @property
    def first_seq(self) -> int:
        """The id of the first record (a group taken is never empty)."""
        return self.fields[0][0] if self.fields is not None else self.seqs[0]


def sealed(taken: Taken, codec: str) -> Taken:
    """``taken`` with its records queued as fields packed into frames, before the others (no ``fields`` left).

    The journal thread's work, outside the collector's lock. The fields stay
    as ``hot`` when no frame followed them (the apply side then reads nothing back).
    """
    if taken.fields is None:
        return taken
    seqs, prios, hot = taken.fields
    data, sizes = pack_frames(seqs, prios, hot, codec)
    if not taken.seqs:
        return Taken(data, seqs, prios, sizes, hot)
    return Taken(data + taken.data, seqs + taken.seqs, prios + taken.prios, sizes + taken.sizes)


class Run(NamedTuple):
    """Records taken from a :class:`Spool` in one piece: packed (``seqs``/``offs``/``sizes``) or ``recs``.

    ``hot``: a packed run's fields, when they were kept (see :meth:`Spool.extend_packed`).
    """

    prio: int
    n: int
    seqs: array[int] | None
    offs: array[int] | None
    sizes: array[int] | None
    recs: list[Rec] | None
    hot: list[Hot] | None = None

    @property
    def first_seq(self) -> int:
        """The id of the run's first record (runs are never empty)."""
        return self.recs[0].seq if self.recs is not None else self.seqs[0]  # type: ignore[index]


def recs_of_runs(runs: list[Run]) -> list[Rec]:
    """The records of runs taken with :meth:`Spool.take_runs` (stubs for packed ones not hot), in order."""
    out: list[Rec] = []
    stub = Rec.stub
    for run in runs:
        if run.recs is not None:
            out += run.recs
        elif run.hot is not None:
            out += recs_of_hot(run)
        else:
            assert run.seqs is not None and run.offs is not None and run.sizes is not None
            prio = run.prio
            out += [stub(seq, prio, off, size) for seq, off, size in zip(run.seqs, run.offs, run.sizes, strict=True)]
    return out


def recs_of_hot(run: Run) -> list[Rec]:
    """The records of a hot packed run, whole (no read back from the journal)."""
    assert run.seqs is not None and run.offs is not None and run.sizes is not None and run.hot is not None
    prio = run.prio
    return [
        Rec(seq, prio, *f, off, size) for seq, off, size, f in zip(run.seqs, run.offs, run.sizes, run.hot, strict=True)
    ]


def chunk_rec(chunk: _Packed, i: int, prio: int) -> Rec:
    """Entry ``i`` of a packed chunk as a record: whole if hot, else a stub."""
    if chunk.hot is not None:
        ts, ns, key, payload = chunk.hot[i]
        return Rec(chunk.seqs[i], prio, ts, ns, key, payload, chunk.offs[i], chunk.sizes[i])
    return Rec.stub(chunk.seqs[i], prio, chunk.offs[i], chunk.sizes[i])


def rec_of_frame(seq: int, prio: int, frame: bytes | bytearray) -> Rec:
    """The record in a frame that waited in the inbox, as an object."""
    got = decode_frame(frame)
    return Rec(seq, prio, got.collected_at, got.namespace, got.key, got.payload)


def recs_of_taken(taken: Taken) -> list[Rec]:
    """The records of what was taken from the inbox, as objects."""
    out: list[Rec] = []
    if taken.fields is not None:
        seqs, prios, hot = taken.fields
        out += [Rec(seq, prio, *fields) for seq, prio, fields in zip(seqs, prios, hot, strict=True)]
    pos = 0
    for seq, prio, size in zip(taken.seqs, taken.prios, taken.sizes, strict=True):
        out.append(rec_of_frame(seq, prio, taken.data[pos : pos + size]))
        pos += size
    return out
