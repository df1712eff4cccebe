"""What ``store.check()`` says about search index files (layer L4).

Finding codes:

``corrupt-index``   an index file that fails its checksum or does not decode;
                    harmless (searches rebuild it); fix: delete it
``temp-file``       a temp file left by a process killed while writing an index;
                    fix: remove it
``foreign-file``    a file under ``index/`` filemem did not write; left alone

Fixes happen under the index file's own lock (tried, never waited for), so a
process rewriting the index at that moment is never disturbed.
"""

from __future__ import annotations

import os

from .. import _fs, _locks
from .._check import findings_for_temp, register_check
from .._engine import Engine
from .._errors import StorageError
from .._types import Finding
from ._indexfile import INDEX_LOCK_SUFFIX, index_paths, parse_index_name, read_index

__all__ = ["check_indexes"]


def _lock_of(path: str) -> str | None:
    """The lock guarding an index file (or its temp), or None if the name is not an index's."""
    base = path.split(_fs.TEMP_MARK, 1)[0]
    got = parse_index_name(os.path.basename(base))
    if got is None:
        return None
    return os.path.join(os.path.dirname(path), f"search-{got[0]}{INDEX_LOCK_SUFFIX}")


def _remove_unlocked(path: str) -> bool:
    """Remove ``path`` if nobody is writing that index right now (its lock is free)."""
    lock = _lock_of(path)
    held = _locks.try_exclusive(lock) if lock is not None else None
    if held is None:
        return False
    try:
        return _fs.remove_quietly(path)
    finally:
        held.release()


def check_indexes(engine: Engine, fix: bool) -> list[Finding]:
    """Findings for every file under ``<store>/index`` (see the module docstring)."""
    findings: list[Finding] = []
    fix = fix and not engine.readonly
    for directory, name in index_paths(engine.root):
        path = os.path.join(directory, name)
        if name.endswith(INDEX_LOCK_SUFFIX) and _fs.TEMP_MARK not in name:
            continue
        if _fs.TEMP_MARK in name and _lock_of(path) is not None:
            # Index files are only written under their lock: a temp whose lock
            # is free belongs to a writer that died.
            findings.append(findings_for_temp(path, fix and _remove_unlocked(path)))
            continue
        got = parse_index_name(name)
        if got is None:
            findings.append(Finding("foreign-file", path, "not a filemem index file; left alone", severity="warning"))
            continue
        try:
            read_index(path, got[0])
        except (ValueError, StorageError) as exc:
            fixed = fix and _remove_unlocked(path)
            findings.append(
                Finding(
                    "corrupt-index",
                    path,
                    f"search index unreadable ({exc}); searches rebuild it",
                    severity="warning",
                    fixed=fixed,
                    action="deleted" if fixed else "",
                )
            )
    return findings


register_check(check_indexes)
