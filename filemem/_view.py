"""What one process knows of a namespace directory: which shards exist, and which holds a key (layer L2).

Resolution rule (docs/format.md): a key lives in the *deepest existing*
``s<prefix>.shard`` whose prefix starts the key's hash bits, or, where no file
covers its range, in the first prefix that is no ancestor of an existing
shard (a new range). Listings are immutable and swapped whole, so threads
sharing a View never see half of one.
"""

from __future__ import annotations

import os
from typing import Final

from . import _fs
from ._shard import LOCK_SUFFIX, SHARD_SUFFIX, shard_name

__all__ = ["MAX_PREFIX_BITS", "TURNSTILE", "Listing", "View"]

TURNSTILE: Final = "turnstile.lock"
MAX_PREFIX_BITS: Final = 64


class Listing:
    """One immutable listing of a namespace directory.

    Threads share a View; swapping a whole listing in one assignment means a
    reader never sees ``existing`` from one listing and ``internal`` from
    another.
    """

    __slots__ = ("depths", "existing", "internal", "overlapped")

    def __init__(self, existing: frozenset[str], internal: frozenset[str] | None = None) -> None:
        self.existing = existing
        self.internal = internal if internal is not None else frozenset(p[:d] for p in existing for d in range(len(p)))
        #: Shards with leaves under them: a split someone has not finished.
        self.overlapped = existing & self.internal
        self.depths = tuple(sorted({len(p) for p in existing}, reverse=True))


_EMPTY_LISTING: Final = Listing(frozenset())


class View:
    """What one process knows of a namespace directory: which shard prefixes exist.

    Callers must never infer "nothing changed" from a refresh: another thread
    may have refreshed the shared view already. After a refresh, resolve
    again and compare prefixes.
    """

    __slots__ = ("_listing", "_paths", "dir", "dir_known", "namespace", "stale", "turnstile")

    def __init__(self, namespace: tuple[str, ...], directory: str) -> None:
        self.namespace = namespace
        self.dir = directory
        self.turnstile = os.path.join(directory, TURNSTILE)
        self._listing = _EMPTY_LISTING
        self._paths: dict[str, str] = {}
        #: The directory exists (directories are never removed while a store lives).
        self.dir_known = False
        #: Set by the watcher when a shard file appeared or vanished here.
        self.stale = False
        self.refresh()

    @property
    def listing(self) -> Listing:
        """The current listing, whole: ``existing`` and ``internal`` from the same directory listing."""
        return self._listing

    @property
    def existing(self) -> frozenset[str]:
        """Prefixes that have a shard file."""
        return self._listing.existing

    @property
    def internal(self) -> frozenset[str]:
        """Proper prefixes of existing shards."""
        return self._listing.internal

    @property
    def overlapped(self) -> frozenset[str]:
        """Existing shards that also have leaves under them."""
        return self._listing.overlapped

    def refresh(self) -> None:
        """Re-list the directory."""
        self.stale = False
        existing = frozenset(
            name[1 : -len(SHARD_SUFFIX)]
            for name in _fs.listdir(self.dir)
            if name.startswith("s") and name.endswith(SHARD_SUFFIX) and _fs.TEMP_MARK not in name
        )
        if existing != self._listing.existing:
            self._listing = Listing(existing)

    def refresh_below(self, prefix: str) -> None:
        """Update the listing after ``prefix`` was found split (gone or flagged).

        Splits write every leaf, so the new shards are found by probing the
        children of ``prefix`` with a few ``stat`` calls instead of listing a
        directory that may hold thousands of shards. Falls back to a full
        listing when the probe finds nothing or wanders too far.
        """
        listing = self._listing
        if prefix not in listing.existing:
            self.refresh()
            return
        found: list[str] = []
        pending = [prefix + "0", prefix + "1"]
        probes = 0
        while pending:
            child = pending.pop()
            probes += 1
            if probes > 64 or len(child) > MAX_PREFIX_BITS:
                self.refresh()
                return
            if _fs.lexists(self.shard_path(child)):
                found.append(child)
            else:
                pending += [child + "0", child + "1"]
        if not found:
            self.refresh()
            return
        existing = set(listing.existing)
        if not _fs.lexists(self.shard_path(prefix)):
            existing.discard(prefix)
        existing.update(found)
        internal = set(listing.internal)
        internal.update(f[:d] for f in found for d in range(len(prefix), len(f)))
        if self._listing is listing:  # lost a race with another thread's refresh: theirs is as good
            self._listing = Listing(frozenset(existing), frozenset(internal))

    def replace_split(self, prefix: str, leaves: list[str]) -> None:
        """Record in the listing that ``prefix`` was split into ``leaves`` (no directory listing)."""
        listing = self._listing
        existing = set(listing.existing)
        existing.discard(prefix)
        existing.update(leaves)
        internal = set(listing.internal)
        internal.update(f[:d] for f in leaves for d in range(len(prefix), len(f)))
        self._listing = Listing(frozenset(existing), frozenset(internal))

    def recheck(self, prefix: str, bits: str, *, missing: bool) -> bool:
        """After ``prefix``'s shard turned out missing or flagged: whether to resolve again.

        Missing: a split finished, or a new range. Flagged: a split is under
        way and a leaf may already hold newer data. Either way the directory
        knows better than this listing. A missing shard whose range still
        resolves to itself is only "absent" if no leaf exists below it.
        """
        self.refresh_below(prefix)
        if self.resolve(bits) != prefix:
            return True
        return missing and self.has_shards_below(prefix)

    def has_shards_below(self, prefix: str) -> bool:
        """Whether any shard exists strictly below ``prefix`` (refreshing the listing if so).

        ``os.listdir`` is no snapshot: while a split renames leaves in and
        unlinks the parent, one listing can miss both. Before anyone treats
        the range of a missing shard as empty (a reader answering "absent", a
        writer creating the shard afresh), this double-checks with ``stat``
        of the children, where splits put their leaves, and then with a second
        listing.
        """
        if any(_fs.lexists(self.shard_path(prefix + c)) for c in "01"):
            self.refresh()
            return True
        self.refresh()
        return any(p.startswith(prefix) and p != prefix for p in self.existing)

    def resolve(self, bits: str) -> str:
        """The prefix of the shard that holds a key with hash ``bits``."""
        listing = self._listing
        existing = listing.existing
        for d in listing.depths:  # deepest existing prefix, usually one lookup
            p = bits[:d]
            if p in existing:
                return p
        internal = listing.internal
        for d in range(MAX_PREFIX_BITS + 1):  # no existing prefix: a new region
            p = bits[:d]
            if p not in internal:
                return p
        return bits  # pragma: no cover - 64-bit deep tree

    def shard_path(self, prefix: str) -> str:
        """Path of the shard file for ``prefix``."""
        path = self._paths.get(prefix)
        if path is None:
            path = self._paths[prefix] = os.path.join(self.dir, shard_name(prefix))
        return path

    def lock_path(self, prefix: str) -> str:
        """Path of the lock file for ``prefix``."""
        return os.path.join(self.dir, f"s{prefix}{LOCK_SUFFIX}")
