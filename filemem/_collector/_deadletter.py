"""Dead letters: records the collector could not apply, kept in JSON Lines files (layer L4).

``<store>/journals/deadletter-<jid>.jsonl``, one JSON object per line::

    {"journal": "j123-ab", "id": 42, "namespace": ["agent-1", "events"], "key": "ev-42",
     "codec": "json", "payload": "<base64 of the value as the store codec encodes it>",
     "value": <the value, when JSON can show it>, "priority": "normal",
     "collected_at": 1764300000.1, "failed_at": 1764300001.2,
     "reason": "failed" | "dropped" | "unfinished", "error": "..."}

``reason``: ``failed`` (kept failing after retries), ``dropped`` (pushed out
of a full queue by ``on_full="drop_oldest"``), ``unfinished`` (a collector
without a journal closed before the store took it). Appends and replays take
``journals/deadletter.lock``, a lock file that is never replaced.

Replay puts each value back unless the key already holds a record written
*after* the letter's ``collected_at`` (a newer write is never clobbered);
letters that fail again stay in the file.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Final

from .. import _fs, _locks
from .._engine import JOURNAL_DIR, Engine, Op
from .._errors import ConflictError, FileMemError, StorageError
from .._wal import _platform
from ..codecs import get_codec

__all__ = ["DeadLetter", "append_dead_letters", "list_dead_letters", "replay_dead_letters"]

PREFIX: Final = "deadletter-"
SUFFIX: Final = ".jsonl"
LOCK_NAME: Final = "deadletter.lock"
log = logging.getLogger("filemem.collector")
PRIORITY_NAMES: Final = ("high", "normal", "low")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record in a dead-letter file (see the module docstring for the fields)."""

    journal: str
    id: int
    namespace: tuple[str, ...]
    key: str
    value: Any
    priority: str
    collected_at: float
    failed_at: float
    reason: str
    error: str
    path: str


def letter(
    jid: str,
    seq: int,
    namespace: tuple[str, ...],
    key: str,
    codec: str,
    payload: bytes,
    priority: int,
    collected_at: float,
    reason: str,
    error: str,
) -> dict[str, Any]:
    """The JSON object of one dead letter."""
    out: dict[str, Any] = {
        "journal": jid,
        "id": seq,
        "namespace": list(namespace),
        "key": key,
        "codec": codec,
        "payload": base64.b64encode(payload).decode("ascii"),
        "priority": PRIORITY_NAMES[priority],
        "collected_at": collected_at,
        "failed_at": time.time(),
        "reason": reason,
        "error": error,
    }
    if codec == "json":
        with contextlib.suppress(ValueError):  # shown for people; the payload is what replays
            out["value"] = json.loads(payload)
    return out


def _dir(engine: Engine) -> str:
    return os.path.join(engine.root, JOURNAL_DIR)


def append_dead_letters(engine: Engine, jid: str, letters: list[dict[str, Any]]) -> str:
    """Append letters to ``jid``'s dead-letter file, fsynced; return its path."""
    directory = _dir(engine)
    _fs.ensure_dir(directory)
    path = os.path.join(directory, PREFIX + jid + SUFFIX)
    data = "".join(json.dumps(x, separators=(",", ":")) + "\n" for x in letters).encode()
    with _locks.exclusive(os.path.join(directory, LOCK_NAME), engine.lock_timeout_s):
        opened = _fs.open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        if opened is None:
            raise StorageError(f"could not open {path}: its directory is gone", path=path)
        fd = opened
        try:
            try:
                size = os.fstat(fd).st_size
                torn = size > 0 and _platform.pread(fd, 1, size - 1) != b"\n"
            except OSError as exc:
                raise _fs.storage_error(exc, "read", path) from exc
            if torn:
                # An earlier append was cut short (a crash, a full disk): end
                # its torn line first, or this letter would be glued onto it.
                data = b"\n" + data
            _fs.write_fd(fd, data, sync=engine.sync, path=path)
        finally:
            os.close(fd)
    return path


def _files(engine: Engine) -> list[str]:
    directory = _dir(engine)
    return [
        os.path.join(directory, n)
        for n in sorted(_fs.listdir(directory))
        if n.startswith(PREFIX) and n.endswith(SUFFIX) and _fs.TEMP_MARK not in n
    ]


