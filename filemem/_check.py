"""The consistency checker and compaction (layer L2).

``check_store`` walks every file of a store and reports what is wrong as
:class:`~filemem.Finding` objects; with ``fix=True`` it repairs what can be
repaired. It is safe on a live store: it only ever touches a file while
holding the lock that writers of that file take, and it treats "I could take
the lock" as "its owner is gone" (never "old enough to delete").

Finding codes (stable; documented in docs/format.md):

``corrupt-shard``       checksum, length or parse failure; fix: move to quarantine/
``unsupported-format``  written by a newer filemem; never touched
``interrupted-split``   a split a writer did not finish; fix: finish it
``unfinished-batch``    a committed batch whose owner died; fix: roll forward
``torn-batch``          a batch intent that never committed; fix: roll back
``temp-file``           leftover temp file of a dead writer; fix: remove
``foreign-file``        a file filemem did not write; reported, never touched
"""

from __future__ import annotations

import os
from typing import Any

from . import _fs, _locks
from ._engine import (
    BATCH_DIR,
    BATCH_SUFFIX,
    MARKER,
    NS_DIR,
    QUARANTINE_DIR,
    TURNSTILE,
    Engine,
    _parse_intent,
    findings_for_temp,
    maintain_shard,
    quarantine_name,
)
from ._errors import CorruptShardError, LockTimeout, UnsupportedFormatError
from ._shard import LOCK_SUFFIX, SHARD_SUFFIX, decode_shard
from ._types import Finding

__all__ = ["check_store", "compact_store"]

_BITS = frozenset("01")


def check_store(engine: Engine, *, fix: bool) -> list[Finding]:
    """See :meth:`filemem.Store.check`."""
    findings: list[Finding] = []
    referenced = _check_batches(engine, fix, findings)
    for name in sorted(_fs.listdir(engine.root)):
        if name not in (MARKER, NS_DIR, BATCH_DIR, QUARANTINE_DIR):
            path = os.path.join(engine.root, name)
            if _fs.TEMP_MARK in name and name.startswith(MARKER):
                _temp(findings, path, None, fix)
            else:
                findings.append(Finding("foreign-file", path, "not a filemem file; left alone", severity="warning"))
    for directory, namespace in engine.namespace_dirs():
        if namespace is None:
            findings.append(
                Finding("foreign-file", directory, "directory name is not an escaped namespace", severity="warning")
            )
            continue
        _check_namespace_dir(engine, directory, namespace, fix, referenced, findings)
    return findings


def _temp(findings: list[Finding], path: str, lock_path: str | None, fix: bool) -> None:
    """A temp file is garbage only if no live writer holds its lock."""
    held = _locks.try_exclusive(lock_path) if lock_path is not None else None
    if lock_path is not None and held is None:
        return  # a live writer is using it
    try:
        fixed = fix and _fs.remove_quietly(path)
        findings.append(findings_for_temp(path, fixed))
    finally:
        if held is not None:
            held.release()


def _check_batches(engine: Engine, fix: bool, findings: list[Finding]) -> set[str]:
    referenced: set[str] = set()
    for name in sorted(_fs.listdir(engine.batch_dir)):
        path = os.path.join(engine.batch_dir, name)
        got = _locks.try_exclusive_existing(path)
        if got is None or got is False:
            continue  # a live batch (or just finished): not ours to judge
        assert isinstance(got, _locks.Held)
        try:
            if not name.endswith(BATCH_SUFFIX) or _fs.TEMP_MARK in name:
                if _fs.TEMP_MARK in name:
                    fixed = fix and _fs.remove_quietly(path)
                    findings.append(findings_for_temp(path, fixed))
                else:
                    findings.append(Finding("foreign-file", path, "not a batch intent; left alone", "warning"))
                continue
            with open(path, "rb") as fh:
                intent = _parse_intent(fh.read())
        finally:
            got.release()
        if intent is None:
            fixed = fix and _fs.remove_quietly(path)
            findings.append(
                Finding(
                    "torn-batch",
                    path,
                    "batch intent was never completely written: the batch did not commit",
                    fixed=fixed,
                    action="rolled back (intent removed; its temp files are removed below)" if fixed else "",
                )
            )
            continue
        renames = intent["renames"]
        if fix:
            engine._recover_one(path)
        else:
            referenced.update(os.path.join(engine.root, t) for t, _ in renames)
        findings.append(
            Finding(
                "unfinished-batch",
                path,
                f"batch {intent.get('id')} committed but its writer died before applying all {len(renames)} shards",
                fixed=fix,
                action="rolled forward" if fix else "",
                details={"shards": [g for _, g in renames]},
            )
        )
    return referenced


