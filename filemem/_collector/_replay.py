"""Replaying the journals of dead collectors, and what check() says about journals (layer L4).

**Exactly once.** A journal's marker (see ``_applied``) names every record id
already applied, written in the same atomic engine batch as those records. A
replay skips what the marker names and applies the rest, again together with
the marker, so a replay that is itself killed part way is simply continued by
the next one.

**No clobbering.** A record the dead collector never applied is put only if
its key holds no record written after both the record's ``collected_at`` and
the marker's last write (the dead collector's last apply): such a newer record
can only be another process's later write. The put carries ``if_version`` of
what was read, so a write racing the replay is never overwritten either.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from .. import _fs, _locks
from .._check import _temp_owner_alive
from .._engine import JOURNAL_DIR, Engine, Op
from .._errors import ConflictError, FileMemError, InvalidKeyError, InvalidValueError
from .._types import Finding
from ..codecs import get_codec
from ._applied import RangeSet, marker_dirs, marker_op, read_marker, remove_marker
from ._deadletter import append_dead_letters, letter
from ._journal import JOURNAL_SUFFIX, JournalRecord, read_journal

__all__ = ["check_journals", "recover_journals", "replay_journal"]

_CHUNK = 500
#: (namespace, key) -> (version, collected_at) of what one recovery put.
_Mine = dict[tuple[tuple[str, ...], str], tuple[Any, float]]
_PERMANENT = (InvalidValueError, InvalidKeyError)


def journal_dir(engine: Engine) -> str:
    """``<store>/journals``."""
    return os.path.join(engine.root, JOURNAL_DIR)


def _journals(engine: Engine) -> list[tuple[str, str]]:
    directory = journal_dir(engine)
    found = []
    for n in sorted(_fs.listdir(directory)):
        if n.endswith(JOURNAL_SUFFIX) and _fs.TEMP_MARK not in n:
            path = os.path.join(directory, n)
            st = _fs.lstat(path)
            # A link or a FIFO was never a journal (journals are created as
            # regular files): never followed or opened; check reports it.
            if st is not None and stat.S_ISREG(st.st_mode):
                found.append((n[: -len(JOURNAL_SUFFIX)], path))
    return found


def recover_journals(engine: Engine) -> dict[str, int]:
    """Replay and retire every journal whose owner is gone; return counts.

    Safe to call from any number of processes at once: a journal is replayed
    only by whoever holds its lock. Raises what the store raises (the journal
    then stays for the next attempt).
    """
    totals = {"journals": 0, "applied": 0, "skipped": 0, "superseded": 0, "dead_letters": 0}
    if engine.readonly:
        return totals
    live: set[str] = set()
    # What this recovery put, per key: (version, collected_at). Several dead
    # journals may hold the same key: the record collected last must win,
    # whichever journal is replayed first (each replayed put is stamped now).
    mine: _Mine = {}
    for jid, path in _journals(engine):
        got = _locks.try_exclusive_existing(path)
        if got is None:
            live.add(jid)
            continue
        if not isinstance(got, _locks.Held):
            continue  # retired meanwhile
        try:
            counts = replay_journal(engine, jid, path, got, mine)
        finally:
            got.release()
        totals["journals"] += 1
        for k, v in counts.items():
            totals[k] += v
    # A marker whose journal is gone is left over from a retire cut short
    # (the journal is unlinked first): nobody will read it again.
    present = {jid for jid, _ in _journals(engine)}
    for jid in marker_dirs(engine):
        if jid not in present and jid not in live:
            remove_marker(engine, jid)
    return totals


def replay_journal(engine: Engine, jid: str, path: str, held: _locks.Held, mine: _Mine | None = None) -> dict[str, int]:
    """Apply what journal ``jid`` (whose lock we hold) still owes, then retire it.

    ``mine`` holds what this recovery already put from other journals (see recover_journals).
    """
    if mine is None:
        mine = {}
    records, _, _ = read_journal(path)
    applied, marker_time = read_marker(engine, jid)
    counts = {"applied": 0, "skipped": 0, "superseded": 0, "dead_letters": 0}
    todo = [r for r in records if r.seq not in applied]
    counts["skipped"] = len(records) - len(todo)
    for i in range(0, len(todo), _CHUNK):
        chunk = todo[i : i + _CHUNK]
        marker_time = _replay_chunk(engine, jid, chunk, applied, marker_time, counts, mine)
    # Everything is applied (and the marker says so): the journal goes first,
    # then its marker; a crash between leaves an orphan marker that the next
    # recovery removes.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _fs.storage_error(exc, "remove", path) from exc
    if engine.sync:
        _fs.fsync_dir(os.path.dirname(path))
    remove_marker(engine, jid)
    del held
    return counts


def _replay_chunk(
    engine: Engine,
    jid: str,
    chunk: list[JournalRecord],
    applied: RangeSet,
    marker_time: float,
    counts: dict[str, int],
    mine: _Mine,
) -> float:
    # Later records of one key supersede earlier ones of the same journal.
    last: dict[tuple[tuple[str, ...], str], JournalRecord] = {}
    for r in chunk:
        last[(r.namespace, r.key)] = r
    chosen = list(last.values())
    for _ in range(32):
        ops: list[Op] = []
        used: list[JournalRecord] = []
        superseded = 0
        for r in chosen:
            cur: dict[str, Any] | None = engine.read(r.namespace, r.key)
            if cur is not None and _newer(cur, r, marker_time, mine.get((r.namespace, r.key))):
                superseded += 1
                continue
            value = get_codec(r.codec).decode(r.payload)
            ops.append(Op(r.namespace, r.key, "put", value, if_version=cur["version"] if cur else 0))
            used.append(r)
        done = RangeSet(applied.ranges)
        done.add_many(r.seq for r in chunk)
        try:
            versions = engine.apply([*ops, marker_op(jid, done)])
        except ConflictError:
            continue  # another process wrote one of these keys meanwhile: read again
        except _PERMANENT:
            # One record the store refuses for good: apply them one at a
            # time, each with the marker, and dead-letter the refused ones.
            used = _one_by_one(engine, jid, used, applied, mine)
            done.add_many(r.seq for r in chunk)
            engine.apply([marker_op(jid, done)])
            counts["dead_letters"] += len(ops) - len(used)
        else:
            for r, version in zip(used, versions, strict=False):
                mine[(r.namespace, r.key)] = (version, r.collected_at)
        applied.ranges = done.ranges
        counts["applied"] += len(used)
        counts["superseded"] += superseded + len(chunk) - len(chosen)
        _, marker_time = read_marker(engine, jid)
        return marker_time
    raise ConflictError(f"journal {jid}: keys kept changing during replay; it stays for the next attempt")


def _newer(cur: dict[str, Any], r: JournalRecord, marker_time: float, own: tuple[Any, float] | None) -> bool:
    """Does the key's current record ``cur`` supersede journal record ``r``?"""
    if own is not None and own[0] == cur["version"]:
        # This recovery put it, from another dead journal (or an earlier
        # chunk): stamped now, so compare when the two were collected.
        return own[1] > r.collected_at
    return bool(cur["updated_at"] > max(marker_time, r.collected_at))