_FIELDS: Final = frozenset({"journal", "id", "namespace", "key", "codec", "payload"})
_LETTER_START: Final = b'{"journal":'


def _letter_of(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and set(obj) >= _FIELDS else None


def _parse(path: str) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The letters of ``path``, and the lines that are not letters (torn by a crashed append)."""
    out: list[dict[str, Any]] = []
    bad: list[bytes] = []
    got = _fs.read_file(path)  # never follows a link, never waits on a FIFO
    if got is None:
        return out, bad
    lines = got[0].split(b"\n")
    for line in lines:
        if not line.strip():
            continue
        obj = _letter_of(line)
        if obj is None:
            # A torn line; an append made before torn lines were ended may
            # have glued a complete letter onto it: salvage that one.
            cut = line.rfind(_LETTER_START)
            obj = _letter_of(line[cut:]) if cut > 0 else None
            bad.append(line[:cut] if obj is not None else line)
        if obj is not None:
            out.append(obj)
    return out, bad


def _to_dead_letter(obj: dict[str, Any], path: str) -> DeadLetter:
    try:
        value = get_codec(obj["codec"]).decode(base64.b64decode(obj["payload"]))
    except (FileMemError, ValueError):
        value = obj.get("value")
    return DeadLetter(
        journal=str(obj["journal"]),
        id=int(obj["id"]),
        namespace=tuple(obj["namespace"]),
        key=str(obj["key"]),
        value=value,
        priority=str(obj.get("priority", "normal")),
        collected_at=float(obj.get("collected_at", 0.0)),
        failed_at=float(obj.get("failed_at", 0.0)),
        reason=str(obj.get("reason", "failed")),
        error=str(obj.get("error", "")),
        path=path,
    )


def list_dead_letters(engine: Engine) -> list[DeadLetter]:
    """Every dead letter of the store, file by file, in the order written."""
    return [_to_dead_letter(obj, path) for path in _files(engine) for obj in _parse(path)[0]]


def replay_dead_letters(engine: Engine) -> dict[str, int]:
    """Put dead letters back into the store; return counts ``applied``, ``superseded``, ``failed``.

    A letter whose key holds a record written after the letter was collected
    is *superseded* (not written: that would clobber a newer write). Letters
    that fail again stay in their file with the new error; the others leave it.
    Lines that are not letters (torn by a crashed append) stay in the file too,
    counted as ``failed``: a file is removed only when nothing in it is left.
    """
    counts = {"applied": 0, "superseded": 0, "failed": 0}
    directory = _dir(engine)
    if not os.path.isdir(directory):
        return counts
    with _locks.exclusive(os.path.join(directory, LOCK_NAME), engine.lock_timeout_s):
        for path in _files(engine):
            keep: list[dict[str, Any]] = []
            letters, bad = _parse(path)
            if bad:
                log.warning("%s: %d lines are not dead letters (torn writes?); kept in the file", path, len(bad))
                counts["failed"] += len(bad)
            for obj in letters:
                try:
                    outcome = _replay_one(engine, obj)
                except FileMemError as exc:
                    obj["error"] = f"{type(exc).__name__}: {exc}"
                    obj["failed_at"] = time.time()
                    keep.append(obj)
                    outcome = "failed"
                counts[outcome] += 1
            if keep or bad:
                body = "".join(json.dumps(x, separators=(",", ":")) + "\n" for x in keep).encode()
                body += b"".join(line + b"\n" for line in bad)
                _fs.atomic_write(path, body, sync=engine.sync)
            else:
                _fs.remove_quietly(path)
                if engine.sync:
                    _fs.fsync_dir(directory)
    return counts


def _replay_one(engine: Engine, obj: dict[str, Any]) -> str:
    namespace = tuple(str(s) for s in obj["namespace"])
    key = str(obj["key"])
    value = get_codec(str(obj["codec"])).decode(base64.b64decode(obj["payload"]))
    collected_at = float(obj.get("collected_at", 0.0))
    for _ in range(16):
        cur = engine.read(namespace, key)
        if cur is not None and cur["updated_at"] > collected_at:
            return "superseded"
        try:
            engine.apply([Op(namespace, key, "put", value, if_version=cur["version"] if cur else 0)])
        except ConflictError:
            continue  # written meanwhile: look again
        return "applied"
    raise ConflictError(f"{'/'.join(namespace)}/{key} kept changing during dead-letter replay; try again")