def _check_namespace_dir(
    engine: Engine,
    directory: str,
    namespace: tuple[str, ...],
    fix: bool,
    referenced: set[str],
    findings: list[Finding],
) -> None:
    names = sorted(_fs.listdir(directory))
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            continue  # a child namespace: namespace_dirs() visits it
        if name == TURNSTILE or (name.startswith("s") and name.endswith(LOCK_SUFFIX) and set(name[1:-5]) <= _BITS):
            continue
        if _fs.TEMP_MARK in name:
            if path in referenced:
                continue
            base = name.split(_fs.TEMP_MARK)[0]
            lock = (
                os.path.join(directory, base[: -len(SHARD_SUFFIX)] + LOCK_SUFFIX)
                if base.endswith(SHARD_SUFFIX)
                else None
            )
            _temp(findings, path, lock, fix)
            continue
        prefix = name[1 : -len(SHARD_SUFFIX)] if name.startswith("s") and name.endswith(SHARD_SUFFIX) else None
        if prefix is None or not set(prefix) <= _BITS or len(prefix) > 64:
            findings.append(Finding("foreign-file", path, "not a filemem file; left alone", severity="warning"))
            continue
        if not namespace:
            findings.append(Finding("foreign-file", path, "shard outside any namespace; left alone", "warning"))
            continue
        _check_shard(engine, namespace, prefix, path, fix, findings)


def _check_shard(
    engine: Engine, namespace: tuple[str, ...], prefix: str, path: str, fix: bool, findings: list[Finding]
) -> None:
    got = _fs.read_file(path)
    if got is None:
        return  # split away meanwhile
    try:
        shard = decode_shard(got[0], path, engine._codecs, prefix)
    except UnsupportedFormatError as exc:
        findings.append(Finding("unsupported-format", path, exc.message))
        return
    except CorruptShardError as exc:
        findings.append(
            _quarantine(engine, namespace, prefix, path, exc.message)
            if fix
            else Finding("corrupt-shard", path, exc.message)
        )
        return
    view = engine.view(namespace)
    view.refresh()
    if shard.splitting or prefix in view.internal:
        fixed = False
        if fix:
            maintain_shard(engine, view, prefix)
            fixed = not os.path.exists(path)
        findings.append(
            Finding(
                "interrupted-split",
                path,
                "a split of this shard was started and not finished",
                fixed=fixed,
                action="split finished" if fixed else "",
            )
        )


def _quarantine(engine: Engine, namespace: tuple[str, ...], prefix: str, path: str, message: str) -> Finding:
    view = engine.view(namespace)
    try:
        with _locks.exclusive(view.lock_path(prefix), engine.lock_timeout_s):
            dest = quarantine_name(engine.root, path)
            _fs.ensure_dir(os.path.dirname(dest))
            _fs.replace(path, dest)
            _fs.fsync_dir(view.dir)
    except LockTimeout:
        return Finding("corrupt-shard", path, message + "; could not lock it to quarantine", fixed=False)
    engine._cache.pop(path, None)
    return Finding(
        "corrupt-shard",
        path,
        message,
        fixed=True,
        action=f"moved to {dest}; its records are lost from the store (restore them from an export)",
        details={"quarantined_to": dest},
    )


def compact_store(engine: Engine) -> dict[str, Any]:
    """See :meth:`filemem.Store.compact`."""
    dropped = splits = shards = namespaces = 0
    engine.recover_batches()
    for _directory, namespace in list(engine.namespace_dirs()):
        if not namespace:
            continue
        view = engine.view(namespace)
        view.refresh()
        if not view.existing:
            continue
        namespaces += 1
        for prefix in sorted(view.existing):
            d, s = maintain_shard(engine, view, prefix)
            dropped += d
            splits += s
            shards += 1
    return {"namespaces": namespaces, "shards": shards, "expired_dropped": dropped, "splits": splits}