def _one_by_one(
    engine: Engine, jid: str, records: list[JournalRecord], applied: RangeSet, mine: _Mine
) -> list[JournalRecord]:
    """Apply records singly, each with the marker; dead-letter (then retire) those refused for good."""
    ok: list[JournalRecord] = []
    for r in records:
        done = RangeSet(applied.ranges)
        done.add_many([r.seq])
        try:
            cur = engine.read(r.namespace, r.key)
            value = get_codec(r.codec).decode(r.payload)
            versions = engine.apply(
                [Op(r.namespace, r.key, "put", value, if_version=cur["version"] if cur else 0), marker_op(jid, done)]
            )
            mine[(r.namespace, r.key)] = (versions[0], r.collected_at)
            ok.append(r)
        except _PERMANENT as exc:
            bad = letter(
                jid, r.seq, r.namespace, r.key, r.codec, r.payload, r.priority, r.collected_at, "failed", str(exc)
            )
            append_dead_letters(engine, jid, [bad])
            engine.apply([marker_op(jid, done)])
        applied.ranges = done.ranges
    return ok


def check_journals(engine: Engine, fix: bool) -> list[Finding]:
    """Findings about ``journals/`` for ``store.check()``: journals of dead collectors, torn tails, temps.

    A live collector's journal (its lock is held) is never read. With ``fix``
    a dead collector's journal is replayed and retired.
    """
    findings: list[Finding] = []
    directory = journal_dir(engine)
    mine: _Mine = {}  # shared by the journals replayed here (see recover_journals)
    for name in sorted(_fs.listdir(directory)):
        path = os.path.join(directory, name)
        st = _fs.lstat(path)
        if st is None:
            continue
        if not stat.S_ISREG(st.st_mode):
            code = "symlink" if stat.S_ISLNK(st.st_mode) else "special-file"
            findings.append(Finding(code, path, _fs.foreign_kind_error(path, st.st_mode).message))
            continue
        if _fs.TEMP_MARK in name:
            if _temp_owner_alive(path):
                continue  # a collector starting right now (its pid is in the name)
            got = _locks.try_exclusive_existing(path)
            if isinstance(got, _locks.Held):
                try:
                    fixed = fix and not engine.readonly and _fs.remove_quietly(path)
                finally:
                    got.release()
                findings.append(
                    Finding(
                        "temp-file",
                        path,
                        "journal temp file of a collector that died while starting",
                        severity="warning",
                        fixed=fixed,
                        action="removed" if fixed else "",
                    )
                )
            continue
        if not name.endswith(JOURNAL_SUFFIX):
            continue
        got = _locks.try_exclusive_existing(path)
        if not isinstance(got, _locks.Held):
            continue  # live owner, or retired while we looked
        try:
            records, end, torn = read_journal(path)
            if torn:
                findings.append(
                    Finding(
                        "torn-journal",
                        path,
                        f"journal ends in a torn record after {len(records)} valid ones (a crash mid-append); "
                        "the torn tail is ignored",
                        severity="info",
                        fixed=fix and not engine.readonly,
                        action="ignored on replay" if fix and not engine.readonly else "",
                        details={"valid_bytes": end},
                    )
                )
            fixed = False
            if fix and not engine.readonly:
                jid = name[: -len(JOURNAL_SUFFIX)]
                try:
                    replay_journal(engine, jid, path, got, mine)
                    fixed = True
                except FileMemError:
                    fixed = False
            findings.append(
                Finding(
                    "unreplayed-journal",
                    path,
                    f"journal of a dead collector with {len(records)} records not yet replayed",
                    severity="warning",
                    fixed=fixed,
                    action="replayed and removed" if fixed else "",
                )
            )
        finally:
            got.release()
    return findings
