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
        admin                        whole-store operations for tools: export/import/convert/info/stats
    L5  _demo                        the demo: planner and worker agent processes
        memory                       agent memory kinds (sync and async faces), context assembly
        _async, aio                  AsyncStore: the async twin, calls run in worker threads
        _store, _snapshot            Store facade and Batch; Snapshot, MappingView
        _store_features              Store's search and scan, sessions and collector facets
        _health                      Store's health() findings and maintain(): proactive upkeep
    L4  _collector                   fire-and-forget collector, durable journal, replay, dead letters
        _sessions                    session registry, lock-based liveness, limits, confinement
        _search                      search: filters, BM25, vectors, per-namespace index files
    L3  _freshness                    cache + watcher + feed of one store in one process
        _cache, _feed, _watch         TTL/LRU shard cache, change feed, file-system watchers
    L2  _check, _maintain             checker; compaction, merging tiny shards, live codec conversion
        _engine, _view, _shard        engine (read, write, batch, split); shard resolution; format
        _wal                         write-ahead log of v2 stores: segments, control page, overlay, fold
    L1  _fs, _locks, _names, codecs   atomic file I/O, locks, names, codecs
    L0  _errors, _types               exception tree, plain data types

Everything behind a leading underscore is private; this module is the front
door. The public submodules: ``filemem.codecs`` (the codec extension point),
``filemem.aio`` (asyncio), ``filemem.memory`` (agent memory kinds) and
``filemem.admin`` (the whole-store toolbox behind the command line).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._collector import Collector as Collector
from ._collector import CollectorConfig as CollectorConfig
from ._collector import DeadLetter as DeadLetter
from ._errors import ConflictError as ConflictError
from ._errors import CorruptShardError as CorruptShardError
from ._errors import FileMemError as FileMemError
from ._errors import FlushTimeoutError as FlushTimeoutError
from ._errors import InvalidKeyError as InvalidKeyError
from ._errors import InvalidQueryError as InvalidQueryError
from ._errors import InvalidValueError as InvalidValueError
from ._errors import LockTimeout as LockTimeout
from ._errors import QueueFullError as QueueFullError
from ._errors import ReadOnlyError as ReadOnlyError
from ._errors import SessionLimitError as SessionLimitError
from ._errors import SessionPermissionError as SessionPermissionError
from ._errors import StorageError as StorageError
from ._errors import StoreClosedError as StoreClosedError
from ._errors import UnsupportedFeatureError as UnsupportedFeatureError
from ._errors import UnsupportedFormatError as UnsupportedFormatError
from ._feed import Change as Change
from ._feed import Subscription as Subscription
from ._health import HealthFinding as HealthFinding
from ._health import MaintenanceReport as MaintenanceReport
from ._health import MaintenanceStep as MaintenanceStep
from ._search import SearchHit as SearchHit
from ._sessions import Session as Session
from ._sessions import SessionBatch as SessionBatch
from ._sessions import SessionInfo as SessionInfo
from ._sessions import SessionStore as SessionStore
from ._snapshot import MappingView as MappingView
from ._snapshot import Snapshot as Snapshot
from ._store import Batch as Batch
from ._store import Store as Store
from ._types import Consistency as Consistency
from ._types import Finding as Finding
from ._types import Item as Item

# The async face and the memory kinds load on first use (PEP 562): they pull
# in asyncio (and with it ssl, sockets, selectors), about 10 MB of RSS that a
# process doing plain puts and gets never needs (issue 13, memory per process).
if TYPE_CHECKING:
    from ._async import AsyncStore as AsyncStore
    from .memory import AsyncEpisodic as AsyncEpisodic
    from .memory import AsyncGenerationCache as AsyncGenerationCache
    from .memory import AsyncSemantic as AsyncSemantic
    from .memory import AsyncSites as AsyncSites
    from .memory import AsyncSkills as AsyncSkills
    from .memory import AsyncWorklog as AsyncWorklog
    from .memory import Episodic as Episodic
    from .memory import GenerationCache as GenerationCache
    from .memory import Semantic as Semantic
    from .memory import Sites as Sites
    from .memory import Skills as Skills
    from .memory import Worklog as Worklog
    from .memory import arecall_context as arecall_context
    from .memory import recall_context as recall_context

_LAZY: dict[str, str] = {
    "AsyncStore": "._async",
    "AsyncEpisodic": ".memory",
    "AsyncGenerationCache": ".memory",
    "AsyncSemantic": ".memory",
    "AsyncSites": ".memory",
    "AsyncSkills": ".memory",
    "AsyncWorklog": ".memory",
    "Episodic": ".memory",
    "GenerationCache": ".memory",
    "Semantic": ".memory",
    "Sites": ".memory",
    "Skills": ".memory",
    "Worklog": ".memory",
    "arecall_context": ".memory",
    "recall_context": ".memory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'filemem' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "AsyncEpisodic",
    "AsyncGenerationCache",
    "AsyncSemantic",
    "AsyncSites",
    "AsyncSkills",
    "AsyncStore",
    "AsyncWorklog",
    "Batch",
    "Change",
    "Collector",
    "CollectorConfig",
    "ConflictError",
    "Consistency",
    "CorruptShardError",
    "DeadLetter",
    "Episodic",
    "FileMemError",
    "Finding",
    "FlushTimeoutError",
    "GenerationCache",
    "HealthFinding",
    "InvalidKeyError",
    "InvalidQueryError",
    "InvalidValueError",
    "Item",
    "LockTimeout",
    "MaintenanceReport",
    "MaintenanceStep",
    "MappingView",
    "QueueFullError",
    "ReadOnlyError",
    "SearchHit",
    "Semantic",
    "Session",
    "SessionBatch",
    "SessionInfo",
    "SessionLimitError",
    "SessionPermissionError",
    "SessionStore",
    "Sites",
    "Skills",
    "Snapshot",
    "StorageError",
    "Store",
    "StoreClosedError",
    "Subscription",
    "UnsupportedFeatureError",
    "UnsupportedFormatError",
    "Worklog",
    "__version__",
    "arecall_context",
    "recall_context",
]
