"""Another process with its own Store, driven over a pipe (spawn context).

``Peer`` (parent side) starts ``peer_main`` in a spawned child that opens
the store with the given options and then runs one command at a time:

* ``put(ns, key, value)`` -> ``time.monotonic()`` just after the put returned
  (``CLOCK_MONOTONIC`` is one clock for every process on Linux, so the parent
  can compare it with its own readings);
* ``batch(ns, {key: value})``, ``delete(ns, key)``;
* ``get(ns, key, consistency)`` -> the value;
* ``spin(ns, key, expected, timeout_s)``: first answers ``("started", value)``
  after one cached read, then reads in a tight loop until the value equals
  ``expected`` and answers with when that read started and ended;
* ``write_for(ns, key, seconds)``: puts 0, 1, 2, ... for ``seconds`` and
  answers with ``[(value, monotonic time the put returned), ...]``;
* ``stats()``, ``close()``.

Pipes, not queues: a ``multiprocessing.Queue`` starts a feeder thread in the
parent, which the leak check would (rightly) report.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

from tests.helpers import reap


def peer_main(conn: Connection, path: str, options: dict[str, Any]) -> None:
    import filemem

    store = filemem.Store(path, **options)
    try:
        conn.send(("ready", None))
        while True:
            cmd, args = conn.recv()
            try:
                if cmd == "close":
                    conn.send(("ok", None))
                    return
                conn.send(("ok", _run(conn, store, cmd, args)))
            except Exception as exc:
                conn.send(("err", f"{type(exc).__name__}: {exc}"))
    finally:
        store.close()


def _run(conn: Connection, store: Any, cmd: str, args: tuple[Any, ...]) -> Any:
    if cmd == "put":
        ns, key, value = args
        store.put(ns, key, value)
        return time.monotonic()
    if cmd == "batch":
        ns, values = args
        with store.batch() as b:
            for k, v in values.items():
                b.put(ns, k, v)
        return time.monotonic()
    if cmd == "delete":
        ns, key = args
        return store.delete(ns, key)
    if cmd == "get":
        ns, key, consistency = args
        return store.get(ns, key, consistency=consistency)
    if cmd == "stats":
        return store.stats()
    if cmd == "spin":
        ns, key, expected, timeout_s = args
        conn.send(("started", store.get(ns, key)))
        deadline = time.monotonic() + timeout_s
        reads = 0
        while True:
            start = time.monotonic()
            value = store.get(ns, key)
            end = time.monotonic()
            reads += 1
            if value == expected or end > deadline:
                return {"seen": value == expected, "value": value, "start": start, "end": end, "reads": reads}
    if cmd == "write_for":
        ns, key, seconds = args
        log = []
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            store.put(ns, key, i)
            log.append((i, time.monotonic()))
            i += 1
        return log
    raise ValueError(f"unknown command {cmd!r}")


class Peer:
    """The parent's handle on a peer process (a context manager that always reaps it)."""

    def __init__(self, path: str, **options: Any) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=peer_main, args=(child_conn, path, options), daemon=True)
        self.proc.start()
        child_conn.close()
        try:
            assert self.recv(timeout=120) == ("ready", None)
        except BaseException:
            self.close()
            raise

    def recv(self, timeout: float = 60.0) -> tuple[str, Any]:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"peer gave no answer within {timeout} s")
        msg: tuple[str, Any] = self.conn.recv()
        return msg

    def send(self, cmd: str, *args: Any) -> None:
        self.conn.send((cmd, args))

    def result(self, timeout: float = 60.0) -> Any:
        status, value = self.recv(timeout)
        if status == "err":
            raise RuntimeError(f"peer failed: {value}")
        assert status == "ok", status
        return value

    def call(self, cmd: str, *args: Any, timeout: float = 60.0) -> Any:
        self.send(cmd, *args)
        return self.result(timeout)

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.send("close")
                self.recv(timeout=30)
        except (OSError, EOFError, TimeoutError):
            pass
        finally:
            self.conn.close()
            reap([self.proc], timeout=30)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
