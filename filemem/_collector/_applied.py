"""Which journal records are applied: id ranges kept in a store-internal marker (layer L4).

Each apply batch of a journaled collector also puts, *in the same atomic
engine batch*, the set of its journal's record ids that are applied (or
otherwise retired: dead-lettered, dropped, superseded) into the internal
namespace ``(INTERNAL_NS, "collector", <jid>)``, key ``"applied"``. The marker
and the records it names therefore become durable together or not at all,
which is what makes replay exactly-once: whatever the marker names is never
applied again, whatever it does not name was never applied.

The marker lives under ``<store>/internal/``, so ``list_namespaces`` never
shows it, and is removed with the journal it describes. On a server store
the marker is a row of its records table, written in the same transaction;
the engine there is a :class:`MarkerTable`, which lists and drops them.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from typing import Any, Final, Protocol, runtime_checkable

from .. import _fs
from .._engine import INTERNAL_DIR, INTERNAL_NS, Engine, Op
from .._errors import StorageError

__all__ = [
    "MARKER_KEY",
    "MarkerTable",
    "RangeSet",
    "marker_dir",
    "marker_namespace",
    "marker_op",
    "read_marker",
    "remove_marker",
]

MARKER_KEY: Final = "applied"
_AREA: Final = "collector"


@runtime_checkable
class MarkerTable(Protocol):
    """An engine that keeps markers as rows of a table (a server store), not as directories."""

    def marker_ids(self) -> list[str]: ...
    def drop_marker(self, namespace: tuple[str, ...]) -> None: ...


class RangeSet:
    """A set of ints kept as sorted, disjoint, inclusive ``[lo, hi]`` ranges (ids come mostly in order)."""

    __slots__ = ("ranges",)

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self.ranges: list[list[int]] = []
        for lo, hi in ranges:
            self.add_range(int(lo), int(hi))

    def __contains__(self, n: int) -> bool:
        lo, hi = 0, len(self.ranges)
        while lo < hi:
            mid = (lo + hi) // 2
            r = self.ranges[mid]
            if n < r[0]:
                hi = mid
            elif n > r[1]:
                lo = mid + 1
            else:
                return True
        return False

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def add_many(self, ids: Iterable[int]) -> None:
        """Add ids (any order)."""
        ordered = sorted(ids)
        if ordered and ordered[-1] - ordered[0] + 1 == len(ordered) == len(set(ordered)):
            # One run without a gap (an apply batch of one priority, the usual case): no
            # walk over the ids in Python. (The set: [1, 1, 3] spans 3 but misses 2.)
            self.add_range(ordered[0], ordered[-1])
            return
        run: list[int] | None = None
        for n in ordered:
            if run is not None and n <= run[1] + 1:
                run[1] = max(run[1], n)
                continue
            if run is not None:
                self.add_range(run[0], run[1])
            run = [n, n]
        if run is not None:
            self.add_range(run[0], run[1])

    def add_range(self, lo: int, hi: int) -> None:
        """Add ``lo..hi`` inclusive, merging with neighbours."""
        rs = self.ranges
        if not rs or lo > rs[-1][1] + 1:  # the common case: past the end
            rs.append([lo, hi])
            return
        if lo >= rs[-1][0] and lo <= rs[-1][1] + 1:
            rs[-1][1] = max(rs[-1][1], hi)
            return
        merged: list[list[int]] = []
        placed = False
        for r in rs:
            if r[1] + 1 < lo:
                merged.append(r)
            elif hi + 1 < r[0]:
                if not placed:
                    merged.append([lo, hi])
                    placed = True
                merged.append(r)
            else:
                lo, hi = min(lo, r[0]), max(hi, r[1])
        if not placed:
            merged.append([lo, hi])
        merged.sort()
        self.ranges = merged

    def to_value(self) -> list[list[int]]:
        """A codec-friendly copy."""
        return [[lo, hi] for lo, hi in self.ranges]


def marker_namespace(jid: str) -> tuple[str, ...]:
    """The internal namespace that holds journal ``jid``'s marker."""
    return (INTERNAL_NS, _AREA, jid)


def marker_dir(engine: Engine, jid: str) -> str:
    """The directory of that namespace."""
    return engine.ns_dir(marker_namespace(jid))


def marker_op(jid: str, applied: RangeSet) -> Op:
    """The put that records ``applied`` (include it in the same engine.apply as the records)."""
    return Op(marker_namespace(jid), MARKER_KEY, "put", {"ranges": applied.to_value()})


def read_marker(engine: Engine, jid: str) -> tuple[RangeSet, float]:
    """The applied ids of ``jid`` and when the marker was last written (0.0: never)."""
    rec: dict[str, Any] | None = engine.read(marker_namespace(jid), MARKER_KEY)
    if rec is None:
        return RangeSet(), 0.0
    value = rec["value"]
    ranges = value.get("ranges", []) if isinstance(value, dict) else []
    return RangeSet(r for r in ranges if isinstance(r, list) and len(r) == 2), float(rec["updated_at"])


def remove_marker(engine: Engine, jid: str) -> None:
    """Delete the marker's directory (its journal is gone: nobody reads or writes it any more).

    A batch intent left by a writer that died between its commit and the
    intent's removal may still name this directory: roll such intents
    forward first, so that no intent outlives a directory it names. (Recovery
    also tolerates a directory that is gone, when that is provably safe; this
    keeps the case rare.) If an intent naming it cannot be finished now, the
    directory stays until a later retire or ``check(fix=True)``.
    """
    if isinstance(engine, MarkerTable):
        engine.drop_marker(marker_namespace(jid))
        return
    path = marker_dir(engine, jid)
    # Format 2: the marker's records may still be in the log; fold them into the
    # directory first, or the next fold would bring the directory back.
    engine.settle()
    if engine.unfolded(marker_namespace(jid)):
        # The fold lock stayed busy past the lock timeout (another process's
        # fold): the marker's records are still only in the log, and removing
        # the directory now would make that fold fail on it ("its directory is
        # gone"). Leave it to a later retire or check(fix=True).
        return
    try:
        engine.recover_batches((path,))
    except StorageError:
        return
    shutil.rmtree(path, ignore_errors=True)
    parent = os.path.dirname(path)
    if _fs.lexists(parent):
        _fs.fsync_dir(parent, missing_ok=True)


def marker_dirs(engine: Engine) -> list[str]:
    """The journal ids that have a marker directory (or row)."""
    if isinstance(engine, MarkerTable):
        return engine.marker_ids()
    base = os.path.join(engine.root, INTERNAL_DIR, _AREA)
    found = []
    for n in sorted(_fs.listdir(base)):
        st = _fs.lstat(os.path.join(base, n))
        if st is not None and stat.S_ISDIR(st.st_mode):
            found.append(n)
    return found
