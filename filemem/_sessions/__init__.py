"""Sessions (layer L4): a registry every process sees, liveness without heartbeats, limits, isolation.

One file per mechanism: ``_api`` (the Protocols a session storage
implements: files here, tables in ``_backends/postgres``), ``_record`` (what
a session file holds, where files live), ``_registry`` (records and lock-based liveness), ``_slots`` (limits,
slots, the waiting room), ``_confine`` (the confined store facade),
``_session`` (the owner's handle), ``_events`` (session changes as a feed,
stop callbacks), ``_checker`` (``check()``), ``_hub`` (all of it for one
store). See docs/sessions.md.
"""

from __future__ import annotations

from ._api import Releasable, SessionRegistry, SessionSlots
from ._checker import check_sessions
from ._confine import SessionBatch, SessionStore, StoreLike
from ._hub import SessionHub, normalize_shared
from ._record import SessionInfo, validate_id
from ._session import Session

__all__ = [
    "Releasable",
    "Session",
    "SessionBatch",
    "SessionHub",
    "SessionInfo",
    "SessionRegistry",
    "SessionSlots",
    "SessionStore",
    "StoreLike",
    "check_sessions",
    "normalize_shared",
    "validate_id",
]
