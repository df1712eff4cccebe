"""Listing every shard of a namespace while splits and merges run: which to read, which keys to emit (layer L2).

One rule for every loop that lists a namespace shard by shard
(``Engine.iter_shards``, ``Store.scan``, the search's parts): each record
that exists for the whole listing comes out once, and no key comes out twice,
while other processes split shards (``p`` flagged, leaves ``p0``/``p1``
written, ``p`` unlinked) and merge them back (``p`` written flagged holding
both leaves, leaves unlinked, ``p`` rewritten unflagged).

What the walk remembers (bounded: prefixes, plus the keys emitted from
flagged shards, as many as such a shard holds):

* ``whole``: prefixes read unflagged and alone, so every record of their
  range was emitted (or excluded as emitted before). A prefix under one of
  them is skipped: its records came with it (a later split of it, or the
  same range rewritten).
* ``flagged``: prefixes read while flagged or overlapped (sharing the range
  with leaves), with the file identity read and the leaves that owned part of
  the range then. Only keys owned by the shard were emitted. Such a prefix is
  read again when its file or the leaves below it change: a merge that
  finishes after the read turns the leaves' records into its own.
* ``emitted``: keys emitted from flagged reads, per prefix: its leaves (or
  its rewrite) may hold the same records again.

A prefix that appears as an **ancestor** of ranges read whole (a merge that
finished between two listings) is read with a filter that drops keys under
those ranges and keys already emitted from a flagged read.

**Progress under any write rate.** Each listing reads only what changed
since the last, but a namespace that splits faster than a listing reads
(small shards, a storm of writes, a loaded machine) could keep a walk
listing for ever. After :data:`OPTIMISTIC_PASSES` listings the walk takes the
caller's ``hold`` (on a format-2 store: the fold lock, shared, as a snapshot
does), under which the fold, the only writer of shard files there, cannot
change the set of files. The next listing then reads what is left, and one
whose shards were all read whole, none gone, ends the walk: nothing can have
split or merged meanwhile. Writers are not held: the log takes their writes.
The hold is let go when the walk ends, is closed or raises.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Final

from . import _fs
from ._errors import StorageError
from ._names import hash_bits
from ._view import View

__all__ = ["MAX_PASSES", "OPTIMISTIC_PASSES", "Hold", "ShardWalk"]

#: A namespace that keeps changing under a listing is given up after this many
#: listings (only reachable without a ``hold``: a format-1 store, whose
#: writers split the shards themselves; or while check/compact merge).
MAX_PASSES: Final = 64
#: Listings taken before the walk takes its ``hold``: on a quiet namespace a
#: walk ends after one or two, and a split under way needs one more.
OPTIMISTIC_PASSES: Final = 3

#: Holds the set of shard files still while the context is entered (see the module docstring).
Hold = Callable[[], AbstractContextManager[object]]


class ShardWalk:
    """One pass-by-pass listing of a namespace's shards; iterate for the prefixes to read.

    For each prefix yielded, read its shard and call :meth:`take` (or
    :meth:`gone` if the file vanished). ``settle``: stop after a listing whose
    shards were all read whole and none vanished (no second listing needed;
    the search uses it). ``hold``: taken after :data:`OPTIMISTIC_PASSES`
    listings, kept until the walk ends (:attr:`holding` says when; a caller
    that hands records to user code meanwhile should keep them until the walk
    ends instead, so that user code never runs under the hold). Raises
    StorageError when the namespace keeps changing for :data:`MAX_PASSES`
    listings (``doing`` names the caller's activity).
    """

    __slots__ = (
        "_current",
        "_doing",
        "_emitted",
        "_flagged",
        "_held",
        "_hold",
        "_settle",
        "_settled",
        "_whole",
        "_whole_above",
        "view",
    )

    def __init__(self, view: View, doing: str, *, settle: bool = False, hold: Hold | None = None) -> None:
        self.view = view
        self._doing = doing
        self._settle = settle
        self._hold = hold
        self._held: AbstractContextManager[object] | None = None
        self._settled = True
        self._whole: set[str] = set()
        #: Proper prefixes of ``_whole`` as of the start of the pass: which
        #: shards sit above ranges read whole, without scanning ``_whole``.
        #: Ranges read whole later in the same pass cannot lie below a shard
        #: of this pass: a pass reads in sorted order, ancestors first.
        self._whole_above: frozenset[str] = frozenset()
        self._flagged: dict[str, tuple[_fs.StatKey | None, frozenset[str]]] = {}
        self._emitted: dict[str, set[str]] = {}
        self._current: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())

    @property
    def holding(self) -> bool:
        """Whether the walk holds its ``hold`` now (from its next listing on, until it ends)."""
        return self._held is not None

    def __iter__(self) -> Iterator[str]:
        view = self.view
        try:
            for n in range(MAX_PASSES):
                if n >= OPTIMISTIC_PASSES and self._hold is not None and self._held is None:
                    hold = self._hold()
                    hold.__enter__()
                    self._held = hold
                view.refresh()
                listing = view.listing
                self._settled = True
                self._whole_above = frozenset(w[:d] for w in self._whole for d in range(len(w)))
                todo = [p for p in sorted(listing.existing) if self._due(p, listing.existing)]
                if not todo:
                    return
                self._current = listing.existing, listing.internal
                yield from todo
                # Under the hold no file came or went since the listing unless
                # a shard read vanished or was flagged (check or compact at
                # work): when none did, every range was read whole.
                if (self._settle or self._held is not None) and self._settled:
                    return
            raise StorageError(f"namespace {view.dir} kept changing while being {self._doing}; retry", path=view.dir)
        finally:
            taken, self._held = self._held, None
            if taken is not None:
                taken.__exit__(None, None, None)

    def _due(self, prefix: str, existing: frozenset[str]) -> bool:
        whole = self._whole
        if whole and any(prefix[:d] in whole for d in range(len(prefix) + 1)):
            return False  # read whole already, itself or an ancestor
        seen = self._flagged.get(prefix)
        if seen is None:
            return True
        if seen[1] != _below(prefix, existing):
            return True  # the leaves that owned part of its range changed
        if seen[0] is None:
            return False  # read through a dead batch's overlay: no identity to compare
        try:
            key = _fs.stat_key(os.stat(self.view.shard_path(prefix)))
        except FileNotFoundError:
            return True  # gone since the listing: reading it finds that out and lists again
        except OSError as exc:
            raise _fs.storage_error(exc, "stat", self.view.shard_path(prefix)) from exc
        return key != seen[0]

    def gone(self, prefix: str) -> None:
        """The shard of ``prefix`` vanished before it could be read: list again."""
        self._settled = False

    def take(self, prefix: str, statkey: _fs.StatKey | None, splitting: bool, keys: Iterable[str]) -> set[str] | None:
        """Record that ``prefix``'s shard (``statkey``, ``splitting``, holding ``keys``) was read.

        Returns the keys to emit from it, or None for all of them.
        """
        existing, internal = self._current
        flagged = splitting or prefix in internal
        # Ranges whose records do not come from this shard: ranges read
        # whole before (this is their ancestor, back from a merge), and, when
        # flagged, the leaves that own part of its range in this listing.
        above = prefix in self._whole_above
        ranges = [w for w in self._whole if w.startswith(prefix)] if above else []
        below = _below(prefix, existing) if flagged else frozenset()
        ranges.extend(below)
        skip = (
            [s for p, s in self._emitted.items() if s and (p.startswith(prefix) or prefix.startswith(p))]
            if self._emitted
            else []
        )
        kept: set[str] | None = None
        if ranges or skip:
            kept = {
                k
                for k in keys
                if not (ranges and _under(hash_bits(k), ranges)) and not (skip and any(k in s for s in skip))
            }
        if flagged:
            self._settled = False
            if kept is None:
                kept = set(keys)
            self._emitted.setdefault(prefix, set()).update(kept)
            self._flagged[prefix] = (statkey, below)
            return kept
        # Every record of the range is now emitted: forget what lies below it.
        if above:
            self._whole = {w for w in self._whole if not w.startswith(prefix)}
        self._whole.add(prefix)
        if self._emitted:
            for p in [p for p in self._emitted if p.startswith(prefix)]:
                del self._emitted[p]
            for p in [p for p in self._flagged if p.startswith(prefix)]:
                del self._flagged[p]
        return kept


def _below(prefix: str, existing: frozenset[str]) -> frozenset[str]:
    """Existing shards strictly below ``prefix``: they own that part of its range."""
    return frozenset(p for p in existing if len(p) > len(prefix) and p.startswith(prefix))


def _under(bits: str, ranges: list[str]) -> bool:
    return any(bits.startswith(r) for r in ranges)
