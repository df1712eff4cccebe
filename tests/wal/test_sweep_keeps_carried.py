"""Sweeping expired records keeps the ones a carried created_at still needs (the chain rule).

A plain put logged with its ``created_at`` carried over (NaN) takes the time
of the key's previous record in log order; when the log holds nothing
unfolded of the key, that is the shard's record, if it was live at the put's
time. ``compact`` and ``maintain`` fold the log first and then sweep each
shard's expired records; another process's put landing between the two (its
shard not swept yet, which on a large store is seconds) left its carried time
resolving against a shard whose previous record the sweep had just dropped for
having expired *since* the put: the put took its own time, everywhere, for
good. The sweep may drop only what expired before the oldest unfolded batch.

The writer is a real process (its put must land between the maintainer's fold
and its sweep, which the test arranges by running it from the maintainer's
settle); these tests fail with ``maintain_shard`` dropping by its own clock.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import filemem
import filemem.admin
from filemem._engine import _log as engine_log
from tests.helpers import reap
from tests.wal._chain_workers import NS, chain_writer

TTL_S = 0.6


class _Writer:
    """A writer process whose folds are held off; it runs the commands it is sent, one at a time."""

    def __init__(self, path: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=chain_writer, args=(path, theirs), daemon=True)
        self.proc.start()
        theirs.close()
        assert self.ask_raw() == "ready"

    def ask_raw(self) -> Any:
        if not self.conn.poll(60):
            raise AssertionError("writer did not answer in 60 s")
        return self.conn.recv()

    def ask(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        return self.ask_raw()


@pytest.fixture
def writer(store_path: str) -> Iterator[_Writer]:
    w: _Writer | None = None
    try:
        w = _Writer(store_path)
        yield w
    finally:
        if w is not None:
            if w.proc.is_alive():
                with contextlib.suppress(OSError):
                    w.conn.send(("close",))
            reap([w.proc], timeout=30)


@pytest.fixture(autouse=True)
def _no_background_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    # The maintainer folds only in its own settle: a background fold of the
    # writer's put before the sweep would close the window under test.
    monkeypatch.setattr(engine_log.LogGlue, "_poke_folder", lambda _self, *, now: None)


def _old_record(path: str) -> float:
    """A record of "k" in the shards that expires in TTL_S; return its created_at."""
    with filemem.Store(path) as s:
        s.put(NS, "k", "old", ttl=TTL_S)
        s.put(NS, "other", "x", ttl=TTL_S)  # expires too; nothing needs it, but it expired after the put
        filemem.admin.fold(s)
        got = s.get_item(NS, "k")
    assert got is not None and got.expires_at is not None
    return got.created_at


def _put_after_settle(s: filemem.Store, writer: _Writer, expires: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's put lands just after ``s`` folds, and the old record expires before ``s`` sweeps."""
    real: Callable[[], None] = s._engine.settle

    def settle_then_put() -> None:
        real()
        writer.ask("put", "k", "new", None)  # "old" is live: its created_at carries over
        time.sleep(max(0.0, expires - time.time()) + 0.1)

    monkeypatch.setattr(s._engine, "settle", settle_then_put)


def _assert_kept(path: str, writer: _Writer, created: float, where: str) -> None:
    got = writer.ask("read", ["k"])["get"]["k"]
    assert got is not None and got[0] == "new" and got[2] == created, f"the writer, {where}"
    with filemem.Store(path, readonly=True) as r:
        item = r.get_item(NS, "k")
        assert item is not None and item.created_at == created, f"a fresh read-only handle, {where}"
    with filemem.Store(path) as s:
        filemem.admin.fold(s)
        item = s.get_item(NS, "k")
        assert item is not None and item.value == "new" and item.created_at == created, f"after the fold, {where}"
        assert s.get_item(NS, "other") is None


def test_compact_keeps_a_record_an_unfolded_carried_put_needs(
    store_path: str, writer: _Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _old_record(store_path)
    expires = created + TTL_S
    with filemem.Store(store_path) as s:
        _put_after_settle(s, writer, expires, monkeypatch)
        got = s.compact()
        # Both expired after the oldest unfolded batch (the writer's put): kept for now.
        assert got["expired_dropped"] == 0
    _assert_kept(store_path, writer, created, "after compact")


def test_maintain_keeps_a_record_an_unfolded_carried_put_needs(
    store_path: str, writer: _Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _old_record(store_path)
    expires = created + TTL_S
    with filemem.Store(store_path) as s:
        _put_after_settle(s, writer, expires, monkeypatch)
        report = s.maintain(budget_s=30.0)
        assert report.counts["expired_dropped"] == 0
    _assert_kept(store_path, writer, created, "after maintain")


def test_once_folded_the_sweep_drops_it(store_path: str, writer: _Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a sweep held back goes with the next one, once the log before its expiry is folded."""
    created = _old_record(store_path)
    expires = created + TTL_S
    with filemem.Store(store_path) as s:
        _put_after_settle(s, writer, expires, monkeypatch)
        s.compact()
    with filemem.Store(store_path) as s:
        got = s.compact()  # folds the put (resolved against the old record: replaced), then sweeps
        assert got["expired_dropped"] == 1  # "other"
        item = s.get_item(NS, "k")
        assert item is not None and item.created_at == created
        assert s._engine._raw_shard_record(NS, "other") is None
