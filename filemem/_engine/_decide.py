"""Write decisions on a format-2 store, and the created_at a plain put carried over (layer L2).

``Decisions._decide`` runs under the write-ahead log's append lock: it checks a
batch of ops against the log's tail and the shards (``if_version``, CAS,
``update``, deletes that report whether the key existed) and turns them into
log ops, all or none (raising logs nothing). A plain put reads nothing: its
``created_at`` is logged as carried over (``filemem._wal._carry``) and
resolved later, against the key's previous record in log order (the chain
rule): by the overlay (``_wal._log_reads``) and ``resolve_created`` (on a
read, outside the lock), by the fold, by the change feed (``_wal._tail``).
``_decide_blind`` logs a batch of plain puts without the log's tail at all.

Invariant: the decision sees every write committed before it (the log tail
under the append lock, then the shards), so versions (log positions) only
grow per key and a conditional write never succeeds against a stale record;
every reader resolves a carried ``created_at`` to the same time before and
after the fold. Split from ``_log`` (the log glue), which it serves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

from .._errors import InvalidValueError, StorageError
from .._names import hash_bits
from .._shard import Record
from .._wal._carry import Carried, carried_from, carried_over, frame_created
from .._wal._format import DELETE, PUT, LogOp
from .._wal._log_core import record_of, resolved_record_of
from .._wal._overlay import Change, Entry
from ._commit import Commits
from ._ops import UNDECODED, Op, _checked_version, _written_value, copy_value

__all__ = ["Decisions"]

#: ``_decide``: a plain put's previous record, not read (its created_at is carried over).
_CARRY: Final[Any] = object()

#: One plain put of :meth:`Decisions._decide_puts`: namespace, key, the store codec's bytes.
Put = tuple[tuple[str, ...], str, bytes]


class Decisions(Commits):
    """``_decide`` and the resolution of carried ``created_at``; mixed into ``LogGlue``."""

    def _decide(
        self,
        ops: list[Op],
        latest: Callable[[tuple[str, ...], str], Entry | None],
        first_lsn: int,
        now: float,
    ) -> tuple[list[LogOp], list[Any], list[Change]]:
        """Under the append lock: check and turn ``ops`` into log ops (all or none: raising logs nothing)."""
        logged: list[LogOp] = []
        changes: list[Change] = []
        results: list[Any] = []
        #: This batch's earlier write of a key: its record, or (lsn, logged op) for a put logged as bytes.
        mine: dict[tuple[tuple[str, ...], str], Record | tuple[int, LogOp] | None] = {}
        codec = self.codec
        cname = codec.name
        checked: set[tuple[str, ...]] = set()  # namespaces whose view was checked in this batch
        decode_logged = self._decode_logged
        for op in ops:
            ident = (op.namespace, op.key)
            enc = op.encoded
            if op.kind == "put" and op.if_version is None and enc is not None and enc[0] == cname and ident not in mine:
                # A plain put (no condition) already encoded by the store's
                # codec: log its bytes as they are, and keep no record of it,
                # only the logged op, which this process's readers decode on
                # first read as they do another process's frames (the
                # collector's undecoded puts take this path too). No record,
                # Carried or copy built per put: a 1,000-record batch spent
                # most of its decision there, and in the garbage collector
                # walking them (issue 13). The value read back is the codec's
                # round trip, what every other process and the fold see.
                lsn = first_lsn + len(logged)
                data = enc[1]
                if len(data) > self.max_value_bytes:
                    raise InvalidValueError(f"value encodes to {len(data)} bytes; the limit is {self.max_value_bytes}")
                if op.value is not UNDECODED:
                    # The overlay keeps these bytes until a read or the fold: an
                    # exact copy, since orjson's output object holds a ~4 KB
                    # allocation however short the JSON (4.3 KB an unfolded
                    # record, measured). The collector's bytes are already a
                    # slice of its journal frame.
                    data = bytes(memoryview(data))
                created_at = self._plain_created_at(latest, op.namespace, op.key, now, checked)
                lop = LogOp(
                    op.namespace, op.key, PUT, cname, data, created_at, None if op.ttl is None else now + op.ttl
                )
                logged.append(lop)
                results.append(lsn)
                changes.append((op.namespace, op.key, Entry(lsn, None, lop, now, decode_logged)))
                mine[ident] = (lsn, lop)
                continue
            if ident in mine:
                got = mine[ident]
                rec = record_of(self._codecs, got[1], got[0], now) if isinstance(got, tuple) else got
            else:
                entry = latest(op.namespace, op.key)
                if entry is not None:
                    rec = entry.record
                elif op.kind == "put" and op.if_version is None:
                    # A plain put needs nothing of the record it replaces but
                    # its created_at: log it as carried over (see _wal._carry)
                    # instead of reading the shard under the append lock (a
                    # cold shard parse per key: issue 13). The namespace's
                    # view still refuses a directory that is a link (once per
                    # namespace and process), as a read of the shard did.
                    self.view(op.namespace)
                    rec = _CARRY
                else:
                    rec = self._read_shards(op.namespace, op.key, fresh_ok=True)[0]
            if rec is not _CARRY:
                rec, _ = _checked_version(op, rec, now)
            lsn = first_lsn + len(logged)
            if op.kind == "delete":
                results.append(rec is not None)
                if rec is not None:
                    logged.append(LogOp(op.namespace, op.key, DELETE))
                    changes.append((op.namespace, op.key, Entry(lsn, None)))
                    mine[ident] = None
                continue
            value, updated = _written_value(op, rec)
            if updated:
                results.append(copy_value(value))
            else:
                if value is UNDECODED:
                    assert enc is not None, "an UNDECODED put carries its encoding"
                    value = self._codecs[enc[0]].decode(enc[1])
                results.append(lsn)
            # Encoded when it was checked (put(), batch(), the collector): not
            # again, unless the store's codec changed since (a convert ran):
            # bytes of another codec are never logged under this one's name.
            data = enc[1] if op.kind == "put" and enc is not None and enc[0] == codec.name else codec.encode(value)
            if len(data) > self.max_value_bytes:
                raise InvalidValueError(f"value encodes to {len(data)} bytes; the limit is {self.max_value_bytes}")
            expires: float | None = None
            if op.ttl is not None:
                expires = now + op.ttl
            elif op.kind == "update" and rec is not None:
                expires = rec.get("expires_at")
            created = Carried(now) if rec is _CARRY else carried_from(rec, now)
            new: Record = {"value": value, "version": lsn, "created_at": created, "updated_at": now}
            if expires is not None:
                new["expires_at"] = expires
            logged.append(LogOp(op.namespace, op.key, PUT, codec.name, data, frame_created(created), expires))
            if isinstance(created, Carried):
                # This process's readers get the resolved time, looked up on
                # first read (outside the append lock).
                entry = Entry(lsn, None, (op.namespace, op.key, new), now, self._resolved_own_entry)
            else:
                entry = Entry(lsn, new)
            changes.append((op.namespace, op.key, entry))
            mine[ident] = new
        return logged, results, changes

    def _plain_created_at(
        self,
        latest: Callable[[tuple[str, ...], str], Entry | None],
        namespace: tuple[str, ...],
        key: str,
        now: float,
        checked: set[tuple[str, ...]],
    ) -> float:
        """The ``created_at`` field a plain put logs (``_decide``'s plain branch and ``_decide_puts``).

        With an unfolded entry of the key: from its header, not its value,
        where that tells the time (a delete, a record expired by now, a time
        logged); this process's own entries get no carried base (only frames
        read from the log do, _wal._log_reads), so a time still carried is
        resolved from the record, as before the chain rule. Without one:
        carried over (NaN, see _wal._carry), the shard record it replaces not
        read under the append lock; the namespace's view still refuses a
        directory that is a link (once per namespace and batch, ``checked``),
        as a read did.
        """
        entry = latest(namespace, key)
        if entry is None:
            return self._carried_created_at(namespace, checked)
        created = carried_over(entry.header(), now)
        if isinstance(created, Carried):
            created = carried_from(entry.record, now)
        return frame_created(created)

    def _carried_created_at(self, namespace: tuple[str, ...], checked: set[tuple[str, ...]]) -> float:
        """NaN, a ``created_at`` carried over (see _wal._carry), once the namespace's view was checked.

        The shard record it replaces is not read under the append lock; the
        view still refuses a directory that is a link, as a read did (once
        per namespace and batch: ``checked``).
        """
        if namespace not in checked:
            self.view(namespace)
            checked.add(namespace)
        return math.nan

    def _decide_blind(self, ops: list[Op], first_lsn: int, now: float) -> tuple[list[LogOp], list[Any]]:
        """Under the append lock, for a batch of plain puts only, without the log's tail: log each as carried over.

        The caller has not read the other writers' frames (``Log.commit``'s
        blind path), so nothing here may look at the overlay: every put's
        ``created_at`` is logged as carried over (NaN) and resolved later by
        the chain rule (_wal._carry). No overlay entries: this process reads
        its own frame back from the log, in log order, like any other.
        """
        logged: list[LogOp] = []
        results: list[Any] = []
        codec = self.codec
        cname = codec.name
        checked: set[tuple[str, ...]] = set()
        limit = self.max_value_bytes
        for op in ops:
            enc = op.encoded
            if enc is not None and enc[0] == cname:
                data = enc[1]  # no copy: nothing keeps it past the append (no overlay entry)
            else:
                value = op.value
                if value is UNDECODED:
                    assert enc is not None, "an UNDECODED put carries its encoding"
                    value = self._codecs[enc[0]].decode(enc[1])
                data = codec.encode(value)
            if len(data) > limit:
                raise InvalidValueError(f"value encodes to {len(data)} bytes; the limit is {limit}")
            created_at = self._carried_created_at(op.namespace, checked)
            results.append(first_lsn + len(logged))
            logged.append(
                LogOp(op.namespace, op.key, PUT, cname, data, created_at, None if op.ttl is None else now + op.ttl)
            )
        return logged, results

    def _decide_puts(
        self,
        puts: list[Put],
        extra: list[Op],
        latest: Callable[[tuple[str, ...], str], Entry | None],
        first_lsn: int,
        now: float,
    ) -> tuple[list[LogOp], list[Any], list[Change]]:
        """``_decide`` of ``[Op(ns, key, "put", UNDECODED, encoded=(codec, data)) ...] + extra``, the same logged.

        The caller (``Engine.apply_puts``) has checked that no key repeats in
        the batch, ``extra`` included: each put then takes ``_decide``'s plain
        branch for undecoded bytes, as done here without the ``Op`` and the
        branch's tests per record.
        """
        cname = self.codec.name
        limit = self.max_value_bytes
        decode_logged = self._decode_logged
        checked: set[tuple[str, ...]] = set()
        logged: list[LogOp] = []
        changes: list[Change] = []
        lsn = first_lsn
        plain_created_at = self._plain_created_at
        for ns, key, data in puts:
            if len(data) > limit:
                raise InvalidValueError(f"value encodes to {len(data)} bytes; the limit is {limit}")
            lop = LogOp(ns, key, PUT, cname, data, plain_created_at(latest, ns, key, now, checked), None)
            logged.append(lop)
            changes.append((ns, key, Entry(lsn, None, lop, now, decode_logged)))
            lsn += 1
        results: list[Any] = list(range(first_lsn, lsn))
        if extra:
            more, got, more_changes = self._decide(extra, latest, lsn, now)
            logged += more
            results += got
            changes += more_changes
        return logged, results, changes

    def _decide_puts_blind(
        self, puts: list[Put], extra: list[Op], first_lsn: int, now: float
    ) -> tuple[list[LogOp], list[Any]]:
        """``_decide_blind`` of the same batch as :meth:`_decide_puts`."""
        cname = self.codec.name
        limit = self.max_value_bytes
        checked: set[tuple[str, ...]] = set()
        carried = self._carried_created_at
        logged: list[LogOp] = []
        for ns, key, data in puts:
            if len(data) > limit:
                raise InvalidValueError(f"value encodes to {len(data)} bytes; the limit is {limit}")
            logged.append(LogOp(ns, key, PUT, cname, data, carried(ns, checked), None))
        results: list[Any] = list(range(first_lsn, first_lsn + len(logged)))
        if extra:
            more, got = self._decide_blind(extra, first_lsn + len(logged), now)
            logged += more
            results += got
        return logged, results

    def _decode_logged(self, op: LogOp, lsn: int, now: float) -> Record | None:
        """An overlay entry's decode (see ``_wal._overlay.Entry``) for a plain put this process logged as bytes."""
        return resolved_record_of(self._codecs, self.resolve_created, op, lsn, now)

    def _resolved_own_entry(self, own: tuple[tuple[str, ...], str, Record], _lsn: int, _now: float) -> Record:
        """An overlay entry's decode (see ``_wal._overlay.Entry``) for this process's own carried put."""
        return self._resolved_own(*own)

    def _resolved_own(self, namespace: tuple[str, ...], key: str, record: Record) -> Record:
        """This process's own carried put, as readers are served it (``created_at`` resolved)."""
        created = record["created_at"]
        if not isinstance(created, Carried):
            return record
        return {**record, "created_at": self.resolve_created(namespace, key, record["version"], created)}

    def resolve_created(self, namespace: tuple[str, ...], key: str, lsn: int, carried: Carried) -> float:
        """The ``created_at`` a put logged at ``lsn`` carried over, from the shard record before it.

        For a carried time the log no longer explains: the put's previous
        record in log order (the chain rule, _wal._carry) is not in the log
        unfolded, or ``carried`` was already taken one step back along the
        chain (its ``as_of`` is then the earlier put's time), so the shard's
        record, if older than ``lsn``, is the one it replaced. If a fold has
        installed the put since, the shard holds its resolved value; if a fold
        went past it to a later write of the key, that write's ``created_at``
        is the same unless the key was deleted or expired in between (then it
        is later than the put, which is how that is told).
        """
        rec = self._raw_shard_record(namespace, key)
        if rec is None:
            return carried.as_of
        version = rec["version"]
        created = rec["created_at"]
        if version < lsn:
            got = carried.resolve(rec)
            return got if not isinstance(got, Carried) else carried.as_of
        if version == lsn or created <= carried.as_of:
            return float(created)
        # Folded past the put and past a delete or expiry of the key after it:
        # the time it carried is gone from the shards; the put's own is the
        # best left (only a read racing two folds lands here).
        return carried.as_of

    def _raw_shard_record(self, namespace: tuple[str, ...], key: str) -> Record | None:
        """The key's record in its shard, expired or not (None: no record)."""
        view = self.view(namespace)
        bits = hash_bits(key)
        for _ in range(8):
            prefix = view.resolve(bits)
            path = view.shard_path(prefix)
            if self.lacks(path, prefix, key):
                # Read and checked, not decoded: a new key (the common case of
                # a carried created_at) costs no parse of its shard.
                return None
            shard = self.load(path, prefix)
            if shard is None or shard.splitting:
                if view.recheck(prefix, bits, missing=shard is None):
                    continue
                if shard is None:
                    return None
            return shard.records.get(key)
        raise StorageError(f"namespace {view.dir} kept changing while reading {key!r}; retry", path=view.dir)
