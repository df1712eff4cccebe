"""The storage engine: reads, writes, batches, splits, recovery, the log's glue (layer L2).

One room per role, each a module with one job and its invariant in its
docstring; ``Engine`` (in ``_core``) is assembled from them, one class over
the next::

    _ops.py      Op, copy_value (and copier), the one conditional-write rule
    _handle.py   per-process state, closed and fork checks, value limits
    _marker.py   the store marker, format versions, the root's layout
    _reads.py    views, the shard cache, lock-free gets, listings
    _batch.py    multi-shard batches: intents and their recovery
    _split.py    shard splits (crash-safe without a manifest), maintain_shard
    _commit.py   commits to the shard files (format 1, and the fold's installs)
    _decide.py   write decisions under the log's append lock; carried created_at
    _log.py      the write-ahead log in front of the shards: fold, pin
    _core.py     Engine: open, apply, close
    _api.py      EngineAPI: the backend-neutral part of the engine interface

The layers above use the methods docs/architecture.md lists under "The engine
interface"; this package is their one front door (import from
``filemem._engine``, never from a room).
"""

from __future__ import annotations

from ._api import EngineAPI
from ._batch import _parse_intent
from ._commit import _max_locks
from ._core import Engine
from ._handle import CacheEntryLike, ShardCacheLike, _fork_generation
from ._log import FOLD_BYTES, FOLD_IDLE_S, LogPin, _max_version
from ._marker import (
    BATCH_DIR,
    BATCH_SUFFIX,
    INDEX_DIR,
    INTERNAL_DIR,
    INTERNAL_NS,
    JOURNAL_DIR,
    MARKER,
    NEW_STORE_FORMAT,
    NS_DIR,
    QUARANTINE_DIR,
    ROOT_ENTRIES,
    SESSION_DIR,
    STORE_FORMAT_VERSION,
    _read_marker,
)
from ._ops import (
    MAX_DEPTH,
    UNDECODED,
    Op,
    OpKind,
    _checked_version,
    check_nesting,
    copier,
    copy_value,
    undecoded_put,
)
from ._split import maintain_shard

__all__ = [
    "BATCH_DIR",
    "BATCH_SUFFIX",
    "FOLD_BYTES",
    "FOLD_IDLE_S",
    "INDEX_DIR",
    "INTERNAL_DIR",
    "INTERNAL_NS",
    "JOURNAL_DIR",
    "MARKER",
    "MAX_DEPTH",
    "NEW_STORE_FORMAT",
    "NS_DIR",
    "QUARANTINE_DIR",
    "ROOT_ENTRIES",
    "SESSION_DIR",
    "STORE_FORMAT_VERSION",
    "UNDECODED",
    "CacheEntryLike",
    "Engine",
    "EngineAPI",
    "LogPin",
    "Op",
    "OpKind",
    "ShardCacheLike",
    "_checked_version",
    "_fork_generation",
    "_max_locks",
    "_max_version",
    "_parse_intent",
    "_read_marker",
    "check_nesting",
    "copier",
    "copy_value",
    "maintain_shard",
    "undecoded_put",
]
