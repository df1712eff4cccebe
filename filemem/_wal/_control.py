"""The shared control page of the log (layer L2): where the log ends, what is synced, what is folded.

``wal/control`` is one 4096-byte file that every process maps shared. It
holds little-endian unsigned 64-bit counters at fixed offsets (layout 2)::

    0   magic "FMWALCTL"            8   u32 layout (2), u32 0
    16  seq (seqlock of the page lock's fields: odd while a page-lock holder updates them)
    24  boot (hash of the boot id of the machine that wrote the page)
    32  appended   position just past the last frame written            (append lock)
    40  synced     position up to which frames are durable (or flushed, for "flush")
    48  commits    +1 every time ``synced`` or ``folded`` moves
    56  last_lsn   highest log sequence number written                   (append lock)
    64  synced_lsn highest log sequence number synced
    72  folded     position up to which frames are in the shard files
    80  folded_lsn highest log sequence number in the shard files
    88  folds      +1 every completed fold
    96  aseq (seqlock of ``appended`` and ``last_lsn``: odd while the append lock's holder updates them)

Rules, and why:

* **Two groups, two writers, two seqlocks.** ``appended`` and ``last_lsn``
  are written only by the holder of the append lock, inside ``aseq``
  (:meth:`ControlPage.write_appended`); every other field only under the page
  lock, inside ``seq`` (:meth:`ControlPage.write`, which never writes the
  append group). So an appender publishes its frame without taking the page
  lock (layout 1 took it for every append: two ``flock`` calls and a page
  copy inside the append lock's hold, issue 13), and a publisher of a sync
  or a fold never writes back an ``appended`` it read earlier.
* **A consistent copy** is taken between two equal, even reads of *both*
  seqlocks, so a torn 8-byte read (or one field from before an update and
  one from after) is never used. The copy is the page as it stood at one
  instant (both groups were still while it was read), so ``synced <=
  appended`` holds in it: ``synced`` is only ever raised to an ``appended``
  read earlier, and ``appended`` only grows.
* **Counters only grow.** A reader that only asks "did anything commit?"
  compares ``commits`` alone (one 8-byte read, no system call): a torn read
  can only make it look again. A writer asking "is my frame synced?" reads
  ``synced`` alone the same way: a value it sees was true when written.
* **The page is a cache of the log, never the truth.** It is not synced.
  After a reboot (``boot`` differs from this machine's boot id) or when no
  process had the store open, the opener re-derives every field from the
  checkpoint and a scan of the log.
* A writer killed inside an update leaves a seqlock odd and a mix of new and
  old fields: readers that spin too long take the append lock and the log
  derives the page anew (never trusting the mix: ``appended`` counting a frame
  whose sequence numbers ``last_lsn`` does not would hand them out again).
* **Layouts.** A page of another layout (an earlier build's layout 1, which
  guarded every field with ``seq`` alone) is not :meth:`ControlPage.valid`:
  an opener alone on the store rebuilds it in this layout; a read-write
  opener that is not alone refuses the store (:meth:`ControlPage.layout`
  tells the two apart from a page never written).

Invariant: ``folded <= synced <= appended`` and ``folded_lsn <= synced_lsn <=
last_lsn`` in every consistent read.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .. import _fs
from .._digest import blake2b
from . import _platform

__all__ = ["LAYOUT", "PAGE_BYTES", "Control", "ControlPage", "boot_id"]

PAGE_BYTES: Final = 4096
CONTROL_MAGIC: Final = b"FMWALCTL"
#: The page layout this filemem writes and trusts (1: an earlier build's, every field under ``seq``).
LAYOUT: Final = 2
_FIELDS: Final = (
    "appended",
    "synced",
    "commits",
    "last_lsn",
    "synced_lsn",
    "folded",
    "folded_lsn",
    "folds",
)
_LAYOUT_WORD: Final = 1  # index in u64 words: u32 layout, u32 0
_SEQ: Final = 2
_BOOT: Final = 3
_FIRST_FIELD: Final = 4
_COMMITS: Final = _FIRST_FIELD + _FIELDS.index("commits")
_APPENDED: Final = _FIRST_FIELD + _FIELDS.index("appended")
_LAST_LSN: Final = _FIRST_FIELD + _FIELDS.index("last_lsn")
_SYNCED: Final = _FIRST_FIELD + _FIELDS.index("synced")
_SYNCED_LSN: Final = _FIRST_FIELD + _FIELDS.index("synced_lsn")
#: The append group's seqlock (``appended``, ``last_lsn``), just past the fields.
_ASEQ: Final = _FIRST_FIELD + len(_FIELDS)
#: The page lock's fields as two runs of words: ``synced``, ``commits``; ``synced_lsn`` .. ``folds``.
_PACK_2: Final = struct.Struct("<2Q")
_PACK_4: Final = struct.Struct("<4Q")
_SPINS: Final = 10_000
#: Tight spins before a reader starts yielding its CPU (see :meth:`ControlPage.read`).
_TIGHT_SPINS: Final = 32


@dataclass(slots=True)
class Control:
    """One consistent copy of the page's counters."""

    appended: int = 0
    synced: int = 0
    commits: int = 0
    last_lsn: int = 0
    synced_lsn: int = 0
    folded: int = 0
    folded_lsn: int = 0
    folds: int = 0


