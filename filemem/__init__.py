"""filemem: a multi-process, file-based memory store for AI agents.

Many processes share one directory of memories: JSON or msgpack shard files
guarded by cross-platform file locks, written atomically, read lock-free.

Example::

    import filemem
    with filemem.Store("./memories") as store:
        store.put(("agent-1", "episodic"), "ep-42", {"task": "login", "ok": True})
        store.update(("agent-1", "stats"), "runs", lambda n: (n or 0) + 1)

Layers (a module imports only from its own layer or lower ones; CI checks it
with import-linter, see pyproject.toml)::

    L6  _cli, __main__               command line: a thin shell over the API
    L5  _store, _snapshot, _demo      Store facade and Batch; Snapshot, MappingView; demo agents
    L4  _collector                    fire-and-forget collector: journal, batches, breaker, dead letters
    L3  _freshness                    cache + watcher + feed of one store in one process
        _cache, _feed, _watch         TTL/LRU shard cache, change feed, file-system watchers
    L2  _check, _engine, _view, _shard checker; engine (read, write, batch, split); shard resolution; format
    L1  _fs, _locks, _names, codecs   atomic file I/O, locks, names, codecs
    L0  _errors, _types               exception tree, plain data types

Everything behind a leading underscore is private; this module is the front
door, and ``filemem.codecs`` is the one public extension point.
"""

from __future__ import annotations

from ._collector import Collector as Collector
from ._collector import CollectorConfig as CollectorConfig
from ._collector import DeadLetter as DeadLetter
from ._errors import ConflictError as ConflictError
from ._errors import CorruptShardError as CorruptShardError
from ._errors import FileMemError as FileMemError
from ._errors import FlushTimeoutError as FlushTimeoutError
from ._errors import InvalidKeyError as InvalidKeyError
from ._errors import InvalidValueError as InvalidValueError
from ._errors import LockTimeout as LockTimeout
from ._errors import QueueFullError as QueueFullError
from ._errors import ReadOnlyError as ReadOnlyError
from ._errors import StorageError as StorageError
from ._errors import StoreClosedError as StoreClosedError
from ._errors import UnsupportedFormatError as UnsupportedFormatError
from ._feed import Change as Change
from ._feed import Subscription as Subscription
from ._snapshot import MappingView as MappingView
from ._snapshot import Snapshot as Snapshot
from ._store import Batch as Batch
from ._store import Store as Store
from ._types import Consistency as Consistency
from ._types import Finding as Finding
from ._types import Item as Item

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Change",
    "Collector",
    "CollectorConfig",
    "ConflictError",
    "Consistency",
    "CorruptShardError",
    "DeadLetter",
    "FileMemError",
    "Finding",
    "FlushTimeoutError",
    "InvalidKeyError",
    "InvalidValueError",
    "Item",
    "LockTimeout",
    "MappingView",
    "QueueFullError",
    "ReadOnlyError",
    "Snapshot",
    "StorageError",
    "Store",
    "StoreClosedError",
    "Subscription",
    "UnsupportedFormatError",
    "__version__",
]
