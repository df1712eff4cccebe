"""Children for the log's multi-process tests (spawn context: module-level functions only)."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import filemem

NS = ("wal", "proc")


def incrementer(path: str, key: str, times: int) -> None:
    """``update`` one counter ``times`` times."""
    with filemem.Store(path) as s:
        for _ in range(times):
            s.update(NS, key, lambda n: (n or 0) + 1)


def folder_loop(path: str, stop_file: str) -> None:
    """Fold the log as fast as possible until ``stop_file`` exists (or until killed)."""
    with filemem.Store(path) as s:
        while not os.path.exists(stop_file):
            s._engine.fold(wait=True)
            time.sleep(0.001)


def acked_writer(path: str, me: int, ack_path: str, seed: int) -> None:
    """Write puts and 4-key batches for ever; append one ack line after each call returned.

    Line: ``put <key> <value> <version>`` or ``batch <gen> <version>``.
    """
    rng = random.Random(seed)
    with filemem.Store(path) as s, open(ack_path, "a", buffering=1) as ack:
        while True:
            n = time.time_ns()  # grows across incarnations too: a later write always carries a larger n
            if rng.random() < 0.3:
                keys = [f"w{me}-b{i}" for i in range(4)]
                with s.batch() as b:
                    for k in keys:
                        b.put(NS, k, {"gen": n, "pad": "x" * rng.randrange(0, 300)})
                ack.write(f"batch {n} {b.results[0]}\n")
            else:
                key = f"w{me}-k{rng.randrange(20)}"
                v = s.put(NS, key, {"n": n, "pad": "y" * rng.randrange(0, 300)})
                ack.write(f"put {key} {n} {v}\n")


def visibility_writer(path: str, conn: Any, rounds: int) -> None:
    """Put round i, then tell the reader i (after the put returned)."""
    with filemem.Store(path) as s:
        for i in range(rounds):
            s.put(NS, "seen", i)
            conn.send(i)
            assert conn.recv() == "ok"
        conn.send(None)


def killed_at(path: str, point: str, value: Any, ready: Any, behind: bool = False) -> None:
    """Put ``value`` under key "killed" and SIGKILL this process at ``point`` inside the put (a fault point).

    ``"after-sync"``: the frame's ``fdatasync`` returned, the control page does
    not count it as synced yet. ``"before-sync"``: the page counts the frame as
    appended, its ``fdatasync`` never ran. ``"after-write"``: the frame is in the file,
    the page does not count it as appended yet. ``"mid-page"``: inside the
    page update after the frame (the append group, ``aseq`` odd), with
    ``appended`` written and ``last_lsn`` not.
    ``ready`` hears "armed" first. ``behind``: another handle writes after
    "before", so this handle's overlay is behind the log's end and its put is
    logged blind (no catch-up, ``created_at`` carried over).
    """
    import signal

    from filemem._wal import _control, _writer

    with filemem.Store(path) as s:
        s.put(NS, "before", 1)
        if behind:
            with filemem.Store(path) as other:
                other.put(NS, "other", 0)
            log = s._engine.log
            assert log is not None and log.overlay.tail < log.positions()[0], "not behind: the put would catch up"
        if point in ("after-sync", "before-sync"):
            real_sync = _writer.LogWriter.sync

            def sync(self: Any, end: int) -> None:
                if point == "after-sync":
                    real_sync(self, end)
                os.kill(os.getpid(), signal.SIGKILL)

            _writer.LogWriter.sync = sync  # type: ignore[method-assign]
        elif point == "mid-page":

            def write_appended(self: Any, appended: int, last_lsn: int) -> None:
                # What a writer killed inside its update leaves: the append
                # group's seqlock odd, "appended" new, "last_lsn" still old.
                self._put(_control._ASEQ, self._get(_control._ASEQ) + 1)
                self._put(_control._APPENDED, appended)
                os.kill(os.getpid(), signal.SIGKILL)

            _control.ControlPage.write_appended = write_appended  # type: ignore[method-assign]
        else:
            real_write_appended = _control.ControlPage.write_appended

            def write_appended(self: Any, appended: int, last_lsn: int) -> None:
                os.kill(os.getpid(), signal.SIGKILL)
                real_write_appended(self, appended, last_lsn)

            _control.ControlPage.write_appended = write_appended  # type: ignore[method-assign]
        ready.send("armed")
        s.put(NS, "killed", value)
    raise AssertionError("not killed")  # pragma: no cover


def wait_for(path: str, timeout: float = 60.0) -> None:
    """Wait until ``path`` exists (a file the parent touches to say go)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)


def close_counting_writer(path: str, me: int, count: int, ready: str, go: str, out: str) -> None:
    """Write ``count`` records in batches of 100, say ready, wait for go, close at once; report the close's fold work.

    ``out`` gets a JSON line: records folded and closes that folded, by the
    close itself (counters after the close minus counters just before it).
    """
    import json

    s = filemem.Store(path)
    for start in range(0, count, 100):
        with s.batch() as b:
            for i in range(start, min(start + 100, count)):
                b.put(("close", str(me)), f"k{i:05d}", {"me": me, "i": i})
    # Fold those batches now: left to the background folder (due a quarter
    # second after the last write), that fold could still be running when the
    # close's counters are taken on a loaded machine, and be counted as the
    # close's own work.
    s._engine.settle()
    with open(ready, "w"):
        pass
    wait_for(go)
    if count:
        # The last batch again, right before closing: the background folder
        # (due a quarter second after a write) cannot have folded it.
        with s.batch() as b:
            for i in range(max(0, count - 100), count):
                b.put(("close", str(me)), f"k{i:05d}", {"me": me, "i": i})
    counters = s._engine.counters
    before = dict(counters)
    s.close()
    got = {k: counters.get(k, 0) - before.get(k, 0) for k in ("records_folded", "close_folds", "fold_waits")}
    with open(out, "w") as fh:
        json.dump(got, fh)


def batch_writer(path: str, ack_path: str, ready: str, stop: str) -> None:
    """Write 10-key batches (every key of batch n holds n) and one new key per batch until ``stop`` exists.

    Acks ``<n>`` after each batch returned. Small values: the log stays far
    below the fold threshold, and the writer's own fold waits for it to be idle.
    """
    with filemem.Store(path) as s, open(ack_path, "a", buffering=1) as ack:
        n = 0
        while not os.path.exists(stop):
            n += 1
            with s.batch() as b:
                for i in range(10):
                    b.put(("scan", "hot"), f"b{i}", {"n": n, "pad": "z" * 40})
                b.put(("scan", "hot"), f"new{n:06d}", {"n": n})
            ack.write(f"{n}\n")
            if n == 20:
                with open(ready, "w"):
                    pass


def unfolded_puts(path: str, namespace: tuple[str, ...], count: int) -> None:
    """Put ``count`` new keys ``k00000``... and close, leaving every record unfolded.

    No background fold and no back-pressure fold in this child; its close
    leaves the fold to the read-write handle the parent keeps open.
    """
    from filemem._engine import _log as engine_log

    engine_log.LogGlue._poke_folder = lambda self, *, now: None  # type: ignore[method-assign]
    engine_log.FOLD_BYTES = engine_log.BACKLOG_BYTES = 1 << 40  # type: ignore[misc]
    with filemem.Store(path) as s:
        for i in range(count):
            s.put(namespace, f"k{i:05d}", {"i": i, "text": "x" * 100})
