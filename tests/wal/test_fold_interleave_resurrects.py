"""Two folds from one checkpoint, interleaved by letting readers in, must not bring a deleted key back.

Fold A indexes its step up to its limit; a delete of K is logged after that
limit. A lets a reader in after its first install; fold B (another handle,
its limit past the delete) takes the lock, installs K's delete, lets a reader
in; A takes the lock back (the checkpoint has not moved), installs K's older
put over the now absent record, lets a reader in; B takes the lock back (the
checkpoint has still not moved), finishes and writes a checkpoint past the
delete. The delete is then below the checkpoint and K's old put is in its shard.

Found in review (fails before ``wal/folding.lock``: "k-0 was deleted, reads
back {'n': 0, 'v': 2}"): a fold keeps the folders' lock while it lets readers
in, so B waits for A to finish (and then has nothing left to fold).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import filemem
from filemem._engine import _log as engine_log
from filemem._wal import _fold

NS = ("agent", "facts")
KEYS = 600


def _engine(store: filemem.Store) -> Any:
    return store._backend.engine  # type: ignore[attr-defined]


def test_interleaved_folds_do_not_resurrect_a_deleted_key(
    store_path: str, no_background_fold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_log, "FOLD_CHECKPOINT_BYTES", 64 << 20)  # one step
    monkeypatch.setattr(_fold, "RECORDS_PER_INSTALL", 50)
    with (
        filemem.Store(store_path, shard_max_bytes=4096, lock_timeout_s=30) as a,
        filemem.Store(store_path, shard_max_bytes=4096, lock_timeout_s=30) as b,
    ):
        for i in range(KEYS):
            a.put(NS, f"k-{i}", {"n": i, "v": 1})
        assert _engine(a).fold(wait=True)  # many shards now
        for i in range(KEYS):
            a.put(NS, f"k-{i}", {"n": i, "v": 2})
        ea, eb = _engine(a), _engine(b)
        la, lb = ea.log, eb.log
        cond = threading.Condition()
        state: dict[str, Any] = {"turn": "A", "a_first": None, "k": None, "b_done": False}
        yielded = {"A": False, "B": False}

        def set_turn(t: str) -> None:
            with cond:
                state["turn"] = t
                cond.notify_all()

        def waiting_of(me: str) -> Any:
            def waiting() -> bool:
                if not yielded[me]:
                    yielded[me] = True
                    return True  # at a between: let "a reader" in
                with cond:  # in _let_readers_in's loop: wait for my turn (a fix may never give it)
                    cond.wait_for(lambda: state["turn"] == me, 0.5)
                yielded[me] = False
                return False

            return waiting

        def install_a(records: list[Any], expired_before: float) -> None:
            ea._install(records, expired_before)
            keys = {r[1] for r in records}
            if state["a_first"] is None:
                state["a_first"] = keys
                # K: a key A has not installed yet; deleted after A's limit.
                state["k"] = next(f"k-{i}" for i in range(KEYS) if f"k-{i}" not in keys)
                b.delete(NS, state["k"])
                set_turn("B")
            elif state["k"] in keys:
                set_turn("B")  # A has put K's old record back

        def install_b(records: list[Any], expired_before: float) -> None:
            eb._install(records, expired_before)
            if state["k"] in {r[1] for r in records}:
                set_turn("A")  # B has installed K's delete

        def fold_b() -> None:
            with cond:
                assert cond.wait_for(lambda: state["turn"] == "B", 20)
            # A fix may keep B out until A is done (then False is fine: A folded it all).
            state["b_done"] = lb.fold(install_b, wait=True, shard_of=eb._shard_of, waiting=waiting_of("B"))
            set_turn("A")

        tb = threading.Thread(target=fold_b)
        tb.start()
        assert la.fold(install_a, wait=True, shard_of=ea._shard_of, waiting=waiting_of("A"))
        tb.join(60)
        assert not tb.is_alive()
        assert eb.fold(wait=True) and ea.fold(wait=True)
        assert la.unfolded_bytes() == 0
        k = state["k"]
    with filemem.Store(store_path, readonly=True) as r:
        assert r.get(NS, k) is None, f"{k} was deleted, reads back {r.get(NS, k)!r}"
