"""Checking (and with ``fix`` repairing) the ``sessions/`` directory (layer L4).

Called by :meth:`filemem.Store.check`. Safe on a live store: a file is only
touched once the lock of the session it belongs to shows its owner is gone.
The directory is listed once, so sessions keep opening and closing meanwhile:
after a probe that finds no owner, the file is looked at again (still there,
record still absent or not final) before anything is reported.
Finding codes (stable):

``dead-session``        a record says waiting/running but its owner is dead; fix: mark it crashed
``corrupt-session``     a record that does not parse; fix (owner dead): remove it
``orphan-session-lock`` a session lock file with no record and no owner; fix: remove
``stale-stop-request``  a stop request for a session that is not alive; fix: remove
``stale-ticket``        a waiting-room ticket of a session that is not alive; fix: remove
``corrupt-limits``      limits.json does not parse (limits are ignored meanwhile); never touched
``temp-file``           a temp file of a writer that died; fix: remove
``foreign-file``        a file filemem did not write; reported, never touched
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from .. import _fs
from .._types import Finding
from ._record import (
    LIMITS_FILE,
    LIMITS_LOCK,
    LOCK_SUFFIX,
    QUEUE_DIR,
    RECORD_SUFFIX,
    SLOT_GATE,
    SLOT_SUFFIX,
    SLOTS_DIR,
    STOP_SUFFIX,
    decode_record,
    record_path,
)
from ._registry import Registry
from ._slots import parse_ticket

__all__ = ["check_sessions"]

#: found(code, path, message, action, severity="warning")
Found = Callable[..., None]


def _pid_alive(path: str) -> bool:
    """Whether the process named in a temp file's name (``...<pid>-<random>``) may still write it."""
    tail = path.rsplit(_fs.TEMP_MARK, 1)[-1]
    parts = tail.split("-")
    digits = "".join(c for c in parts[-2] if c.isdigit()) if len(parts) >= 2 else ""
    if not digits:
        return False
    pid = int(digits)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours to signal
    return True


def _unreadable(path: str) -> bool:
    """Whether ``path`` still holds a record that does not parse (read again, after the probe)."""
    got = _fs.read_file(path)
    if got is None:
        return False
    try:
        decode_record(got[0])
    except ValueError:
        return True
    return False


def check_sessions(registry: Registry, *, fix: bool) -> list[Finding]:
    """Findings about ``sessions/`` (empty on a healthy store, live sessions or not)."""
    directory = registry.dir
    if not os.path.isdir(directory):
        return []
    fix = fix and not registry.readonly
    findings: list[Finding] = []

    def found(code: str, path: str, message: str, action: str, severity: str = "warning") -> None:
        done = False
        if fix and action:
            done = _fs.remove_quietly(path) if action == "removed" else True
        findings.append(
            Finding(code, path, message, severity=severity, fixed=done, action=action if done else "")  # type: ignore[arg-type]
        )

    names = sorted(_fs.listdir(directory))
    records = {n[: -len(RECORD_SUFFIX)] for n in names if n.endswith(RECORD_SUFFIX) and _fs.TEMP_MARK not in n}
    now = time.time()
    for name in names:
        path = os.path.join(directory, name)
        if _fs.TEMP_MARK in name:
            if not _pid_alive(path):
                found("temp-file", path, "leftover temp file from a writer that died", "removed")
        elif name.endswith(RECORD_SUFFIX):
            session_id = name[: -len(RECORD_SUFFIX)]
            got = _fs.read_file(path)
            try:
                info = decode_record(got[0]) if got is not None else None
            except ValueError:
                if not registry.probe(session_id) and _unreadable(path):
                    found("corrupt-session", path, "session record does not parse", "removed", "error")
                continue
            if info is None or info.state in ("ended", "crashed") or registry.probe(session_id):
                continue
            # The owner may have closed between our read and the probe (it
            # writes "ended" before it drops its lock): only the record as it
            # is now, read after the probe, can say the owner died.
            now_info = registry.read(session_id)
            if now_info is None or now_info.state in ("ended", "crashed"):
                continue
            message = f"session {session_id} ({info.agent}, pid {info.pid}) is {info.state} but its owner is dead"
            if fix:
                registry._bury(session_id, now)
            found("dead-session", path, message, "marked crashed")
        elif name.endswith(LOCK_SUFFIX) and name != LIMITS_LOCK:
            session_id = name[: -len(LOCK_SUFFIX)]
            if (
                session_id not in records
                and not registry.probe(session_id)
                # Not a session that closed (and removed its lock) since we listed.
                and os.path.exists(path)
                and not os.path.exists(record_path(directory, session_id))
            ):
                found("orphan-session-lock", path, "session lock with no record and no owner", "removed")
        elif name.endswith(STOP_SUFFIX):
            session_id = name[: -len(STOP_SUFFIX)]
            if not registry.probe(session_id) and os.path.exists(path):
                found("stale-stop-request", path, "stop request for a session that is not alive", "removed")
        elif name == LIMITS_FILE:
            got = _fs.read_file(path)
            try:
                json.loads(got[0] if got is not None else b"")["limits"]
            except (ValueError, KeyError, TypeError):
                found("corrupt-limits", path, "limits.json does not parse; no limits are enforced", "", "error")
        elif name == LIMITS_LOCK:
            continue
        elif name == QUEUE_DIR:
            _check_queue(registry, path, found)
        elif name == SLOTS_DIR:
            _check_slots(path, found)
        else:
            found("foreign-file", path, "not a filemem file; left alone", "")
    return findings


def _check_queue(registry: Registry, queue_dir: str, found: Found) -> None:
    for scope in sorted(_fs.listdir(queue_dir)):
        scope_dir = os.path.join(queue_dir, scope)
        for name in sorted(_fs.listdir(scope_dir)):
            path = os.path.join(scope_dir, name)
            parsed = parse_ticket(name)
            if parsed is None:
                if _fs.TEMP_MARK in name and not _pid_alive(path):
                    found("temp-file", path, "leftover temp file from a writer that died", "removed")
                elif _fs.TEMP_MARK not in name:
                    found("foreign-file", path, "not a filemem file; left alone", "")
            elif not registry.probe(parsed[1]) and os.path.exists(path):  # not a waiter that just left
                found("stale-ticket", path, "waiting-room ticket of a session that is not alive", "removed")


def _check_slots(slots_dir: str, found: Found) -> None:
    for scope in sorted(_fs.listdir(slots_dir)):
        scope_dir = os.path.join(slots_dir, scope)
        for name in sorted(_fs.listdir(scope_dir)):
            if not name.endswith(SLOT_SUFFIX) and name != SLOT_GATE:
                found("foreign-file", os.path.join(scope_dir, name), "not a filemem file; left alone", "")
