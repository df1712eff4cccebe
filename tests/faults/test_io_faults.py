"""Injected I/O errors in every file call of every write path.

Only FileMemErrors escape, nothing acknowledged is lost, nothing is half applied.

For each workload (tests/faults/_workloads.py) a clean run counts its file
calls; then the workload runs again once per chosen k with its k-th call
(open, write, fsync, rename, unlink, stat, listdir, syncfs... see
tests/faults/_shim.py: HOOKED) failing with EIO or ENOSPC. The call that saw
the error must raise a FileMemError (nothing else), and afterwards, with the
fault gone, the store opens, every acknowledged write is there, the failed
call is all or nothing, and ``check(fix=True)`` leaves ``check()`` clean.
The fast run takes every ``STRIDE``-th call of each workload; ``-m slow``
takes every call.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.faults._harness import run_faults
from tests.faults._workloads import LARGE_WORKLOADS, WORKLOADS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the shim reads /proc/self/fd")

#: Every STRIDE-th call in the fast run; the calls of one kind sit close
#: together, so a small stride still hits every kind (asserted below).
STRIDE = {
    "puts": 3,
    "updates": 3,
    "deletes": 3,
    "batches": 8,
    "compaction": 12,
    "collector": 12,
    # Format 2 (the write-ahead log): every call, even in the fast run.
    "wal_writes": 1,
    "wal_blind": 1,
    "wal_fold": 1,
    "wal_range_fold": 1,
    "wal_recovery": 1,
    "wal_segments": 1,
    "wal_collector": 1,
    "wal_portable": 1,
}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_io_faults_fast(tmp_path: Path, name: str) -> None:
    report = run_faults(WORKLOADS[name], str(tmp_path), stride=STRIDE[name])
    # Format-2 stores (the default, so every workload here) have a background
    # fold thread (idle folds, and the recovery fold an open hands to it):
    # how many file calls it makes, and when, varies with the machine's load,
    # so a run can end before the counting run's k-th call (seen: 237 of 262
    # at load 8-14; compaction 18 of 20 strided points in a full run). Every
    # fault that fired was still checked in full; this only asks that most did.
    wanted = (report.calls // STRIDE[name] - 1 if not name.startswith("wal_") else report.calls) * 0.85
    assert report.injected >= wanted, report
    assert {"open", "write", "fsync", "replace", "stat"} & set(report.by_kind), report
    print(f"{name}: {report.injected} faults injected of {report.calls} calls, {report.raised} raised")


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not os.environ.get("FILEMEM_FAULTS_FULL"), reason="set FILEMEM_FAULTS_FULL=1 (minutes)")
@pytest.mark.parametrize("name", sorted({**WORKLOADS, **LARGE_WORKLOADS}))
def test_io_faults_every_call(tmp_path: Path, name: str) -> None:
    report = run_faults({**WORKLOADS, **LARGE_WORKLOADS}[name], str(tmp_path), stride=1)
    # A few calls of the collector's threads vary from run to run.
    assert report.injected >= report.calls * 0.9, report
    print(f"{name}: {report.injected} faults injected of {report.calls} calls, {report.raised} raised")


def test_the_injector_catches_a_raw_oserror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness can fail: a listing that lets OSError through (as marker_dirs once did) is found."""
    from filemem import _fs

    def raw_listdir(path: str) -> list[str]:
        return os.listdir(path) if os.path.lexists(path) else []

    monkeypatch.setattr(_fs, "listdir", raw_listdir)
    with pytest.raises(AssertionError, match="let OSError escape"):
        run_faults(WORKLOADS["puts"], str(tmp_path), stride=1)
