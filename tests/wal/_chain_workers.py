"""Children for tests/wal/test_chain_rule.py (spawn context: module-level functions only).

Each child opens the store with its folds held off (the parent decides when
the log is folded) and runs the commands the parent sends it, one at a time,
answering each: so the parent sets the exact order of the writers' commits.
"""

from __future__ import annotations

import time
from typing import Any

import filemem

NS = ("chain", "ns")

#: A key's state as a reader is served it: (value, version, created_at, updated_at, expires_at), None if absent.
State = tuple[Any, int, float, float, float | None] | None


def state_of(item: filemem.Item | None) -> State:
    """What a test compares of an item."""
    if item is None:
        return None
    return item.value, item.version, item.created_at, item.updated_at, item.expires_at


def read_all(s: filemem.Store, keys: list[str]) -> dict[str, Any]:
    """Every key by ``get_item`` and by a listing (both must agree with the model)."""
    return {
        "get": {k: state_of(s.get_item(NS, k)) for k in keys},
        "items": {it.key: state_of(it) for it in s.items(NS)},
    }


def _hold_folds(s: filemem.Store) -> None:
    # The fold lock is always "busy" for this handle: its folder, its
    # back-pressure and its close fold nothing (the log keeps every record).
    s._engine.fold = lambda **_kw: False  # type: ignore[method-assign]


def chain_writer(path: str, conn: Any) -> None:
    """Run write and read commands from ``conn`` until "close"; folds held off."""
    with filemem.Store(path) as s:
        _hold_folds(s)
        log = s._engine.log
        assert log is not None
        conn.send("ready")
        while True:
            cmd, *args = conn.recv()
            if cmd == "close":
                conn.send(None)
                return
            if cmd == "put":
                key, value, ttl = args
                conn.send(s.put(NS, key, value, ttl=ttl))
            elif cmd == "delete":
                conn.send(s.delete(NS, args[0]))
            elif cmd == "batch":
                # [(op, key, value, ttl)]: op "put" or "delete"
                with s.batch() as b:
                    for op, key, value, ttl in args[0]:
                        if op == "put":
                            b.put(NS, key, value, ttl=ttl)
                        else:
                            b.delete(NS, key)
                conn.send(list(b.results))
            elif cmd == "read":
                conn.send(read_all(s, args[0]))
            elif cmd == "blind":
                conn.send(log.blind_commits)
            else:
                raise AssertionError(cmd)


def chain_reader(path: str, conn: Any) -> None:
    """A third process: subscribes to the change feed before any write, then reads on command; folds held off."""
    with filemem.Store(path) as s:
        _hold_folds(s)
        seen: list[tuple[str, int, float]] = []  # (key, version, created_at) of every put the feed announced
        sub = s.subscribe(
            lambda ch: seen.extend((it.key, it.version, it.created_at) for it in (ch.items or ()) if it is not None),
            NS,
        )
        try:
            conn.send("ready")
            while True:
                cmd, *args = conn.recv()
                if cmd == "close":
                    conn.send(None)
                    return
                if cmd == "read":
                    keys, last_version = args
                    deadline = time.monotonic() + 30
                    while not any(v >= last_version for _, v, _ in seen) and time.monotonic() < deadline:
                        time.sleep(0.01)
                    got = read_all(s, keys)
                    got["feed"] = list(seen)
                    conn.send(got)
                else:
                    raise AssertionError(cmd)
        finally:
            sub.close()
