"""The collector's journal thread: write what ``collect()`` queued as one group, fsync once, hand it on (layer L4).

A mixin of :class:`~filemem._collector._writer.Collector`, kept apart because
it is one mechanism. Invariant: a record is *accepted* (counted, and handed
to the apply thread) only after the group holding its frame was appended and
fsynced; from then on it waits in the spools as (id, frame offset, size),
and the journal holds the rest. A group that could not be journaled while
closing is handed on unjournaled (``_unjournaled``), never dropped.

Everything done under the collector's lock here is O(1) or C-speed work on
arrays (``collect()`` waits for that lock); the per-record work runs outside it.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from itertools import accumulate
from typing import Final

from .._errors import FileMemError
from ._apply import IDLE_WAIT_S, ApplyLoop
from ._breaker import backoff_delay
from ._spool import Hot, Rec, Taken, recs_of_taken, sealed

__all__ = ["Bell", "JournalLoop"]

#: Most records waiting to be applied with their fields kept in memory (``Spool.extend_packed``'s
#: ``hot``): a few batches' worth, ~250 bytes each; past it they wait as 20 bytes and are read back.
_HOT_RECORDS: Final = 8192


class Bell:
    """Wakes one waiting thread; ``ring()`` is a C call or two (``threading.Event.set`` costs ~1-2 us of Python).

    The lock is held while nobody rang; ``ring()`` releases it, ``wait()``
    takes it back (so a ring is consumed once, and a ring while nobody waits
    makes the next wait return at once, as a set Event would).

    >>> bell = Bell(); bell.ring(); bell.wait(0.0)
    True
    """

    __slots__ = ("lock",)

    def __init__(self) -> None:
        #: Held while not rung: ``lock.locked()`` False means rung and not yet heard (a caller
        #: on a hot path may test it before calling ``ring``).
        self.lock = threading.Lock()
        self.lock.acquire()

    def ring(self) -> None:
        """Wake the waiter (or the next wait). Thread-safe; never blocks."""
        if self.lock.locked():
            try:  # noqa: SIM105 - contextlib.suppress would cost a context manager on collect()'s hot path
                self.lock.release()
            except RuntimeError:  # another thread rang first: it is rung
                pass

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a ring; True if rung (the ring is consumed)."""
        return self.lock.acquire(timeout=timeout)


class JournalLoop(ApplyLoop):
    """The journal thread's half of the collector (state is set up by Collector.__init__)."""

    _jwake: Bell
    _jgroup: Taken | None
    _unjournaled: set[int]

    def _journal_loop(self) -> None:
        journal = self._journal
        assert journal is not None
        attempt = 0
        while True:
            self._jwake.wait(IDLE_WAIT_S)
            if self.config.journal_group_delay:
                time.sleep(self.config.journal_group_delay)
            with self._lock:
                group = self._incoming.take_all() if self._incoming else None  # hands the buffer over: no copy
                if group is not None:
                    self._jbatch_min = group.first_seq
                    self._jgroup = group
            self._let_callers_in()
            if group is None:
                if self._stop.is_set():
                    return
                continue
            # The frames of records queued as fields are packed here, outside the lock and off
            # collect()'s path (close() recovers the group from _jgroup as it was taken).
            group = sealed(group, self._codec.name)
            journaled = False
            base = 0  # where the group starts in the journal file
            while True:
                try:
                    with self._file_lock:
                        base = journal.offset
                        journal.append(group.data)
                        journal.flush()
                        self._in_file += len(group.seqs)
                    attempt = 0
                    journaled = True
                    break
                except FileMemError as exc:
                    self._counts["journal_errors"] += 1
                    self.last_error = f"journal: {exc}"
                    attempt += 1
                    if self._stop.wait(
                        backoff_delay(attempt, self.config.backoff_base, self.config.backoff_max, self._rng)
                    ):
                        # Closing with the journal failing: hand the group on
                        # unjournaled rather than lose it.
                        break
            # Worked out outside the lock, which collect() waits for.
            recs: list[Rec] = [] if journaled else recs_of_taken(group)
            by_prio: list[tuple[int, array[int], array[int], array[int], list[Hot] | None]] = []
            if journaled:
                offs = array("q", accumulate(group.sizes, initial=base))  # where each frame starts
                offs.pop()  # (the end of the last)
                prios = group.prios
                # The fields collect() had stay beside the frames while few records wait (the
                # apply thread then need not read them back: a third of its work, issue 13); a
                # long line keeps only where each frame is, so memory stays ~20 bytes a record.
                hot = group.hot if self._ready_count() + len(prios) <= _HOT_RECORDS else None
                if prios.count(prios[0]) == len(prios):
                    by_prio.append((prios[0], group.seqs, offs, group.sizes, hot))
                else:
                    for prio in range(len(self._ready)):
                        keep = [i for i, p in enumerate(prios) if p == prio]
                        if keep:
                            by_prio.append(
                                (
                                    prio,
                                    array("q", [group.seqs[i] for i in keep]),
                                    array("q", [offs[i] for i in keep]),
                                    array("I", [group.sizes[i] for i in keep]),
                                    None if hot is None else [hot[i] for i in keep],
                                )
                            )
            with self._lock:
                # From now on the journal holds each record: the line keeps where its frame is (and
                # its fields, if hot).
                for prio, seqs, offs_, sizes, hot_ in by_prio:
                    self._ready[prio].extend_packed(seqs, offs_, sizes, hot_)
                for r in recs:
                    self._ready[r.prio].append(r)
                self._jbatch_min = math.inf
                self._jgroup = None
                if journaled:
                    self._counts["accepted"] += len(group.seqs)
                else:
                    self._unjournaled.update(group.seqs)
            self._let_callers_in()
            self._wake_applier()
