"""Drive a workload under the shim: crash states (power loss) and injected I/O faults.

Both harnesses take any workload ``fn(path, acks)`` (tests/faults/_workloads.py)
and return counts, so a test can assert it really tried what it claims.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import filemem

from ._crash import crash_instants, cuts_before, durable_at, has_unsynced_data, initial_state, materialise
from ._shim import Fault, shim
from ._workloads import Acks, verify_store

Workload = Callable[[str, Acks], None]


@dataclass
class CrashReport:
    events: int = 0
    instants: int = 0
    states: int = 0


def run_crash_states(
    workload: Workload, base: str, *, max_instants: int | None = None, cuts: int = 1, seed: int = 0
) -> CrashReport:
    """Record ``workload`` on a fresh store under ``base``, then verify every crash state it could leave.

    ``max_instants``: try at most this many crash instants, spread evenly
    (always including the last); None tries them all. ``cuts``: besides the
    minimal state, this many journal-order states per instant (_crash.py).
    """
    root = os.path.join(base, "live")
    os.makedirs(root)
    initial = initial_state(root)
    with shim(root) as rec:
        acks = Acks(position=lambda: len(rec.events))
        workload(root, acks)
    events = list(rec.events)
    instants = crash_instants(events)
    if max_instants is not None and len(instants) > max_instants:
        step = len(instants) / max_instants
        instants = sorted({instants[int(i * step)] for i in range(max_instants)} | {instants[-1]})
    report = CrashReport(events=len(events), instants=len(instants))
    rng = random.Random(seed)
    for n, instant in enumerate(instants):
        for cut in [0, *cuts_before(events, instant, cuts, rng)]:
            state = durable_at(initial, events, instant, cut)
            variants: list[random.Random | None] = [None]
            if has_unsynced_data(state):
                variants.append(random.Random(rng.random()))
            for v, torn in enumerate(variants):
                dest = os.path.join(base, f"crash-{n}-{cut}-{v}")
                materialise(state, dest, torn=torn)
                label = (
                    f"crash before event {instant}/{len(events)}, directory changes before {cut} kept, "
                    f"{'torn' if torn else 'empty'} unsynced data"
                )
                verify_store(dest, acks.groups, instant, label=label)
                shutil.rmtree(dest)
                report.states += 1
    return report


@dataclass
class FaultReport:
    calls: int = 0
    injected: int = 0
    raised: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def count_calls(workload: Workload, base: str) -> int:
    """How many faultable calls a clean run of ``workload`` makes under its store."""
    root = os.path.join(base, "count")
    os.makedirs(root)
    with shim(root, record=False) as rec:
        workload(root, Acks(position=lambda: 0))
    shutil.rmtree(root)
    return rec.calls


def run_faults(
    workload: Workload, base: str, *, errnos: tuple[int, ...] = (errno.EIO, errno.ENOSPC), stride: int = 1
) -> FaultReport:
    """For every ``stride``-th k: run ``workload`` with its k-th file call failing, then recover and verify.

    Asserts that only FileMemError subclasses escape the workload's calls,
    that every acknowledged write survives, that the failed call is all or
    nothing, that the store opens, and that check(fix=True) leaves check()
    clean.
    """
    total = count_calls(workload, base)
    report = FaultReport(calls=total)
    failures: list[str] = []
    for k in range(0, total, stride):
        err = errnos[(k // stride) % len(errnos)]
        root = os.path.join(base, f"fault-{k}")
        os.makedirs(root)
        fault = Fault(at=k, err=err)
        acks = Acks(position=lambda: 0)  # no instants here: only "returned or not" matters
        with shim(root, record=False, fault=fault):
            try:
                workload(root, acks)
            except filemem.FileMemError:
                report.raised += 1
            except Exception as exc:  # the failure this harness exists to find
                where = traceback.extract_tb(exc.__traceback__)
                site = next((f"{f.filename}:{f.lineno}" for f in reversed(where) if "/filemem/" in f.filename), "?")
                what = f"{os.strerror(err)} in call {k} ({fault.fired})"
                failures.append(f"{what} let {type(exc).__name__} escape at {site}")
        if fault.fired:
            report.injected += 1
            report.by_kind[fault.fired] = report.by_kind.get(fault.fired, 0) + 1
        try:
            verify_store(root, acks.groups, None, label=f"after {os.strerror(err)} in call {k} ({fault.fired})")
        except (AssertionError, filemem.FileMemError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        shutil.rmtree(root)
    assert not failures, f"{len(failures)} of {report.injected} faults went wrong:\n" + "\n".join(failures)
    return report
