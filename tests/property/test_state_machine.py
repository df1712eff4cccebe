"""A hypothesis state machine: put/get/delete/update/batch/reopen/fold against a dict, both codecs.

Runs on format 2 (the log, with ``fold`` at any moment and a
second handle that must agree at once), and on format 1 (``TestJsonStoreFormat1``).

A small ``shard_max_bytes`` makes shards split often, so the machine also
exercises split resolution, batches across shards and reopen from a cold cache.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import filemem
import filemem.admin

NAMESPACES = [("a",), ("a", "b"), ("tenant", "acme"), ("tenant", "acme-corp"), ("x.y",), ("nul",)]
keys = st.sampled_from([f"k{i}" for i in range(40)] + ["ü", "a b", "..x"])
namespaces = st.sampled_from(NAMESPACES)
values = st.one_of(
    st.integers(-1000, 1000),
    st.text(max_size=60),
    st.lists(st.integers(0, 9), max_size=5),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(-(2**53), 2**53), max_size=3),
    st.none(),
)


class StoreMachine(RuleBasedStateMachine):
    codec = "json"
    #: Where each run's store lives: None for a fresh directory; the postgres
    #: half sets a function that makes a fresh schema and returns its URL.
    location_factory: Callable[[], str] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="filemem-sm-")
        factory = type(self).location_factory
        self.location = self.dir + "/s" if factory is None else factory()
        self.model: dict[tuple[tuple[str, ...], str], Any] = {}
        self.versions: dict[tuple[tuple[str, ...], str], int] = {}
        #: created_at of each live key, as first seen: every later write keeps it (issue 13: a plain put
        #: carries it over without reading the old record, resolved by the fold or on read).
        self.created: dict[tuple[tuple[str, ...], str], float] = {}
        self.store = self._open()
        #: A second long-lived handle that writes too: after it does, ``store`` is behind the
        #: log's end and its plain puts are logged blind (carried created_at, the chain rule).
        self.peer: filemem.Store | None = None

    def _open(self) -> filemem.Store:
        return filemem.Store(self.location, codec=self.codec, shard_max_bytes=1024, durability="flush")

    @initialize()
    def start(self) -> None:
        pass

    def _wrote(self, ns: tuple[str, ...], key: str, *, new: bool, via: filemem.Store | None = None) -> None:
        """After a write that left ``key`` live: a new record is created at its write; others keep the time."""
        item = (via or self.store).get_item(ns, key)
        assert item is not None
        if new:
            assert item.created_at == item.updated_at
            self.created[(ns, key)] = item.created_at
        else:
            assert item.created_at == self.created[(ns, key)], (item, self.created[(ns, key)])

    def _check_created(self, items: Any) -> None:
        for it in items:
            assert it.created_at == self.created[(it.namespace, it.key)], (it, self.created[(it.namespace, it.key)])

    @rule(ns=namespaces, key=keys, value=values)
    def put(self, ns: tuple[str, ...], key: str, value: Any) -> None:
        v = self.store.put(ns, key, value)
        assert v > self.versions.get((ns, key), 0)
        new = (ns, key) not in self.model
        self.model[(ns, key)] = value
        self.versions[(ns, key)] = v
        self._wrote(ns, key, new=new)

    @rule(ns=namespaces, key=keys, value=values, twice=st.booleans())
    def peer_puts(self, ns: tuple[str, ...], key: str, value: Any, twice: bool) -> None:
        """The second handle writes (read back through it, so ``store`` stays behind for its next write)."""
        if self.peer is None:
            self.peer = self._open()
        if twice:
            with self.peer.batch() as b:
                b.put(ns, key, "first")
                b.put(ns, key, value)
            v = b.results[1]
        else:
            v = self.peer.put(ns, key, value)
        assert v > self.versions.get((ns, key), 0)
        new = (ns, key) not in self.model
        self.model[(ns, key)] = value
        self.versions[(ns, key)] = v
        self._wrote(ns, key, new=new, via=self.peer)

    @rule(data=st.data(), value=values, twice=st.booleans())
    def both_write_one_key(self, data: st.DataObject, value: Any, twice: bool) -> None:
        """The peer writes a key (often a live one), then ``store``, behind it, puts it blind: the chain rule."""
        pick = st.sampled_from(sorted(self.model, key=repr)) if self.model else st.tuples(namespaces, keys)
        ns, key = data.draw(pick)
        self.peer_puts(ns, key, "peer", twice)
        self.put(ns, key, value)

    @rule(ns=namespaces, key=keys, value=values, stale=st.booleans())
    def put_if_version(self, ns: tuple[str, ...], key: str, value: Any, stale: bool) -> None:
        current = self.versions.get((ns, key), 0) if (ns, key) in self.model else 0
        expected = current + 1000 if stale else current
        if stale:
            with pytest.raises(filemem.ConflictError):
                self.store.put(ns, key, value, if_version=expected)
            return
        self.versions[(ns, key)] = self.store.put(ns, key, value, if_version=expected)
        new = (ns, key) not in self.model
        self.model[(ns, key)] = value
        self._wrote(ns, key, new=new)

    @rule(ns=namespaces, key=keys)
    def get(self, ns: tuple[str, ...], key: str) -> None:
        assert self.store.get(ns, key, "<missing>") == self.model.get((ns, key), "<missing>")
        item = self.store.get_item(ns, key)
        if item is not None:
            self._check_created([item])

    @rule(ns=namespaces, key=keys)
    def delete(self, ns: tuple[str, ...], key: str) -> None:
        assert self.store.delete(ns, key) == ((ns, key) in self.model)
        self.model.pop((ns, key), None)
        self.created.pop((ns, key), None)

    @rule(ns=namespaces, key=keys, n=st.integers(1, 5))
    def update(self, ns: tuple[str, ...], key: str, n: int) -> None:
        def fn(v: Any) -> Any:
            return (v if isinstance(v, int) else 0) + n

        new = self.store.update(ns, key, fn)
        old = self.model.get((ns, key))
        assert new == (old if isinstance(old, int) else 0) + n
        fresh = (ns, key) not in self.model
        self.model[(ns, key)] = new
        item = self.store.get_item(ns, key)
        assert item is not None
        self.versions[(ns, key)] = item.version
        self._wrote(ns, key, new=fresh)

    @rule(ops=st.lists(st.tuples(st.booleans(), namespaces, keys, values), min_size=1, max_size=12))
    def batch(self, ops: list[tuple[bool, tuple[str, ...], str, Any]]) -> None:
        with self.store.batch() as b:
            for is_put, ns, key, value in ops:
                if is_put:
                    b.put(ns, key, value)
                else:
                    b.delete(ns, key)
        renewed: set[tuple[tuple[str, ...], str]] = set()  # keys the batch (re)created
        for is_put, ns, key, value in ops:
            if is_put:
                if (ns, key) not in self.model:
                    renewed.add((ns, key))
                self.model[(ns, key)] = value
            else:
                self.model.pop((ns, key), None)
                self.created.pop((ns, key), None)
        for _, ns, key, _ in ops:
            item = self.store.get_item(ns, key)
            if item is not None:
                self.versions[(ns, key)] = item.version
        for ident in {(ns, key) for _, ns, key, _ in ops}:
            if ident in self.model:
                self._wrote(*ident, new=ident in renewed)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()

    @rule()
    def fold(self) -> None:
        """Format 2: the log into the shards, at any moment (nothing to do on format 1; no log on a server)."""
        if self.store.backend != "file":
            return
        filemem.admin.fold(self.store)
        log = self.store._engine.log
        assert log is None or log.overlay.count == 0

    @rule(ns=namespaces, key=keys)
    def other_handle_sees_it(self, ns: tuple[str, ...], key: str) -> None:
        """A second handle in this process (its own overlay and cache) agrees with the model at once."""
        with filemem.Store(self.location, codec=self.codec, durability="flush") as other:
            assert other.get(ns, key, "<missing>") == self.model.get((ns, key), "<missing>")
            item = other.get_item(ns, key)
            if item is not None:
                self._check_created([item])
            assert other.keys(ns) == sorted(k for (n, k) in self.model if n == ns)

    @rule(ns=st.sampled_from(NAMESPACES))
    def items_versions_are_current(self, ns: tuple[str, ...]) -> None:
        items = self.store.items(ns)
        self._check_created(items)
        for it in items:
            assert it.value == self.model[(ns, it.key)]
            got: Any = self.versions.get((ns, it.key))
            assert got is None or it.version >= got

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def snapshot_matches(self) -> None:
        with self.store.snapshot() as snap:
            for ns in NAMESPACES:
                self._check_created(snap.items(ns))
                got = {it.key: it.value for it in snap.items(ns)}
                assert got == {k: v for (n, k), v in self.model.items() if n == ns}

    @invariant()
    def listing_matches(self) -> None:
        for ns in NAMESPACES:
            assert self.store.keys(ns) == sorted(k for (n, k) in self.model if n == ns)

    def teardown(self) -> None:
        try:
            assert self.store.check() == []
        finally:
            if self.peer is not None:
                self.peer.close()
            self.store.close()
            shutil.rmtree(self.dir, ignore_errors=True)


class MsgpackStoreMachine(StoreMachine):
    codec = "msgpack"


_SETTINGS = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestJsonStore = pytest.mark.store_format(2)(StoreMachine.TestCase)
TestJsonStore.settings = _SETTINGS
TestMsgpackStore = pytest.mark.store_format(2)(MsgpackStoreMachine.TestCase)
TestMsgpackStore.settings = _SETTINGS


class Format1StoreMachine(StoreMachine):
    """The same model on a format-1 store (every write rewrites its shard; ``fold`` does nothing)."""


TestJsonStoreFormat1 = pytest.mark.store_format(1)(Format1StoreMachine.TestCase)
TestJsonStoreFormat1.settings = _SETTINGS


@pytest.mark.postgres
@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_state_machine_on_postgres(pg_server_url: str, codec: str) -> None:
    """The same machine on the PostgreSQL backend, a fresh schema per run (issue 16)."""
    import psycopg

    schemas: list[str] = []

    def fresh_schema() -> str:
        schema = f"sm_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        schemas.append(schema)
        sep = "&" if "?" in pg_server_url else "?"
        return f"{pg_server_url}{sep}options={quote(f'-csearch_path={schema}')}"

    machine = type("PgMachine", (StoreMachine,), {"codec": codec, "location_factory": staticmethod(fresh_schema)})
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=15, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
            ),
        )
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
