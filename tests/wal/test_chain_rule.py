"""The chain rule for a carried created_at, with real writer processes that skip the catch-up (issue 13).

Two writer processes take turns (the parent orders every commit) writing the
same keys: plain puts, overwrites, deletes, puts with a TTL that expires and
one that does not, batches repeating a key, with no fold in between. With two
writers each one's overlay is behind the log's end at nearly every commit, so
its plain puts are logged blind: every ``created_at`` carried over (NaN),
while the log holds unfolded records of the key. A third process (subscribed
to the change feed before the first write), the writers themselves, a
read-only handle that cannot trust the control page, and handles after a
fold, after a fold one frame per step, and after a reopen must all serve the
model: the log replayed in order, ``created_at`` kept across overwrites of a
live record and reset after a delete or an expiry.

These tests fail if a carried time resolves against the shard while the log
holds the key's previous record (the rule before), if the overlay, the fold,
the feed or a fresh handle resolve it differently, or if a writer does not
see its own blind write.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import time
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
import filemem.admin
from filemem._engine import _log as engine_log
from filemem._wal import _format
from filemem.codecs import get_codec
from tests.helpers import reap
from tests.wal._chain_workers import NS, chain_reader, chain_writer, read_all

SHORT_TTL = 0.3
#: Keys the shards hold before the writers start (s2 with a TTL that expires first).
SHARD_KEYS = ("s0", "s1", "s2")
KEYS = ["s0", "s1", "s2", "n0", "n1", "t0", "x0", "m0"]


class _Child:
    """One child process and its end of the command pipe."""

    def __init__(self, target: Any, path: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(path, theirs), daemon=True)
        self.proc.start()
        theirs.close()
        assert self.ask_raw() == "ready"

    def ask_raw(self) -> Any:
        if not self.conn.poll(60):
            raise AssertionError("child did not answer in 60 s")
        return self.conn.recv()

    def ask(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        return self.ask_raw()


def _script(a: _Child, b: _Child) -> None:
    """The interleaving: A and B alternate on the same keys (each call returns before the next starts)."""
    a.ask("put", "s0", "a1", None)  # A is caught up: decided as before (the shard's time, looked up)
    b.ask("put", "s0", "b1", None)  # B is behind: blind, carried from A's put (unfolded)
    a.ask("put", "s0", "a2", None)
    b.ask("put", "n0", "b1", None)  # a new key: carried from nothing
    a.ask("put", "n0", "a1", 3600.0)
    b.ask("delete", "n0")  # not a plain put: caught up, decided as before
    a.ask("put", "n0", "a2", None)  # after a delete: reset
    b.ask("put", "n0", "b2", None)
    a.ask("put", "t0", "a1", SHORT_TTL)
    b.ask("put", "t0", "b1", SHORT_TTL)  # live: keeps A's created_at
    time.sleep(SHORT_TTL + 0.3)
    a.ask("put", "t0", "a2", None)  # after an expiry: reset
    b.ask("put", "t0", "b2", 3600.0)
    a.ask("batch", [("put", "s1", "a1", None), ("put", "s1", "a2", None)])  # a key twice in one blind batch
    b.ask("batch", [("put", "n1", "b1", None), ("put", "s1", "b1", None), ("put", "n0", "b3", None)])
    a.ask("delete", "s1")
    b.ask("put", "s1", "b2", None)  # reset by A's delete
    a.ask("put", "x0", "a1", SHORT_TTL)
    time.sleep(SHORT_TTL + 0.3)
    b.ask("put", "x0", "b1", None)  # reset by the expiry
    a.ask("put", "x0", "a2", None)
    b.ask("put", "s2", "b1", None)  # the shard's record expired before this put: reset
    a.ask("put", "s2", "a1", None)
    b.ask("batch", [("delete", "n1", None, None), ("put", "n1", "b2", None)])  # mixed: decided as before
    a.ask("put", "n1", "a1", None)
    b.ask("put", "m0", "b1", None)
    a.ask("put", "m0", "a1", None)
    b.ask("put", "m0", "b2", None)
    a.ask("put", "s0", "a3", None)
    b.ask("put", "s0", "b2", None)


def _model(path: str, before: dict[str, Any]) -> tuple[dict[str, Any], dict[tuple[str, int], float], int]:
    """The log replayed in order over the shards' records.

    Returns the final states, the ``created_at`` of the last put of each key
    in each commit (what the change feed announces) by (key, version), and
    how many puts were logged carried over while the log held the key.

    Read from the frames as logged (the writers' results are not trusted),
    with the rule spelled out: a put keeps the created_at of the record it
    replaces if that one was live at the put's time, else takes its own time.
    """
    state: dict[str, Any] = dict(before)
    created_by_put: dict[tuple[str, int], float] = {}
    carried_over_log = 0
    unfolded: set[str] = set()
    with filemem.Store(path, readonly=True) as r:
        log = r._engine.log
        assert log is not None
        synced, folded = log.positions()
        frames = [f for f in log.reader.scan(folded, synced).frames if f.kind == _format.BATCH]
    for frame in frames:
        first, now, ops = _format.decode_batch(frame.payload)
        last_of_key = {op.key: first + i for i, op in enumerate(ops)}  # the feed tells what a key holds after a commit
        for i, op in enumerate(ops):
            if op.namespace != NS:
                continue
            if op.kind != _format.PUT:
                state[op.key] = None
                unfolded.add(op.key)
                continue
            if math.isnan(op.created_at) and op.key in unfolded:
                carried_over_log += 1
            prev = state.get(op.key)
            live = prev is not None and (prev[4] is None or prev[4] > now)
            created = prev[2] if live else now
            assert op.value is not None and op.codec is not None
            state[op.key] = (get_codec(op.codec).decode(op.value), first + i, created, now, op.expires_at)
            if last_of_key[op.key] == first + i:
                created_by_put[(op.key, first + i)] = created
            unfolded.add(op.key)
    return state, created_by_put, carried_over_log


def _served(state: dict[str, Any], at: float) -> dict[str, Any]:
    """What a read at ``at`` must return: live records only."""
    out = {}
    for k in KEYS:
        got = state.get(k)
        out[k] = got if got is not None and (got[4] is None or got[4] > at) else None
    return out


def _check(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    assert got["get"] == want, where
    assert got["items"] == {k: v for k, v in want.items() if v is not None}, where


@pytest.fixture
def children(store_path: str) -> Iterator[list[_Child]]:
    made: list[_Child] = []
    try:
        yield made
    finally:
        for c in made:
            if c.proc.is_alive():
                with contextlib.suppress(OSError):
                    c.conn.send(("close",))
        reap([c.proc for c in made], timeout=30)


def _populate(path: str) -> dict[str, Any]:
    with filemem.Store(path) as s:
        s.put(NS, "s0", "shard", ttl=None)
        s.put(NS, "s1", "shard", ttl=3600.0)
        s.put(NS, "s2", "shard", ttl=SHORT_TTL)
        filemem.admin.fold(s)
        got = {k: read_all(s, [k])["get"][k] for k in SHARD_KEYS}
    assert all(v is not None for v in got.values())
    time.sleep(SHORT_TTL + 0.1)  # s2 expires in its shard before anyone writes it
    return got


def test_blind_writers_and_every_reader_agree_on_created_at(store_path: str, children: list[_Child]) -> None:
    before = _populate(store_path)
    reader = _Child(chain_reader, store_path)
    children.append(reader)
    a = _Child(chain_writer, store_path)
    children.append(a)
    b = _Child(chain_writer, store_path)
    children.append(b)
    _script(a, b)
    state, created_by_put, carried = _model(store_path, before)
    want = _served(state, time.time())

    # The paths this test is about were taken.
    assert a.ask("blind") > 5 and b.ask("blind") > 5, "the writers did not skip the catch-up"
    assert carried >= 15, "few puts carried created_at over an unfolded record"
    # The model has what the rule is about: kept across writers, reset by a delete and by an expiry.
    assert want["s0"][2] == before["s0"][2] < want["s0"][3]
    assert want["m0"][2] < want["m0"][3] and want["t0"][2] < want["t0"][3]
    assert state["n0"][2] > before["s0"][3]
    assert want["s1"][2] > before["s1"][2] and want["s2"][2] > before["s2"][2]

    last_version = max(v[1] for v in state.values() if v is not None)
    third = reader.ask("read", KEYS, last_version)
    _check(third, want, "a third process, before any fold")
    # The change feed: every put it announced has the created_at it had when committed.
    feed = {(k, v): c for k, v, c in third["feed"]}
    assert set(feed) == set(created_by_put), "the feed missed puts"
    assert feed == created_by_put, "the change feed resolved a carried created_at differently"
    _check(a.ask("read", KEYS), want, "writer A reading its own blind writes")
    _check(b.ask("read", KEYS), want, "writer B reading its own blind writes")
    for c in (a, b, reader):
        assert c.ask("close") is None
    reap([c.proc for c in (a, b, reader)])

    # Everyone closed with folds held: the log is still unfolded. The first
    # opener, read-only, cannot trust the page and reads the log privately.
    with filemem.Store(store_path, readonly=True) as r:
        assert r._engine.log is not None and r._engine.log._private is not None
        assert r._engine.log.unfolded_bytes() > 0 or r._engine.log.overlay.count > 0
        _check(read_all(r, KEYS), want, "a read-only handle on the private view, before the fold")
    with filemem.Store(store_path) as s:
        filemem.admin.fold(s)
        assert s._engine.log is not None and s._engine.log.unfolded_bytes() == 0
        _check(read_all(s, KEYS), want, "after the fold")
    with filemem.Store(store_path, readonly=True) as r:
        _check(read_all(r, KEYS), want, "after a reopen, from the shards")


def test_a_fold_one_frame_at_a_time_keeps_the_chain(
    store_path: str, children: list[_Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each frame folded in its own range: a carried put's previous record is in the shard, from the fold before.

    Read between the steps too, by a handle that saw the log before the fold
    and by a fresh one that sees part of the chain in the shards.
    """
    before = _populate(store_path)
    a = _Child(chain_writer, store_path)
    children.append(a)
    b = _Child(chain_writer, store_path)
    children.append(b)
    _script(a, b)
    state, _, _ = _model(store_path, before)
    for c in (a, b):
        assert c.ask("close") is None
    reap([c.proc for c in (a, b)])
    # This process's folder never folds on its own (the opener of a store with
    # a backlog would fold it all in the background): the test folds by steps.
    monkeypatch.setattr(engine_log.LogGlue, "_poke_folder", lambda _self, *, now: None)
    with filemem.Store(store_path) as early:
        log = early._engine.log
        assert log is not None
        log.fold_step_bytes = 1  # a checkpoint after every frame
        want = _served(state, time.time())
        _check(read_all(early, KEYS), want, "before the fold")
        steps = 0
        while log.unfolded_bytes() > 0:
            assert early._engine.fold(wait=True, max_bytes=1)
            steps += 1
            if steps % 5 == 0:
                now = time.time()
                _check(read_all(early, KEYS), _served(state, now), f"after {steps} fold steps")
                with filemem.Store(store_path, readonly=True) as fresh:
                    _check(read_all(fresh, KEYS), _served(state, now), f"a fresh handle after {steps} fold steps")
        assert steps >= 20, steps
        _check(read_all(early, KEYS), _served(state, time.time()), "after the whole fold")
    with filemem.Store(store_path, readonly=True) as r:
        _check(read_all(r, KEYS), _served(state, time.time()), "after a reopen")
