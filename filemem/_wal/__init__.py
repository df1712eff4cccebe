"""The write-ahead log in front of the shard files (layer L2). docs/format.md and docs/concurrency.md describe it.

One room per role, after leveldb's ``db/``:

* ``_format``   the bytes of segments, frames and batches
* ``_platform`` pwrite / fdatasync / fallocate / mmap / flock, with portable fallbacks
* ``_writer``   appending a frame at the log's end; syncing
* ``_reader``   scanning frames, stopping at a torn or damaged tail
* ``_control``  the shared control page (where the log ends, what is synced, what is folded)
* ``_overlay``  this process's map of unfolded records
* ``_carry``    a put's created_at carried over from the previous record, resolved later
* ``_fold``     moving synced records into the shards; the checkpoint
* ``_log_core`` the append lock and a consistent control page, shared by the parts of :class:`Log`
* ``_log_fold`` the fold's steps and checkpoints, segment retirement, pins
* ``_log_reads`` the commit counter, and the overlay brought up to the synced end of the log
* ``_repair``   checking and repairing the log
* ``_log``      the coordinator the engine talks to (:class:`Log`): open, close, reads, writes
"""

from ._log import WAL_DIR, Log

__all__ = ["WAL_DIR", "Log"]
