"""Listings on format 2 while a fold moves records from the log into the shards.

A listing merges two reads: the shard files and the log's unfolded records.
A fold (another handle's close, the fold thread) landing between them must
not hide a record: it was in the log when the listing looked there, or it is
in the shards when the listing reads them. Seen once in the state machine as
a record missing from ``keys()``; these tests put the fold exactly there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
import filemem.admin
from filemem._engine import _reads

pytestmark = pytest.mark.store_format(2)

NS = ("a",)


def _fold_by_another_handle(path: str) -> None:
    # A second handle's close folds (the state machine's other_handle_sees_it).
    with filemem.Store(path, codec="msgpack", durability="flush") as other:
        assert other.keys(NS) == ["k20", "k22", "k27"]


def _store(path: str) -> filemem.Store:
    store = filemem.Store(path, codec="msgpack", shard_max_bytes=1024, durability="flush")
    store.put(NS, "k22", 1)
    store.put(NS, "k27", 2)
    filemem.admin.fold(store)
    assert store.keys(NS) == ["k22", "k27"]  # the shards are in this handle's cache now
    store.put(NS, "k20", 3)  # in the log only
    return store


def _fold_after_shards(store: filemem.Store, path: str) -> None:
    """Make the next shard walk of ``store`` end with another handle's fold."""
    engine = store._engine
    walk = engine.iter_shards

    def racing(namespace: tuple[str, ...]) -> Iterator[Any]:
        shards = list(walk(namespace))
        _fold_by_another_handle(path)
        yield from shards

    engine.iter_shards = racing  # type: ignore[method-assign]


def test_keys_sees_a_record_folded_between_its_two_reads(tmp_path: Any) -> None:
    path = str(tmp_path / "s")
    store = _store(path)
    try:
        _fold_after_shards(store, path)
        assert store.keys(NS) == ["k20", "k22", "k27"]
    finally:
        store.close()


def test_items_sees_a_record_folded_between_its_two_reads(tmp_path: Any) -> None:
    path = str(tmp_path / "s")
    store = _store(path)
    try:
        _fold_after_shards(store, path)
        assert {it.key: it.value for it in store.items(NS)} == {"k20": 3, "k22": 1, "k27": 2}
    finally:
        store.close()


def test_list_namespaces_sees_a_namespace_folded_between_its_two_reads(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "s")
    store = filemem.Store(path, codec="msgpack", durability="flush")
    try:
        store.put(NS, "k22", 1)
        filemem.admin.fold(store)
        store.put(("fresh",), "k20", 3)  # a namespace only the log knows
        assert store.list_namespaces() == [("a",), ("fresh",)]
        real_scandir = os.scandir
        folded: list[bool] = []

        def scandir_then_fold(directory: Any) -> Any:
            if folded or not str(directory).startswith(path):
                return real_scandir(directory)
            entries = list(real_scandir(directory))
            if not folded:
                folded.append(True)
                with filemem.Store(path, codec="msgpack", durability="flush"):
                    pass  # its close folds ("fresh",) into a directory already walked past
            return iter(entries)

        monkeypatch.setattr(_reads.os, "scandir", scandir_then_fold)
        assert store.list_namespaces() == [("a",), ("fresh",)]
        assert folded
    finally:
        store.close()
