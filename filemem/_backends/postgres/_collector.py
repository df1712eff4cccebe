"""What the collector needs of a store, on a server: a local journal directory, the server's transactions (issue 16).

Invariant: a collector on a ``postgresql://`` store journals to a directory
on *this machine* (the journal is what survives the collecting process:
it must be local and fsynced, never on the server), and marks the journal
ids it applied in the server's tables *in the same transaction* as the
records they name: each apply batch is one ``Writer.apply``, the marker a
row of ``filemem_records`` in the internal namespace
``(INTERNAL_NS, "collector", <jid>)``. A marker row and the records it names
therefore commit together or not at all, which is what makes replay of a
dead collector's journal exactly once (``filemem._collector._replay``).

The journal directory is ``$FILEMEM_JOURNAL_DIR/<store id>`` if that variable
is set, else ``<state dir>/filemem/journals/<store id>`` (``$XDG_STATE_HOME``
or ``~/.local/state``), where the store id is a digest of the server, the
database and the schema: every process of this machine that opens the same
store finds, and recovers, the journals of collectors that died here. A
journal left on a machine that never opens the store again is never
replayed; ``check()`` on that machine reports it. Recovery never drops a
marker row it did not retire itself (``marker_ids``): another machine's
dead collector may still need it.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any, Final

import psycopg

from ..._engine import Op
from ..._names import escape_segment, unescape_segment
from ..._shard import Record
from ...codecs import Codec
from ._connect import translate
from ._names import INTERNAL_TEXT, encode_ns

if TYPE_CHECKING:
    from ._backend import PostgresBackend

__all__ = ["JOURNAL_DIR_ENV", "ServerJournalEngine", "journal_root"]

#: Environment variable naming the directory under which server stores keep their journals.
JOURNAL_DIR_ENV: Final = "FILEMEM_JOURNAL_DIR"
_MARKER_AREA: Final = "collector"


def journal_root(location: str) -> str:
    """The local directory that holds the journals of the store at ``location`` (see the module docstring)."""
    base = os.environ.get(JOURNAL_DIR_ENV)
    if not base:
        state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        base = os.path.join(state, "filemem", "journals")
    return os.path.join(base, hashlib.blake2b(location.encode(), digest_size=10).hexdigest())


class ServerJournalEngine:
    """The engine surface ``filemem._collector`` uses, over a server store and a local journal directory."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend
        #: The collector's ``<root>/journals`` is this machine's journal directory for the store.
        self.root = journal_root(backend.location)

    # The settings the collector reads from an engine.
    @property
    def codec(self) -> Codec:
        return self._backend.codec

    @property
    def sync(self) -> bool:
        """Journals are fsynced unless the store was opened with durability="flush" (as on files)."""
        return self._backend.durability == "fsync"

    @property
    def readonly(self) -> bool:
        return self._backend.readonly

    @property
    def max_value_bytes(self) -> int:
        return self._backend.max_value_bytes

    @property
    def lock_timeout_s(self) -> float:
        return self._backend.lock_timeout_s

    def check_open(self) -> None:
        self._backend.check_open()

    def read(self, namespace: tuple[str, ...], key: str) -> Record | None:
        return self._backend.read(namespace, key)

    def apply(self, ops: list[Op]) -> list[Any]:
        """One server transaction: the records and the marker commit together."""
        return self._backend.apply(ops)

    # Markers are rows here, not directories (filemem._collector._applied.MarkerTable).
    def marker_ids(self) -> list[str]:
        """The markers recovery may treat as orphans: none.

        On files a marker whose journal is gone is left over from a retire
        cut short, and recovery drops it. Here the markers of every machine
        share the server while each journal is on its own machine: a marker
        whose journal is not *here* may belong to a collector that died on
        another machine and waits there for replay, and dropping it would
        replay its records twice. So recovery never drops a marker it did
        not retire itself; a retire cut short between unlinking the journal
        and dropping its marker leaves one small row behind (see
        ``all_marker_ids``).
        """
        return []

    def all_marker_ids(self) -> list[str]:
        """The journal ids that have a marker row on the server (every machine's)."""
        area = f"{INTERNAL_TEXT}/{escape_segment(_MARKER_AREA)}/"
        rows = self._backend._query(
            "collector markers",
            "SELECT DISTINCT ns FROM filemem_records WHERE ns >= %s AND ns < %s",
            (area, area[:-1] + "0"),
        )
        out = []
        for (ns,) in rows:
            seg = ns[len(area) :]
            if "/" not in seg:
                got = unescape_segment(seg)
                if got is not None:
                    out.append(got)
        return sorted(out)

    def drop_marker(self, namespace: tuple[str, ...]) -> None:
        """Delete a marker's rows (its journal is gone: nobody reads or writes it any more)."""
        self._backend.check_open()
        if self._backend.readonly:
            return
        with self._backend._conns.conn() as conn:
            try:
                conn.execute("DELETE FROM filemem_records WHERE ns = %s", (encode_ns(namespace),))
            except psycopg.Error as exc:
                raise translate(exc, "removing a collector marker", timeout_s=self.lock_timeout_s) from exc
