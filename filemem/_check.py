"""The consistency checker and compaction (layer L2).

``check_store`` walks every file of a store and reports what is wrong as
:class:`~filemem.Finding` objects; with ``fix=True`` it repairs what can be
repaired. It is safe on a live store: it only ever touches a file while
holding the lock that writers of that file take, and it treats "I could take
the lock" as "its owner is gone" (never "old enough to delete").

Finding codes (stable; documented in docs/format.md):

``corrupt-shard``       checksum, length or parse failure; fix: move to quarantine/
``undecodable-shard``   checksum good but the body does not decode here; never touched
``unsupported-format``  written by a newer filemem; never touched
``interrupted-split``   a split a writer did not finish; fix: finish it
``unfinished-batch``    a committed batch whose owner died; fix: roll forward
``torn-batch``          a batch intent that never committed; fix: roll back
``temp-file``           leftover temp file of a dead writer; fix: remove
``foreign-file``        a file filemem did not write; reported, never touched
``symlink``             a symbolic link inside the store; never followed. fix: the
                        link itself (not its target) is moved to quarantine/
``special-file``        a FIFO, socket or device inside the store; never opened.
                        fix: moved to quarantine/
``io-error``            a file that cannot even be examined now (EIO...); never touched
``stuck-batch``         a committed batch that cannot be rolled forward right now
                        (an I/O error); kept, retried by every writer and by fix

Links and special files at the store root (``ns``, ``batches``, the marker...)
are reported and never moved: the store cannot be used until a person fixes
them, and ``quarantine/`` itself may be the link.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import Any

from . import _fs, _locks
from ._engine import (
    BATCH_SUFFIX,
    MARKER,
    QUARANTINE_DIR,
    ROOT_ENTRIES,
    Engine,
    _parse_intent,
    maintain_shard,
)
from ._errors import CorruptShardError, LockTimeout, StorageError, UnsupportedFormatError
from ._maintain import compact
from ._shard import LOCK_SUFFIX, SHARD_SUFFIX, decode_shard, read_header
from ._types import Finding
from ._view import TURNSTILE, View

__all__ = ["check_store", "compact_store", "register_check"]

#: Checkers of files that higher layers own (the collector's journals, search
#: indexes under ``index/``), called by check_store as ``fn(engine, fix)``;
#: each returns its findings. They register here (``register_check``) because
#: this layer may not import them.
_EXTRA_CHECKS: list[Callable[[Engine, bool], list[Finding]]] = []


def register_check(fn: Callable[[Engine, bool], list[Finding]]) -> None:
    """Have ``check_store`` also call ``fn(engine, fix)`` and report its findings."""
    if fn not in _EXTRA_CHECKS:
        _EXTRA_CHECKS.append(fn)


_BITS = frozenset("01")


def quarantine_name(root: str, path: str) -> str:
    """Where ``check(fix=True)`` moves a corrupt file."""
    rel = os.path.relpath(path, root).replace(os.sep, "__")
    return os.path.join(root, QUARANTINE_DIR, f"{rel}.{time.time_ns()}-{os.urandom(3).hex()}")


def check_log(engine: Engine, *, fix: bool) -> list[Finding]:
    """Findings of the write-ahead log (``corrupt-log``, ``torn-log``); see docs/format.md."""
    return [
        Finding(i.code, i.path, i.message, severity=i.severity, fixed=i.fixed, action=i.action)  # type: ignore[arg-type]
        for i in engine.check_log(fix=fix)
    ]


def findings_for_temp(path: str, fixed: bool) -> Finding:
    """A leftover temp file finding."""
    return Finding(
        "temp-file",
        path,
        "leftover temp file from a writer that died",
        severity="warning",
        fixed=fixed,
        action="removed" if fixed else "",
    )


def check_store(engine: Engine, *, fix: bool, progress: Callable[[int, int], None] | None = None) -> list[Finding]:
    """See :meth:`filemem.Store.check`. ``progress(done, total)`` is called as it walks the namespace directories."""
    findings: list[Finding] = []
    # This process's background fold (the one an open starts when it finds a
    # dead writer's records unfolded) holds shard locks, and the walk leaves a
    # busy shard's dead temp files alone: keep it out while the walk runs.
    with engine.own_folds_held():
        referenced = _check_batches(engine, fix, findings)
        for name in sorted(_fs.listdir(engine.root)):
            if name in ROOT_ENTRIES:
                path = os.path.join(engine.root, name)
                st = _fs.lstat(path)
                wanted = stat.S_ISREG if name == MARKER else stat.S_ISDIR
                if st is not None and not wanted(st.st_mode):
                    findings.append(_odd_kind(engine, path, st.st_mode, fix=False))
            else:
                path = os.path.join(engine.root, name)
                if _fs.TEMP_MARK in name and name.startswith(MARKER):
                    _temp(engine, findings, path, None, fix)
                else:
                    findings.append(Finding("foreign-file", path, "not a filemem file; left alone", severity="warning"))
        dirs = list(engine.namespace_dirs())
        for i, (directory, namespace) in enumerate(dirs):
            if progress is not None:
                progress(i, len(dirs))
            if namespace is None:
                findings.append(
                    Finding("foreign-file", directory, "directory name is not an escaped namespace", severity="warning")
                )
                continue
            _check_namespace_dir(engine, directory, namespace, fix, referenced, findings)
    # The log last: with fix, the fold then runs on repaired shards and leaves
    # them holding every record written so far (docs/format.md, "Finding codes").
    findings.extend(check_log(engine, fix=fix))
    for extra in _EXTRA_CHECKS:
        findings.extend(extra(engine, fix))
    return findings


def _temp_owner_alive(path: str) -> bool:
    """Whether the process that named this temp file may still be using it.

    Temp names end in ``<pid>-<random>``. A split writes its leaves' temps
    under the *parent's* lock, so the temp's own lock says nothing; the pid
    does. A reused pid only makes us keep garbage a little longer.
    """
    tail = path.rsplit(_fs.TEMP_MARK, 1)[-1]
    digits = tail.split("-")[-2] if tail.count("-") >= 1 else ""
    digits = "".join(c for c in digits if c.isdigit()) if digits else ""
    if not digits:
        return False
    pid = int(digits)
    if pid == os.getpid():
        return True  # one of our own threads may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but not ours to signal
    return True


def _odd_kind(engine: Engine, path: str, mode: int, *, fix: bool) -> Finding:
    """A link or special file where filemem keeps its own files: report it, and with ``fix`` move it aside."""
    code = "symlink" if stat.S_ISLNK(mode) else "special-file"
    what = _fs.foreign_kind_error(path, mode).message
    if not fix:
        return Finding(code, path, what)
    dest = quarantine_name(engine.root, path)
    try:
        _fs.ensure_dir(os.path.dirname(dest))  # refuses a quarantine/ that is itself a link
        _fs.replace(path, dest)  # rename moves the name (the link itself), never its target
        _fs.fsync_dir(os.path.dirname(path))
    except StorageError as exc:
        return Finding(code, path, f"{what}; could not move it aside: {exc.message}")
    return Finding(code, path, what, fixed=True, action=f"moved to {dest}", details={"quarantined_to": dest})


def _probe(engine: Engine, lock_path: str) -> tuple[bool, _locks.Held | None]:
    """(busy, handle): take ``lock_path`` if free right now, without waiting.

    A read-only store never creates the lock file: a lock file that does not
    exist is held by nobody.
    """
    if engine.readonly:
        got = _locks.try_exclusive_existing(lock_path)
        return got is None, got if isinstance(got, _locks.Held) else None
    held = _locks.try_exclusive(lock_path)
    return held is None, held


def _temp(engine: Engine, findings: list[Finding], path: str, lock_path: str | None, fix: bool) -> None:
    """Report (and with ``fix`` remove) a temp file whose writer is gone."""
    if _temp_owner_alive(path):
        return
    held = None
    if lock_path is not None:
        busy, held = _probe(engine, lock_path)
        if busy:
            return  # someone holds the shard: leave it to them
    try:
        # A batch that committed after we listed batches/ may own this temp:
        # roll such batches forward first; a temp they needed is then gone.
        try:
            engine.recover_batches((os.path.dirname(path),))
        except StorageError:
            return  # a batch that names this directory is stuck: its temp may be owed
        if not _fs.lexists(path):
            return
        fixed = fix and _fs.remove_quietly(path)
        findings.append(findings_for_temp(path, fixed))
    finally:
        if held is not None:
            held.release()


def _check_batches(engine: Engine, fix: bool, findings: list[Finding]) -> set[str]:
    referenced: set[str] = set()
    for name in sorted(_fs.listdir(engine.batch_dir)):
        path = os.path.join(engine.batch_dir, name)
        st = _fs.lstat(path)
        if st is None:
            continue
        if not stat.S_ISREG(st.st_mode):
            findings.append(_odd_kind(engine, path, st.st_mode, fix=fix))
            continue
        if _fs.TEMP_MARK in name and _temp_owner_alive(path):
            # An intent its writer is still creating: even a moment's probe of
            # its lock could land before the writer locks it (see create_locked).
            continue
        got = _locks.try_exclusive_existing(path)
        if got is None or got is False:
            continue  # a live batch (or just finished): not ours to judge
        assert isinstance(got, _locks.Held)
        try:
            if not name.endswith(BATCH_SUFFIX) or _fs.TEMP_MARK in name:
                if _fs.TEMP_MARK in name:
                    # An intent being written is locked by its live owner (we
                    # hold the lock now, so it is dead): never committed.
                    fixed = fix and _fs.remove_quietly(path)
                    findings.append(findings_for_temp(path, fixed))
                else:
                    findings.append(Finding("foreign-file", path, "not a batch intent; left alone", "warning"))
                continue
            intent = _parse_intent(_fs.read_fd(got.fd, path))
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
            try:
                engine._recover_one(path)
            except StorageError as exc:
                # Never guess: keep the intent and its temps for a later try.
                referenced.update(os.path.join(engine.root, t) for t, _ in renames)
                findings.append(
                    Finding(
                        "stuck-batch",
                        path,
                        f"batch {intent.get('id')} committed but cannot be rolled forward now: {exc.message}",
                        details={"shards": [g for _, g in renames]},
                    )
                )
                continue
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
    view = engine.view(namespace) if namespace else None
    if view is not None:
        view.refresh()
    for name in names:
        path = os.path.join(directory, name)
        if path in referenced:
            continue  # a temp an unfinished batch still owes its target
        try:
            st = _fs.lstat(path)
        except StorageError as exc:
            findings.append(Finding("io-error", path, exc.message))
            continue
        if st is None:
            continue  # gone meanwhile
        if stat.S_ISDIR(st.st_mode):
            continue  # a child namespace: namespace_dirs() visits it
        if not stat.S_ISREG(st.st_mode):
            findings.append(_odd_kind(engine, path, st.st_mode, fix=fix))
            continue
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
            _temp(engine, findings, path, lock, fix)
            continue
        prefix = name[1 : -len(SHARD_SUFFIX)] if name.startswith("s") and name.endswith(SHARD_SUFFIX) else None
        if prefix is None or not set(prefix) <= _BITS or len(prefix) > 64:
            findings.append(Finding("foreign-file", path, "not a filemem file; left alone", severity="warning"))
            continue
        if not namespace:
            findings.append(Finding("foreign-file", path, "shard outside any namespace; left alone", "warning"))
            continue
        assert view is not None
        _check_shard(engine, view, prefix, path, fix, findings)


def _check_shard(engine: Engine, view: View, prefix: str, path: str, fix: bool, findings: list[Finding]) -> None:
    got = _fs.read_file(path)
    if got is None:
        return  # split away meanwhile
    try:
        shard = decode_shard(got[0], path, engine._codecs, prefix)
    except UnsupportedFormatError as exc:
        findings.append(Finding("unsupported-format", path, exc.message))
        return
    except CorruptShardError as exc:
        if _checksum_ok(got[0], path):
            # The bytes are what a writer wrote, yet they do not decode here
            # (e.g. nesting deeper than this interpreter allows): not rot, and
            # not ours to throw away.
            findings.append(Finding("undecodable-shard", path, exc.message))
        elif fix:
            findings.append(_quarantine(engine, view, prefix, path, exc.message))
        else:
            findings.append(Finding("corrupt-shard", path, exc.message))
        return
    if shard.splitting or prefix in view.internal:
        busy, probe = _probe(engine, view.lock_path(prefix))
        if busy:
            return  # a live writer is splitting it right now
        if probe is not None:
            probe.release()
        fixed = False
        if fix:
            maintain_shard(engine, view, prefix)
            fixed = not _fs.lexists(path)
        findings.append(
            Finding(
                "interrupted-split",
                path,
                "a split of this shard was started and not finished",
                fixed=fixed,
                action="split finished" if fixed else "",
            )
        )


def _checksum_ok(data: bytes, path: str) -> bool:
    try:
        read_header(data, path)
    except (CorruptShardError, UnsupportedFormatError):
        return False
    return True


def _quarantine(engine: Engine, view: View, prefix: str, path: str, message: str) -> Finding:
    try:
        with _locks.exclusive(view.lock_path(prefix), engine.lock_timeout_s):
            # Judge again under the lock: a writer or another checker may have
            # replaced the file since we read it.
            got = _fs.read_file(path)
            if got is None:
                return Finding("corrupt-shard", path, message + "; gone before it could be quarantined")
            try:
                decode_shard(got[0], path, engine._codecs, prefix)
            except CorruptShardError:
                pass
            else:
                return Finding(
                    "corrupt-shard",
                    path,
                    message + "; since replaced by a valid shard",
                    fixed=True,
                    action="none needed",
                )
            dest = quarantine_name(engine.root, path)
            _fs.ensure_dir(os.path.dirname(dest))
            _fs.replace(path, dest)
            _fs.fsync_dir(view.dir)
    except LockTimeout:
        return Finding("corrupt-shard", path, message + "; could not lock it to quarantine", fixed=False)
    except StorageError as exc:
        # e.g. quarantine/ is a link: never followed, so the shard stays put.
        return Finding("corrupt-shard", path, f"{message}; could not quarantine it: {exc.message}", fixed=False)
    engine.cache.forget(path)
    return Finding(
        "corrupt-shard",
        path,
        message,
        fixed=True,
        action=f"moved to {dest}; its records are lost from the store (restore them from an export)",
        details={"quarantined_to": dest},
    )


def compact_store(engine: Engine) -> dict[str, Any]:
    """See :meth:`filemem.Store.compact` (the work is in :mod:`filemem._maintain`)."""
    return compact(engine)
