"""Helpers for the command-line tests: run `python -m filemem`, copy fixtures, hash a tree."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import filemem

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "fixtures"
CLEAN = ["v1-json", "v1-msgpack"]
DAMAGES = ["flipped-byte", "truncated", "leftover-temp", "foreign-file", "unfinished-batch"]


@dataclass
class Result:
    rc: int
    out: str
    err: str


def run(*args: str, stdin: str | None = None) -> Result:
    """Run the CLI in this process (fast): ``main(args)`` with stdin, stdout and stderr captured."""
    from filemem._cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                rc = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.stdin = saved
    return Result(rc, out.getvalue(), err.getvalue())


def run_proc(*args: str, stdin: str | None = None, timeout: float = 120) -> Result:
    """Run the CLI in a child process (stdout and stderr are pipes, never terminals)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    proc = subprocess.run(
        [sys.executable, "-m", "filemem", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def copy_fixture(tmp_path: Path, name: str) -> str:
    """A private copy of a fixture store: tests never write into fixtures/."""
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    return str(dest)


def opened_fixture(tmp_path: Path, name: str) -> str:
    """A private copy of a fixture store, opened read-write once: a store in use on this machine.

    The open upgrades a format-1 fixture to the default format (as every
    read-write open does) and sets the log's control page up for this boot,
    so a test that hashes the tree before and after a command sees only what
    the command itself changed.
    """
    path = copy_fixture(tmp_path, name)
    filemem.Store(path).close()
    return path


def tree_hash(path: str) -> str:
    """A hash of every name, mode and byte under ``path`` (mtimes excluded: reads do not change them anyway)."""
    h = hashlib.sha256()
    if not os.path.exists(path):
        return "absent"
    for dirpath, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        rel = os.path.relpath(dirpath, path)
        h.update(f"D {rel} {os.stat(dirpath).st_mode:o}\n".encode())
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            h.update(f"F {rel}/{name} {st.st_mode:o} {st.st_size}\n".encode())
            with open(full, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def one_line_error(res: Result) -> None:
    """The contract for bad input: non-zero exit, exactly one line on stderr, nothing on stdout."""
    assert res.rc != 0, res
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("filemem"), res.err
    assert "Traceback" not in res.err
