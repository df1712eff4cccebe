"""Session records: what a session file holds, and where its files live (layer L4).

Layout under ``<store>/sessions/``::

    <id>.session        the record (JSON), replaced whole by atomic rename
    <id>.lock           held exclusively by the owner while it lives (liveness)
    <id>.stop           created by request_stop(); the owner polls for it
    limits.json         persisted max_sessions per scope (see _slots)
    slots/<scope>/<i>.slot     slot locks: holding slot i's lock = holding a slot
    queue/<scope>/<prio>_<arrival>_<id>.ticket   the waiting room
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .._errors import InvalidKeyError, InvalidValueError

__all__ = [
    "FINAL_STATES",
    "RECORD_SUFFIX",
    "SessionInfo",
    "SessionState",
    "decode_record",
    "encode_record",
    "validate_id",
]

RECORD_SUFFIX: Final = ".session"
LOCK_SUFFIX: Final = ".lock"
STOP_SUFFIX: Final = ".stop"
TICKET_SUFFIX: Final = ".ticket"
SLOT_SUFFIX: Final = ".slot"
#: In each ``slots/<scope>/``: serialises admissions (count the held slots, then take one).
SLOT_GATE: Final = "gate.lock"
QUEUE_DIR: Final = "queue"
SLOTS_DIR: Final = "slots"
LIMITS_FILE: Final = "limits.json"
LIMITS_LOCK: Final = "limits.lock"
#: Version of the record format, written into every record.
RECORD_FORMAT: Final = 1
#: Largest encoded metadata accepted (records are rewritten on every update).
METADATA_MAX_BYTES: Final = 64 * 1024

#: ``waiting``: registered, waiting for a slot; ``running``: started;
#: ``ended``: closed by its owner; ``crashed``: its owner died without closing.
SessionState = Literal["waiting", "running", "ended", "crashed"]
FINAL_STATES: Final = frozenset({"ended", "crashed"})
_ID_RE: Final = re.compile(r"[0-9a-f]{8,64}")


def validate_id(session_id: object) -> str:
    """Return ``session_id`` if it can name a session file, else raise InvalidKeyError."""
    if not isinstance(session_id, str) or not _ID_RE.fullmatch(session_id):
        raise InvalidKeyError(f"not a session id: {session_id!r}", key=repr(session_id))
    return session_id


def check_metadata(metadata: object) -> dict[str, Any]:
    """A JSON-encodable dict of at most METADATA_MAX_BYTES, or InvalidValueError."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InvalidValueError("session metadata must be a dict with str keys")
    try:
        size = len(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"session metadata is not JSON-encodable: {exc}") from exc
    if size > METADATA_MAX_BYTES:
        raise InvalidValueError(f"session metadata encodes to {size} bytes; the limit is {METADATA_MAX_BYTES}")
    return json.loads(json.dumps(metadata))  # type: ignore[no-any-return]  # a deep copy of plain JSON


def check_progress(progress: object) -> float | None:
    """None or a finite number (any range; 0..1 by convention)."""
    if progress is None:
        return None
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not math.isfinite(progress):
        raise InvalidValueError(f"progress must be a finite number or None, not {progress!r}")
    return float(progress)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What every process can see of a session (``Store.sessions()``, ``Session.info()``).

    ``state`` is the life cycle (``"waiting"``, ``"running"``, ``"ended"``,
    ``"crashed"``); ``status`` and ``progress`` are whatever the session last
    reported with ``set_status``. ``operations`` and ``bytes_written`` count
    calls made through the session's ``store`` facade (refreshed on disk at
    least every half second while it works, and at ``set_status``/``close``).
    ``heartbeat_at`` is the last time the record was written: for display
    only, liveness never depends on it. ``alive`` is whether the owner held
    its lock when this was read.

    Example::

        for info in store.sessions(alive=True):
            print(info.agent, info.status, info.progress, info.pid)
    """

    id: str
    agent: str
    pid: int
    host: str
    registered_at: float
    started_at: float | None
    state: SessionState
    status: str
    progress: float | None
    priority: int
    metadata: dict[str, Any] = field(default_factory=dict)
    namespace: tuple[str, ...] | None = None
    shared: tuple[tuple[str, ...], ...] = ()
    operations: int = 0
    bytes_written: int = 0
    heartbeat_at: float = 0.0
    ended_at: float | None = None
    stop_requested: bool = False
    alive: bool = False


def encode_record(info: SessionInfo) -> bytes:
    """The record's bytes (one JSON object and a newline)."""
    body = {
        "filemem_session": RECORD_FORMAT,
        "id": info.id,
        "agent": info.agent,
        "pid": info.pid,
        "host": info.host,
        "registered_at": info.registered_at,
        "started_at": info.started_at,
        "state": info.state,
        "status": info.status,
        "progress": info.progress,
        "priority": info.priority,
        "metadata": info.metadata,
        "namespace": list(info.namespace) if info.namespace is not None else None,
        "shared": [list(s) for s in info.shared],
        "operations": info.operations,
        "bytes_written": info.bytes_written,
        "heartbeat_at": info.heartbeat_at,
        "ended_at": info.ended_at,
    }
    return json.dumps(body, sort_keys=True, allow_nan=False).encode() + b"\n"


def decode_record(data: bytes) -> SessionInfo:
    """Parse a record; ValueError if it is not one this filemem can read."""
    obj = json.loads(data)
    if not isinstance(obj, dict) or obj.get("filemem_session") != RECORD_FORMAT:
        raise ValueError("not a session record of a known format")
    try:
        ns = obj["namespace"]
        state = obj["state"]
        if state not in ("waiting", "running", "ended", "crashed"):
            raise ValueError(f"unknown session state {state!r}")
        return SessionInfo(
            id=validate_id(obj["id"]),
            agent=str(obj["agent"]),
            pid=int(obj["pid"]),
            host=str(obj["host"]),
            registered_at=float(obj["registered_at"]),
            started_at=None if obj["started_at"] is None else float(obj["started_at"]),
            state=state,
            status=str(obj["status"]),
            progress=None if obj["progress"] is None else float(obj["progress"]),
            priority=int(obj["priority"]),
            metadata=dict(obj["metadata"]),
            namespace=None if ns is None else tuple(str(s) for s in ns),
            shared=tuple(tuple(str(s) for s in sh) for sh in obj["shared"]),
            operations=int(obj["operations"]),
            bytes_written=int(obj["bytes_written"]),
            heartbeat_at=float(obj["heartbeat_at"]),
            ended_at=None if obj["ended_at"] is None else float(obj["ended_at"]),
        )
    except (KeyError, TypeError, InvalidKeyError) as exc:
        raise ValueError(f"malformed session record: {exc}") from exc


def record_path(directory: str, session_id: str) -> str:
    """The record file of a session."""
    return os.path.join(directory, session_id + RECORD_SUFFIX)


def lock_path(directory: str, session_id: str) -> str:
    """The liveness lock file of a session."""
    return os.path.join(directory, session_id + LOCK_SUFFIX)


def stop_path(directory: str, session_id: str) -> str:
    """The stop-request file of a session."""
    return os.path.join(directory, session_id + STOP_SUFFIX)
