"""The collector's full-queue policy: ``on_full`` = raise, block or drop_oldest (layer L4).

A mixin of :class:`~filemem._collector._writer.Collector`, kept apart because
it is one mechanism. Invariant: a record pushed out to make room is never
lost: it counts as queued (and ``flush()`` waits for it) until its dead
letter is fsynced, and only then is its id retired from the journal (or a
replay would bring back what was reported dropped). If the letter cannot be
written, the record goes back in line and ``QueueFullError`` says why.
"""

from __future__ import annotations

import time

from .._errors import FileMemError, QueueFullError
from ._apply import IDLE_WAIT_S, ApplyLoop
from ._journal import encode_frame
from ._journal_thread import Bell
from ._spool import Rec, rec_of_frame

__all__ = ["FullQueue", "WouldBlock"]


class WouldBlock(Exception):  # noqa: N818 - internal signal, never escapes acollect
    """collect(wait=False) found the queue full under on_full="block" (or "drop_oldest")."""


class FullQueue(ApplyLoop):
    """What ``collect()`` does when the queue is full (state is set up by Collector.__init__)."""

    _jwake: Bell
    #: Records being dropped (on_full="drop_oldest") whose letter is not written yet: seq -> journaled.
    _dropping: dict[int, bool]

    def _check_usable(self) -> None:
        raise NotImplementedError  # Collector's

    def _drop_durably(self, victim: Rec) -> None:
        """Write the dead letter of a record ``_drop_one`` took out of line, then retire it.

        The victim still counts as queued (and flush waits for it) until its
        letter is fsynced. If the letter cannot be written, the victim goes back
        in line (nothing is lost) and QueueFullError says why.
        """
        try:
            self._dead_letter([victim], "dropped", "queue full (on_full='drop_oldest')")
        except FileMemError as exc:
            with self._progress:
                journaled = self._dropping.pop(victim.seq)
                if journaled:
                    self._ready[victim.prio].appendleft(victim)
                else:
                    frame = encode_frame(
                        victim.seq, victim.ts, victim.prio, victim.ns, victim.key, self._codec.name, victim.payload
                    )
                    self._incoming.appendleft(victim.seq, victim.prio, frame)
                self._progress.notify_all()
            self.last_error = f"dead letter for dropped record {victim.seq}: {exc}"
            if journaled:
                self._awake.set()
            else:
                self._jwake.ring()
            raise QueueFullError(
                f"collector queue is full ({self.config.max_queue} records) and the dead letter of the record "
                f"to drop could not be written ({exc}); it stays queued"
            ) from exc
        with self._progress:
            journaled = self._dropping.pop(victim.seq)
            if journaled and self._journal is not None:
                # It is in the journal: retire it there, or a replay would
                # bring back what we report as dropped. Only now, with its
                # letter durable, may the marker name it.
                self._retired.add_range(victim.seq, victim.seq)
            self._queued -= 1
            self._counts["dropped"] += 1
            self._progress.notify_all()

    def _make_room(self, wait: bool) -> Rec | None:
        """With the lock held and the queue full: apply ``on_full``. Returns a dropped record."""
        policy = self.config.on_full
        if policy == "raise":
            raise QueueFullError(f"collector queue is full ({self.config.max_queue} records waiting)")
        if not wait:
            # acollect: dropping costs an fsync (the dead letter) and blocking
            # waits; both belong in a worker thread, not on the event loop.
            raise WouldBlock
        deadline = None if self.config.block_timeout is None else time.monotonic() + self.config.block_timeout
        while self._queued >= self.config.max_queue:
            if policy == "drop_oldest":
                victim = self._drop_one()
                if victim is not None:
                    return victim
                # Everything waiting is in the writers' hands (the group being
                # journaled, the batch in flight): wait until some is droppable.
            self._check_usable()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise QueueFullError(
                    f"collector queue stayed full ({self.config.max_queue} records) for {self.config.block_timeout}s"
                )
            self._progress.wait(IDLE_WAIT_S / 10 if remaining is None else min(remaining, IDLE_WAIT_S / 10))
        return None

    def _drop_one(self) -> Rec | None:
        """With the lock held: take the oldest queued record of the lowest priority out of line.

        It stays counted as queued, in ``_dropping``, until ``_drop_durably`` has written its letter.
        """
        for q in reversed(self._ready):  # lowest priority first; oldest of it
            if q:
                victim = q.popleft()
                try:
                    self._load([victim])  # its letter needs the record, which waits in the journal
                except FileMemError:
                    q.appendleft(victim)
                    raise
                self._dropping[victim.seq] = True  # journaled: to retire once its letter is durable
                return victim
        if self._incoming:
            victim = rec_of_frame(*self._incoming.popleft())  # not journaled yet: nothing to retire
            self._dropping[victim.seq] = False
            return victim
        return None
