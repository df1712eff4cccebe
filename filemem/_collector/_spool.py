"""The line of records waiting to be applied, per priority, held compactly (layer L4).

Invariant: a record the journal holds waits here as three numbers (its id,
and where its frame starts in the journal file and how long it is: 20 bytes
in packed arrays), not as a Python object; the apply side reads its frame
back when it takes it. Records the journal does not hold (a collector without
a journal, or records handed on unjournaled while closing with a failing
journal) wait as :class:`Rec` objects. Order is first in, first out; records
put back go to the front. While few records wait (the journal thread bounds
it), a journaled record also keeps the tuple ``collect()`` queued (*hot*), so
the apply side builds it without reading its frame back.

:class:`Inbox` holds what ``collect()`` queued and the journal thread has not
written yet, one tuple a record, and only briefly: the journal thread takes
the whole list at each wake and packs the frames (:func:`pack_group`), outside
the lock ``collect()`` waits for and off the caller's thread.

Why: a million queued records cost 298 bytes each as objects (313.6 MB),
against the seeds' budget of 50 MB for queue and cache. Their frames are
already on disk (in the page cache, not in this process's memory), written
and fsynced by the journal thread before the record was handed on.
"""

from __future__ import annotations

from array import array
from collections import deque
from typing import Final, NamedTuple
from zlib import crc32

from ._journal import FRAME, TailPacker, pack_uint

__all__ = [
    "Inbox",
    "Item",
    "Rec",
    "Run",
    "Spool",
    "Taken",
    "pack_group",
    "recs_of_hot",
    "recs_of_items",
    "recs_of_runs",
]

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


#: A record as ``collect()`` queues it: (id, priority, collected_at, namespace, key, payload), the
#: arguments of :class:`Rec`. The spools keep it beside its frame while few records wait (*hot*).
Item = tuple[int, int, float, tuple[str, ...], str, bytes]


class _Packed:
    """Journaled records: ids, frame offsets and sizes in parallel arrays; ``head`` is the next to take.

    ``hot``: the records' fields too, in a list beside the arrays (None: read them back from the journal).
    """

    __slots__ = ("head", "hot", "offs", "seqs", "sizes")

    def __init__(self, hot: bool = False) -> None:
        self.seqs = array("q")
        self.offs = array("q")
        self.sizes = array("I")
        self.hot: list[Item] | None = [] if hot else None
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
        self, seqs: array[int], offs: array[int], sizes: array[int], hot: list[Item] | None = None
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
    """Records ``collect()`` queued and the journal thread has not written yet, in order, each one :data:`Item`.

    Not thread-safe (the collector's lock guards it). ``collect()`` adds one
    tuple (the fields it has anyway); ``take_all`` hands the whole list to the
    journal thread at once, which packs the frames outside the lock
    (:func:`pack_group`); ``popleft``/``appendleft`` serve ``on_full="drop_oldest"``.
    """

    __slots__ = ("_front", "_head", "_items")

    def __init__(self) -> None:
        self._items: list[Item] = []
        self._head = 0  # next entry of the list to take
        self._front: deque[Item] = deque()  # records put back, before the list

    def __len__(self) -> int:
        return len(self._front) + len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self) > 0

    def add(self, item: Item) -> None:
        """Queue one record at the back (collect()'s path, under its lock: one append)."""
        self._items.append(item)

    def head_seq(self) -> int | None:
        if self._front:
            return self._front[0][0]
        return self._items[self._head][0] if self._head < len(self._items) else None

    def popleft(self) -> Item:
        """The oldest record. IndexError if empty."""
        if self._front:
            return self._front.popleft()
        i = self._head
        if i >= len(self._items):
            raise IndexError("pop from an empty inbox")
        got = self._items[i]
        self._head = i + 1
        if self._head == len(self._items):
            self.take_all()  # empty: start the list over
        return got

    def appendleft(self, item: Item) -> None:
        self._front.appendleft(item)

    def peek(self) -> Item | None:
        """The oldest record, left in place."""
        if self._front:
            return self._front[0]
        return self._items[self._head] if self._head < len(self._items) else None

    def take_all(self) -> list[Item]:
        """Everything queued, in order, and the inbox emptied.

        In the common case (nothing put back or popped) the list itself is
        handed over, with no copy: the caller holds the collector's lock,
        which ``collect()`` waits for.
        """
        items = self._items
        if self._front or self._head:
            items = [*self._front, *items[self._head :]]
            self._front.clear()
        self._items = []
        self._head = 0
        return items


def pack_group(items: list[Item], packer: TailPacker) -> Taken:
    """The journal frames of ``items``, back to back, with each one's id, priority and size (the journal thread's).

    Byte for byte what :func:`~filemem._collector._journal.encode_frame` makes for each record.
    """
    parts: list[bytes] = []
    sizes = array("I")
    pack = packer.pack
    head_size = FRAME.size
    for seq, prio, ts, ns, key, payload in items:
        tail = pack(ts, prio, ns, key, payload)
        head = b"\x97" + pack_uint(seq)  # a 7-element array: the id, then the tail's six fields
        body = len(head) + len(tail)
        parts += (FRAME.pack(body, crc32(tail, crc32(head))), head, tail)
        sizes.append(head_size + body)
    return Taken(
        b"".join(parts), array("q", [it[0] for it in items]), array("b", [it[1] for it in items]), sizes, items
    )


class Taken(NamedTuple):
    """A group the journal thread packed (:func:`pack_group`): the frames back to back, each one's id, priority, size.

    ``hot``: the records themselves, in the same order.
    """

    data: bytes | bytearray
    seqs: array[int]
    prios: array[int]
    sizes: array[int]
    hot: list[Item]


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
    hot: list[Item] | None = None

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
    return [Rec(*item, off, size) for item, off, size in zip(run.hot, run.offs, run.sizes, strict=True)]


def chunk_rec(chunk: _Packed, i: int, prio: int) -> Rec:
    """Entry ``i`` of a packed chunk as a record: whole if hot, else a stub."""
    if chunk.hot is not None:
        return Rec(*chunk.hot[i], chunk.offs[i], chunk.sizes[i])
    return Rec.stub(chunk.seqs[i], prio, chunk.offs[i], chunk.sizes[i])


def recs_of_items(items: list[Item]) -> list[Rec]:
    """Queued records (not journaled) as objects."""
    return [Rec(*item) for item in items]
