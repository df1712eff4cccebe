"""Power-loss crash states of every write path: nothing acknowledged lost, nothing torn served, always repairable.

Each workload runs once under the recording shim (tests/faults/_shim.py); then
every crash state the model in tests/faults/_crash.py allows at each sync is
written out and checked (tests/faults/_workloads.py: ``verify_store``): the
store opens, every write whose call returned is there, a batch in flight is
all or nothing, every shard decodes, and ``check(fix=True)`` leaves
``check()`` clean. The fast run tries every crash instant of small
workloads, each in its minimal state and one journal-order state; the slow
run (``FILEMEM_FAULTS_FULL=1``) adds a mixed workload and twelve
journal-order states per instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.faults._harness import run_crash_states
from tests.faults._workloads import LARGE_WORKLOADS, WORKLOADS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the shim reads /proc/self/fd")


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_crash_state_recovers(tmp_path: Path, name: str) -> None:
    report = run_crash_states(WORKLOADS[name], str(tmp_path))
    # The workload really made durable changes, and every instant was tried.
    assert report.instants >= 10 and report.states >= 2 * report.instants, report
    print(f"{name}: {report.states} crash states from {report.events} recorded calls")


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not os.environ.get("FILEMEM_FAULTS_FULL"), reason="set FILEMEM_FAULTS_FULL=1 (minutes)")
@pytest.mark.parametrize("name", sorted({**WORKLOADS, **LARGE_WORKLOADS}))
def test_every_crash_state_recovers_large(tmp_path: Path, name: str) -> None:
    report = run_crash_states({**WORKLOADS, **LARGE_WORKLOADS}[name], str(tmp_path), cuts=12)
    assert report.states >= 10 * report.instants, report
    print(f"{name} (large): {report.states} crash states from {report.events} recorded calls")


def test_the_simulator_catches_a_missing_directory_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness can fail: without the fsync of the directory after a rename, acknowledged puts are lost."""
    from filemem import _fs

    monkeypatch.setattr(_fs, "fsync_dir", lambda path, missing_ok=False: True)
    with pytest.raises(AssertionError, match="expected one of"):
        run_crash_states(WORKLOADS["puts"], str(tmp_path))
