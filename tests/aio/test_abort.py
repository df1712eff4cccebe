"""_locks.set_abort: a lock wait in a thread can be abandoned cleanly (what async cancellation relies on)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from filemem import _locks


@pytest.mark.parametrize("mode", ["file", "in-process", "shared"])
def test_an_aborted_wait_leaves_holding_nothing(tmp_path: Path, mode: str) -> None:
    path = str(tmp_path / "x.lock")
    # "in-process": held by this thread, so the waiter queues on the in-process
    # lock; otherwise a separate open file description, like another process.
    holder = _locks.exclusive(path, 1.0) if mode == "in-process" else _locks.try_exclusive(path)
    assert holder is not None
    abort = threading.Event()
    outcome: list[BaseException | None] = []

    def waiter() -> None:
        _locks.set_abort(abort)
        try:
            if mode == "shared":
                _locks.shared(path, 30.0).release()
            else:
                _locks.exclusive(path, 30.0).release()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            _locks.set_abort(None)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    started = time.monotonic()
    abort.set()
    t.join(5)
    assert time.monotonic() - started < 1.0
    assert len(outcome) == 1 and isinstance(outcome[0], _locks.WaitAborted)
    holder.release()
    again = _locks.exclusive(path, 0.5)  # nothing left held, in-process or on the file
    again.release()
    assert path not in _locks._inproc


def test_without_an_abort_event_waits_are_unchanged(tmp_path: Path) -> None:
    path = str(tmp_path / "x.lock")
    holder = _locks.exclusive(path, 1.0)
    with pytest.raises(_locks.LockTimeout):
        _locks.exclusive(path, 0.05)
    holder.release()