def boot_id() -> int:
    """A number that changes when the machine reboots (0 where the platform does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
            raw = fh.read().strip()
    except OSError:
        return 0
    return int.from_bytes(blake2b(raw, digest_size=8).digest(), "little")


class ControlPage:
    """The mapped page of one store in one process (or file reads where mapping is off)."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < PAGE_BYTES:
                # Growing with zeros is harmless if two openers race: the page
                # is only ever initialised under the append lock.
                os.ftruncate(fd, PAGE_BYTES)
            self._map: mmap.mmap | None = None
            self._words: memoryview | None = None
            if not _platform.PORTABLE:
                self._map = mmap.mmap(fd, PAGE_BYTES)
                self._words = memoryview(self._map).cast("Q")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.mapped = self._map is not None

    # ------------------------------------------------------------------ raw words

    def _pread(self, size: int, offset: int) -> bytes:
        """Read the unmapped page (an I/O error becomes StorageError here, at the boundary)."""
        try:
            return _platform.pread(self._fd, size, offset)
        except OSError as exc:
            raise _fs.storage_error(exc, "read the control page", self.path) from exc

    def _pwrite(self, data: bytes, offset: int) -> None:
        try:
            _platform.pwrite(self._fd, data, offset)
        except OSError as exc:
            raise _fs.storage_error(exc, "write the control page", self.path) from exc

    def _get(self, index: int) -> int:
        if self._words is not None:
            return int(self._words[index])
        (v,) = struct.unpack("<Q", self._pread(8, index * 8))
        return int(v)

    def _put(self, index: int, value: int) -> None:
        if self._words is not None:
            self._words[index] = value
        else:
            self._pwrite(struct.pack("<Q", value), index * 8)

    # ------------------------------------------------------------------ readers

    def commits(self) -> int:
        """The commit counter alone: the cheap "did anything commit?" check."""
        w = self._words
        if w is not None:
            return w[_COMMITS]  # already an int: int() here was most of a cached get's check
        return self._get(_COMMITS)

    def appended(self) -> int:
        """The ``appended`` word alone (one aligned 8-byte read: some value a writer wrote, never torn)."""
        w = self._words
        if w is not None:
            return int(w[_APPENDED])
        return self._get(_APPENDED)

    def synced(self) -> int:
        """The ``synced`` word alone (one aligned 8-byte read: some value a writer published, never torn).

        ``synced`` only grows, so a value read here is a position the log was
        durable up to at some instant: enough to tell a writer its frame is
        covered, with no seqlock to wait on.
        """
        w = self._words
        if w is not None:
            return int(w[_SYNCED])
        return self._get(_SYNCED)

    def commits_reader(self) -> Callable[[], int]:
        """:meth:`commits` as one C-level call where the page is mapped (no Python frame, no system call).

        For hot paths above the log (the file backend's cached gets). Valid
        until :meth:`close`.
        """
        w = self._words
        if w is not None:
            return functools.partial(w.__getitem__, _COMMITS)
        return self.commits

    def valid(self) -> bool:
        """Whether the page was initialised in this layout (magic and layout right)."""
        return self.layout() == LAYOUT

    def layout(self) -> int | None:
        """The layout of the page's header; None if the page was never initialised (no magic)."""
        head = bytes(self._map[:16]) if self._map is not None else self._pread(16, 0)
        if len(head) != 16 or head[:8] != CONTROL_MAGIC:
            return None
        return int(struct.unpack_from("<I", head, 8)[0])

    def layout_word(self) -> int:
        """The layout word alone (one 8-byte read; no system call where mapped): :data:`LAYOUT` unless rewritten."""
        return self._get(_LAYOUT_WORD)

    def boot(self) -> int:
        """The boot id hash of the machine that last initialised the page."""
        return self._get(_BOOT)

    def read(self) -> Control | None:
        """A consistent copy of the counters, or None if a writer seems to have died mid-update."""
        for spin in range(_SPINS):
            got = self._read_try()
            if got is not None:
                return got
            if spin >= _TIGHT_SPINS:
                # The writer is mid-update and, with more processes than
                # cores, most likely descheduled: spinning in Python only
                # keeps it off the CPU (four writers on two cores spent a
                # fifth of their CPU here). Give the core away instead.
                _platform.yield_cpu()
        return None

    def read_once(self) -> Control | None:
        """:meth:`read` without waiting: None at once if a writer is mid-update (or finished one meanwhile).

        For callers that have a good answer without the page (a syncer that
        only hopes to cover other writers' frames too): spinning on a writer
        descheduled mid-update cost four writers on two cores a fifth of
        their CPU.
        """
        return self._read_try()

    def _read_try(self) -> Control | None:
        """One try of the seqlock read: a consistent copy, or None (mid-update, or one finished meanwhile).

        Both seqlocks are read before and after the fields: each group was
        still while it was read, so the copy is the page at one instant.
        """
        w = self._words
        if w is not None:
            s1, a1 = w[_SEQ], w[_ASEQ]
            if (s1 | a1) & 1:
                return None
            values = struct.unpack_from("<8Q", self._map, _FIRST_FIELD * 8)  # type: ignore[arg-type]
            if w[_ASEQ] != a1 or w[_SEQ] != s1:
                return None
            return Control(*values)
        s1, a1 = self._get(_SEQ), self._get(_ASEQ)
        if (s1 | a1) & 1:
            return None
        values = struct.unpack("<8Q", self._pread(64, _FIRST_FIELD * 8))
        if self._get(_ASEQ) != a1 or self._get(_SEQ) != s1:
            return None
        return Control(*values)

    def fields(self) -> Control:
        """The counters as they stand, consistent or not (for recovery from a writer that died mid-update).

        Each is one aligned 8-byte word, so each is some value a writer wrote, never a torn one.
        """
        return Control(*(self._get(_FIRST_FIELD + i) for i in range(len(_FIELDS))))

    # ------------------------------------------------------------------ writers

    def write(self, control: Control) -> None:
        """Publish the page lock's fields of ``control`` (page lock held); never ``appended`` or ``last_lsn``.

        Those belong to the append lock's holder (:meth:`write_appended`): a
        copy read under the page lock alone may hold an ``appended`` that an
        appender has moved past since, and writing it back would hand the
        appender's place in the log to the next frame.
        """
        seq = self._get(_SEQ)
        if seq & 1:
            seq += 1  # a writer died mid-update: its half-written fields are overwritten now
        self._put(_SEQ, seq + 1)
        run2 = _PACK_2.pack(control.synced, control.commits)
        run4 = _PACK_4.pack(control.synced_lsn, control.folded, control.folded_lsn, control.folds)
        if self._map is not None:
            self._map[_SYNCED * 8 : _SYNCED * 8 + 16] = run2
            self._map[_SYNCED_LSN * 8 : _SYNCED_LSN * 8 + 32] = run4
        else:
            self._pwrite(run2, _SYNCED * 8)
            self._pwrite(run4, _SYNCED_LSN * 8)
        self._put(_SEQ, seq + 2)

    def write_appended(self, appended: int, last_lsn: int) -> None:
        """Publish where the log ends and its last sequence number (append lock held; no page lock needed)."""
        aseq = self._get(_ASEQ)
        if aseq & 1:
            aseq += 1  # an appender died mid-update (the log re-derives such a page before anyone appends)
        self._put(_ASEQ, aseq + 1)
        self._put(_APPENDED, appended)
        self._put(_LAST_LSN, last_lsn)
        self._put(_ASEQ, aseq + 2)

    def initialise(self, control: Control, boot: int) -> None:
        """Write the whole page from scratch, in this layout (after a reboot or a rescan). Both locks held."""
        self.write_appended(control.appended, control.last_lsn)
        self.write(control)
        self._put(_BOOT, boot)
        header = CONTROL_MAGIC + struct.pack("<II", LAYOUT, 0)
        if self._map is not None:
            self._map[:16] = header
        else:
            self._pwrite(header, 0)

    def repair(self) -> None:
        """Close updates a dead writer left open (a seqlock odd), keeping its fields as they are. Both locks held.

        The log re-derives the fields instead (``Log._unstick``); this is for a page nobody derives.
        """
        for word in (_SEQ, _ASEQ):
            seq = self._get(word)
            if seq & 1:
                self._put(word, seq + 1)

    def close(self) -> None:
        """Unmap and close (idempotent)."""
        if self._words is not None:
            self._words.release()
            self._words = None
        if self._map is not None:
            # A view that escaped would make close() raise; the fd close still frees it.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
