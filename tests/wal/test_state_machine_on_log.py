"""The store state machine of tests/property on v2 stores, plus folds and a second handle.

Rules added to put/update/delete/batch/reopen/snapshot: ``fold`` (the log
into the shards, any time), and ``other_handle_sees_it`` (a second handle in
this process, its own overlay and cache, must agree with the model at once).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

import filemem
from tests.property.test_state_machine import NAMESPACES, StoreMachine, keys, namespaces


class LogStoreMachine(StoreMachine):
    """The same model, on a store whose writes go through the log."""

    def _open(self) -> filemem.Store:
        store = filemem.Store(self.dir + "/s", codec=self.codec, shard_max_bytes=1024, durability="flush")
        if store._engine.log is None:
            store._engine.upgrade()
        assert store._engine.log is not None
        return store

    @rule()
    def fold(self) -> None:
        self.store._engine.settle()
        assert self.store._engine.log is not None and self.store._engine.log.overlay.count == 0

    @rule(ns=namespaces, key=keys)
    def other_handle_sees_it(self, ns: tuple[str, ...], key: str) -> None:
        with filemem.Store(self.dir + "/s", durability="flush") as other:
            assert other.get(ns, key, "<missing>") == self.model.get((ns, key), "<missing>")
            assert other.keys(ns) == sorted(k for (n, k) in self.model if n == ns)

    @rule(ns=st.sampled_from(NAMESPACES))
    def items_versions_are_current(self, ns: tuple[str, ...]) -> None:
        for it in self.store.items(ns):
            assert it.value == self.model[(ns, it.key)]
            got: Any = self.versions.get((ns, it.key))
            assert got is None or it.version >= got


class MsgpackLogStoreMachine(LogStoreMachine):
    codec = "msgpack"


_SETTINGS = settings(
    max_examples=30, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestJsonLogStore = LogStoreMachine.TestCase
TestJsonLogStore.settings = _SETTINGS
TestMsgpackLogStore = MsgpackLogStoreMachine.TestCase
TestMsgpackLogStore.settings = _SETTINGS
