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
from .._check import EXTRA_CHECKS, findings_for_temp
from .._engine import Engine
from .._errors import StorageError
from .._types import Finding
from ._indexfile import INDEX_LOCK_SUFFIX, index_paths, parse_index_name, read_index

__all__ = ["check_indexes"]


def _lock_of(path: str) -> str:
    base = path.split(_fs.TEMP_MARK, 1)[0]
    stem = base[: -len(".idx")] if base.endswith(".idx") else base
    return stem + INDEX_LOCK_SUFFIX


def check_indexes(engine: Engine, fix: bool) -> list[Finding]:
    """Findings for every file under ``<store>/index`` (see the module docstring)."""
    findings: list[Finding] = []
    fix = fix and not engine.readonly
    for directory, name in index_paths(engine.root):
        path = os.path.join(directory, name)
        if name.endswith(INDEX_LOCK_SUFFIX) and _fs.TEMP_MARK not in name:
            continue
        if _fs.TEMP_MARK in name and name.startswith("search-"):
            fixed = False
            if fix:
                held = _locks.try_exclusive(_lock_of(path))
                if held is not None:  # nobody is writing this index: the temp is garbage
                    try:
                        fixed = _fs.remove_quietly(path)
                    finally:
                        held.release()
            findings.append(findings_for_temp(path, fixed))
            continue
        config = parse_index_name(name)
        if config is None:
            findings.append(Finding("foreign-file", path, "not a filemem index file; left alone", severity="warning"))
            continue
        try:
            read_index(path, config)
        except (ValueError, StorageError) as exc:
            fixed = False
            if fix:
                held = _locks.try_exclusive(_lock_of(path))
                if held is not None:
                    try:
                        fixed = _fs.remove_quietly(path)
                    finally:
                        held.release()
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


if check_indexes not in EXTRA_CHECKS:
    EXTRA_CHECKS.append(check_indexes)
