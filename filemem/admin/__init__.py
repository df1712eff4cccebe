"""Operations on a whole store, for tools and notebooks: the ``filemem`` command line is a thin shell over these.

Layer: just above the Store facade and below the command line. Every
function takes an open :class:`filemem.Store`; read operations work on a
store opened ``readonly=True`` and never write, writing ones take the same
locks as the library.

Example::

    import filemem.admin as admin

    with admin.open_store("./memories") as store:          # read-only
        print(admin.info(store).records)
        with open("dump.jsonl", "w") as fh:
            admin.export_records(store, fh)
    with admin.open_store("./copy", readonly=False, create=True) as copy, open("dump.jsonl") as fh:
        admin.import_records(copy, fh)

=====================  ==================================================
``open_store``         open a store as the CLI does (read-only, strict reads)
``info``               format, codec, namespaces, records, shards, size
``namespace_info``     the same figures for one namespace
``stats``              shard size and depth distribution, lock and cache figures
``export_records``     every record as JSON Lines
``import_records``     JSON Lines back in, validated first, atomic per batch, dry run
``copy_store``         every record into another store (directory <-> postgresql://)
``check``              ``Store.check`` with progress
``compact``            drop expired records, finish splits, merge tiny shards
``convert``            rewrite every shard with another codec, live
``fold``               move the write-ahead log's records into the shard files now
``upgrade``            upgrade a store to the newest format (the write-ahead log)
``watch``              iterate over changes made by any process
``bench``              a short benchmark against a JSON file plus a lock
=====================  ==================================================
"""

from __future__ import annotations

from ._bench import BenchReport, bench
from ._copy import CopyReport, copy_store
from ._inspect import NamespaceInfo, StoreInfo, info, namespace_info, stats
from ._jsonl import EXPORT_VERSION, ImportReport, export_records, from_json_value, import_records, to_json_value
from ._ops import check, compact, convert, fold, open_store, upgrade, watch

__all__ = [
    "EXPORT_VERSION",
    "BenchReport",
    "CopyReport",
    "ImportReport",
    "NamespaceInfo",
    "StoreInfo",
    "bench",
    "check",
    "compact",
    "convert",
    "copy_store",
    "export_records",
    "fold",
    "from_json_value",
    "import_records",
    "info",
    "namespace_info",
    "open_store",
    "stats",
    "to_json_value",
    "upgrade",
    "watch",
]
