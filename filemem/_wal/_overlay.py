"""The per-process overlay of unfolded log records (layer L2).

Records the log holds but the shard files may not yet, by namespace and key,
newest per key. Reads look here first and fall back to the shards.

Two parts, and why:

* ``committed``: records up to ``pos``, a position the log has *synced*. Only
  these are ever served to readers: a record that is not yet durable must not
  be visible (another process could act on it, then lose it to a power cut).
* ``pending``: records between ``pos`` and ``tail`` (written by any process,
  not yet known to be synced). A writer deciding a conditional write under the
  append lock must see them (they are before it in the log); nobody else does.
  They move to ``committed`` when the synced position passes their end.
  ``latest`` indexes them by key (newest wins): a writer deciding a batch of a
  thousand records looks each up under the append lock, and a scan of every
  pending change per lookup held that lock for seconds once four writers'
  unsynced frames queued up (issue 13).

Entries whose sequence number the fold has put into the shards are pruned
(:meth:`Overlay.prune`), so the overlay stays bounded by the fold threshold;
the caller forgets its cached copies of the shards they belong to.

Invariant: for every key, ``committed`` holds its newest record in
``(pruned_lsn, pos]`` if it has one, and nothing older than that; ``latest``
holds exactly the newest entry of each key that has one in ``pending``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._carry import Carried, Header, is_carried_float
from ._format import LogOp, put_header

__all__ = ["Entry", "Overlay"]


class Entry:
    """One key's newest unfolded record: its sequence number and the record (None: deleted).

    A record read from another process's frame is decoded on first use: a
    writer brings the overlay to the log's end under the append lock, and
    decoding every other writer's values there lengthened the lock's hold by
    the codec's time for records nobody in this process may ever read. Until
    then the entry holds the logged op, the frame's time and the log's one
    shared ``decode`` (no closure per entry: a partial and its argument tuple
    were a fifth of an unfolded record's memory in every process, issue 13).
    Two threads that decode at once store equal records.
    """

    __slots__ = ("_decode", "_now", "_op", "_record", "lsn")

    def __init__(
        self,
        lsn: int,
        record: dict[str, Any] | None,
        op: Any = None,
        now: float = 0.0,
        decode: Callable[[Any, int, float], dict[str, Any] | None] | None = None,
    ) -> None:
        self.lsn = lsn
        self._record = record
        self._op = op if decode is not None else None
        self._now = now
        self._decode = decode

    @property
    def record(self) -> dict[str, Any] | None:
        decode = self._decode
        if decode is not None:
            self._record = decode(self._op, self.lsn, self._now)  # before _decode goes: no _decode = decoded
            self._decode = None
            self._op = None  # the codec bytes are not needed any more
        return self._record

    def header(self) -> Header:
        """(created_at, expires_at) of the record, None for a delete, without decoding its value if it can.

        What a later put of the key logged as carried over needs of it (the
        chain rule, see _carry). ``created_at`` may be a :class:`Carried`
        (then it is this put's own, resolved against the record before it).
        Frame entries (``(payload, indexed op[, carried base])``) and this
        process's puts logged as bytes (a :class:`LogOp`) are read in place;
        anything else is decoded.
        """
        if self._decode is None:
            rec = self._record
            return None if rec is None else (rec["created_at"], rec.get("expires_at"))
        op = self._op
        base: Any = None
        if isinstance(op, LogOp):
            created, expires = op.created_at, op.expires_at
        elif type(op) is tuple and type(op[1]) is tuple:
            created, expires = put_header(op[0], op[1])
            if len(op) == 3:
                base = op[2]
        else:
            rec = self.record
            return None if rec is None else (rec["created_at"], rec.get("expires_at"))
        if is_carried_float(created):
            return (Carried(self._now) if base is None else base), expires
        return created, expires

    @property
    def deleted(self) -> bool:
        """Whether the entry is a delete (without decoding a record)."""
        return self._decode is None and self._record is None

    def __repr__(self) -> str:
        return f"Entry({self.lsn}, {self.record!r})"


Change = tuple[tuple[str, ...], str, Entry]


class Overlay:
    """Unfolded records of one store in one process. The caller serialises changes."""

    def __init__(self, pos: int) -> None:
        self.committed: dict[tuple[str, ...], dict[str, Entry]] = {}
        self.pos = pos
        self.tail = pos
        self.pending: list[tuple[int, list[Change]]] = []
        #: The newest pending entry of each key with one (see the module docstring).
        self.latest: dict[tuple[tuple[str, ...], str], Entry] = {}
        self.pruned_lsn = 0
        self.count = 0
        self._unpruned = False
        #: +1 whenever what readers see changes (entries committed, pruned or
        #: reset): a value cached above the overlay is current only while this
        #: has not moved (the file backend's hot-key table checks it).
        self.generation = 0

    def get(self, namespace: tuple[str, ...], key: str) -> Entry | None:
        """The newest synced entry for a key, if it is unfolded (what readers see)."""
        ns = self.committed.get(namespace)
        return None if ns is None else ns.get(key)

    def get_latest(self, namespace: tuple[str, ...], key: str) -> Entry | None:
        """The newest entry including pending ones (what a writer under the append lock decides on)."""
        if self.latest:
            entry = self.latest.get((namespace, key))
            if entry is not None:
                return entry
        return self.get(namespace, key)

    def add(self, end: int, changes: list[Change], *, synced: bool) -> None:
        """Add the entries of frames ending at ``end`` (in log order, after everything held)."""
        if synced and not self.pending:
            self._apply(changes)
            self.pos = end
        else:
            self.pending.append((end, changes))
            latest = self.latest
            for ns, key, entry in changes:  # in log order: a later change of a key replaces an earlier one
                latest[(ns, key)] = entry
        self.tail = end

    def promote(self, synced: int) -> None:
        """Move pending entries below the synced position ``synced`` to the committed part."""
        pending = self.pending
        n = 0
        if pending and pending[0][0] <= synced:
            latest = self.latest
            for end, changes in pending:
                if end > synced:
                    break
                self._apply(changes)
                self.pos = end
                n += 1
                for ns, key, entry in changes:
                    # Promoted frames are the oldest pending ones: a key whose
                    # newest pending entry was promoted has no pending entry
                    # left (a rebuild of ``latest`` from every frame still
                    # pending, per promote, was a tenth of a put's CPU with
                    # four writers: issue 13).
                    ident = (ns, key)
                    if latest.get(ident) is entry:
                        del latest[ident]
            del pending[:n]
        if not pending:
            self.pos = max(self.pos, min(synced, self.tail))

    def _apply(self, changes: list[Change]) -> None:
        if changes:
            self.generation += 1
        committed = self.committed
        pruned = self.pruned_lsn
        for ns, key, entry in changes:
            if entry.lsn <= pruned:
                # Already folded (read after the fold passed it): the next prune must look.
                # Only then: a scan of every entry per commit was half a writer's CPU.
                self._unpruned = True
            by_key = committed.get(ns)
            if by_key is None:
                by_key = committed[ns] = {}
            if key not in by_key:
                self.count += 1
            by_key[key] = entry

    def prune(self, folded_lsn: int) -> list[tuple[tuple[str, ...], str]]:
        """Drop committed entries the shards now hold; return their (namespace, key)."""
        if folded_lsn <= self.pruned_lsn and not self._unpruned:
            return []
        self._unpruned = False
        self.pruned_lsn = max(self.pruned_lsn, folded_lsn)
        folded_lsn = self.pruned_lsn
        gone: list[tuple[tuple[str, ...], str]] = []
        for ns in list(self.committed):
            by_key = self.committed[ns]
            for key in [k for k, e in by_key.items() if e.lsn <= folded_lsn]:
                del by_key[key]
                gone.append((ns, key))
            if not by_key:
                del self.committed[ns]
        self.count -= len(gone)
        if gone:
            self.generation += 1
        return gone

    def reset(self, pos: int, pruned_lsn: int) -> None:
        """Forget everything and start again at ``pos`` (the log before it was retired)."""
        self.committed.clear()
        self.pending.clear()
        self.latest = {}
        self.pos = self.tail = pos
        self.pruned_lsn = pruned_lsn
        self.count = 0
        self.generation += 1

    def namespace(self, namespace: tuple[str, ...]) -> dict[str, Entry]:
        """A copy of the committed entries of one namespace."""
        return dict(self.committed.get(namespace, {}))

    def namespaces(self) -> list[tuple[str, ...]]:
        """Namespaces with committed entries."""
        return list(self.committed)
