"""Child-process entry points for the session tests (spawn context: module level, picklable arguments).

Children report through files, never pipes: a line appended with one
``os.write`` to an ``O_APPEND`` file is there whole or not at all, and a child
may be SIGKILLed at any instruction.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import filemem


def log(path: str, *fields: Any) -> None:
    """Append one JSON line with a single write; a new log appears with its first line already in it.

    Waiters poll for the file to exist (``wait_for``) and then read it: a log
    created empty and written a moment later let them read nothing on a
    loaded machine. So the first line goes into a temp file that is linked
    into place (create-if-absent); later lines, or a lost race to create,
    append.
    """
    line = (json.dumps(list(fields)) + "\n").encode()
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
            return
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_log(path: str) -> list[list[Any]]:
    """Every complete line of a log."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in raw.split(b"\n")[:-1]]


def wait_for(path: str, timeout: float = 30.0) -> None:
    """Wait until ``path`` exists."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)


def hold_child(store_path: str, agent: str, priority: int, log_path: str, hold_s: float, go_path: str | None) -> None:
    """Start a session (waiting as long as it takes), log enter/exit around holding it."""
    with filemem.Store(store_path) as store, store.session(agent, priority=priority, timeout=60) as s:
        # monotonic_ns is one clock for every process of the machine (Linux CLOCK_MONOTONIC).
        log(log_path, "enter", agent, time.monotonic_ns(), s.info().started_at, s.id)
        if go_path is not None:
            wait_for(go_path)
        time.sleep(hold_s)
        log(log_path, "exit", agent, time.monotonic_ns(), None, s.id)


def status_child(store_path: str, index: int, updates: int, ready_path: str, go_path: str) -> None:
    """Report many status updates and writes; the last says 'done'."""
    with filemem.Store(store_path) as store, store.session(f"w{index}", namespace=f"w{index}") as s:
        log(ready_path, s.id)
        wait_for(go_path)
        for i in range(updates):
            s.set_status(f"step-{i}", progress=i / updates)
            s.store.put(f"w{index}", f"k{i}", {"i": i})
        s.set_status("done", progress=1.0)


def crash_child(store_path: str, ready_path: str, fork_first: bool) -> None:
    """Open a session, report its id, then die: SIGKILL by itself after forking a long-lived child
    (``fork_first``), else SIGKILL by the parent, which waits for the ready line."""
    store = filemem.Store(store_path)
    s = store.session("doomed", metadata={"fork": fork_first})
    s.set_status("working", progress=0.5)
    grandchild = 0
    if fork_first:
        grandchild = os.fork()
        if grandchild == 0:
            # The child of a session's owner must not hold the session: it
            # inherits the lock descriptor, which filemem closes at fork.
            try:
                s.set_status("child", progress=0.1)
                outcome = "set_status allowed"
            except filemem.StoreClosedError:
                outcome = "refused"
            log(ready_path + ".grandchild", os.getpid(), outcome)
            time.sleep(60)
            os._exit(0)
        wait_for(ready_path + ".grandchild")
    log(ready_path, s.id, grandchild)
    if not fork_first:
        time.sleep(60)
    os.kill(os.getpid(), signal.SIGKILL)


def wait_then_crash_child(store_path: str, ready_path: str) -> None:
    """Wait for a slot (reporting the wait), to be SIGKILLed by the parent while waiting."""
    store = filemem.Store(store_path)
    log(ready_path, os.getpid())
    session = store.session("waiter", priority=7, timeout=60)  # kept: a dropped session ends at once
    time.sleep(60)
    session.close()


def stop_child(store_path: str, ready_path: str, out_path: str) -> None:
    """Work until asked to stop; the callback and the flag both report."""

    def on_stop(session: filemem.Session) -> None:
        log(out_path, "callback", session.id)

    with filemem.Store(store_path) as store, store.session("stoppable", on_stop=on_stop) as s:
        log(ready_path, s.id)
        deadline = time.monotonic() + 20
        while not s.stop_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        log(out_path, "flag", s.stop_requested)
        # Give the callback (on the watcher's thread) its moment before closing.
        deadline = time.monotonic() + 5
        while len(read_log(out_path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        s.set_status("stopping")


def lifecycle_child(store_path: str, ready_path: str, go_path: str) -> None:
    """Start, change, end: for a subscriber in another process."""
    with filemem.Store(store_path) as store, store.session("observed") as s:
        log(ready_path, s.id)
        wait_for(go_path)
        s.set_status("half", progress=0.5)
        time.sleep(0.2)  # longer than the watcher's interval: the change is seen on its own
        s.set_status("most", progress=0.9)
        time.sleep(0.2)


def hold_until_child(store_path: str, agent: str, ready_path: str, go_path: str) -> None:
    """Start a session, report its id, hold it until ``go_path`` exists, then close it."""
    with filemem.Store(store_path) as store, store.session(agent, timeout=60) as s:
        log(ready_path, s.id)
        wait_for(go_path, timeout=60)


def churn_child(store_path: str, ready_path: str, stop_path: str) -> None:
    """Open and close sessions (waiting for a slot when a limit says so) until ``stop_path`` exists."""
    with filemem.Store(store_path, durability="flush") as store:
        log(ready_path, os.getpid())
        while not os.path.exists(stop_path):
            with store.session("churn", timeout=30) as s:
                s.set_status("working")
