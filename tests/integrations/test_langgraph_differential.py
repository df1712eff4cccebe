"""FileMemStore against LangGraph's InMemoryStore (the reference: LangGraph has no store conformance suite).

A hypothesis state machine drives both with the same operations (put, delete,
get, search with filters, pages and queries, list_namespaces with prefix and
suffix conditions, wildcards and max_depth, mixed batches, puts with a TTL,
reopening the filemem store) and compares every result. The deliberate
differences (docs/integrations.md) are excluded here explicitly, each where
it applies:

* D1 order: without a query InMemoryStore returns items in insertion order,
  FileMemStore in (namespace, key) order. Compared as sets; the page sizes
  must agree and FileMemStore's page must be sorted.
* D2 listing: InMemoryStore lists every namespace it ever touched (even by a
  get, or emptied by deletes); FileMemStore lists namespaces that hold items.
  Compared against the reference's listing of its non-empty namespaces.
* D3 range filters on values that are not numbers: InMemoryStore raises
  from float(); FileMemStore does not match. Compared only where the
  reference does not raise.
* D4 TTL: InMemoryStore has no TTL (put(ttl=...) raises NotImplementedError).
  A long TTL here must change nothing that is observable.
* D5 vectors: filemem keeps one float32 vector per item (of its index
  texts joined), InMemoryStore one float64 vector per text. Here each item
  has one text, so scores agree to 1e-5; ties may come in either order.
* D6 stale vectors: InMemoryStore keeps an item's old vectors when it is
  put again with index=False, and ranks it by its previous text; FileMemStore
  drops them. The reference is made to forget them (a delete first).
* D7 InMemoryStore's batch raises ValueError ("Number of embeddings does
  not match number of indices") when two of its puts have the same index
  text; the reference runs a batch's puts one at a time.
* created_at: InMemoryStore resets it on every put; FileMemStore keeps the
  first. Both must be timezone-aware with created_at <= updated_at.

The machines run on a directory (the ``TestCase`` classes) and on the
PostgreSQL backend, a fresh schema per run (``test_differential_on_postgres``,
issue 16): the same rules, the same comparisons.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("langgraph.store.memory")

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from langgraph.store.base import GetOp, Item, ListNamespacesOp, MatchCondition, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

import filemem
from filemem.integrations.langgraph import FileMemStore
from tests.integrations._langgraph_common import DIMS, toy_embed

NAMESPACES = [("a",), ("a", "b"), ("a", "b", "c"), ("a", "c"), ("x", "b"), ("u/v", "Ü"), ("*",), ("50%", "a")]
LABELS = ["a", "b", "c", "x", "*", "u/v", "Ü", "zz"]
KEYS = ["k", "", ".", "..", "k/1", "k.x", "%", "%25", "a\x00b", "x.y", "ü", "K"]
FIELDS = ["n", "s", "a.b", "tags", "nested"]

namespaces = st.sampled_from(NAMESPACES)
keys = st.sampled_from(KEYS)
scalars = st.one_of(
    st.integers(-5, 12),
    st.sampled_from(["10", "abc", "ab", ""]),
    st.booleans(),
    st.none(),
    st.sampled_from([2.5, -1.0]),
)
field_values = st.one_of(
    scalars,
    st.lists(st.integers(0, 3), max_size=3),
    st.fixed_dictionaries({"c": st.integers(0, 3)}, optional={"d": st.sampled_from(["x", "y"])}),
)
values = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=4).map(
    lambda d: {**d, "text": "".join(sorted(str(v) for v in d.values()))[:30] or "empty"}
)
conditions = st.one_of(
    scalars,
    st.lists(st.integers(0, 3), max_size=3),
    st.fixed_dictionaries({"c": st.integers(0, 3)}),
    st.dictionaries(
        st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]), st.integers(-2, 10), min_size=1, max_size=2
    ),
)
filters = st.one_of(st.none(), st.dictionaries(st.sampled_from(FIELDS), conditions, max_size=2))
prefixes = st.lists(st.sampled_from(["a", "b", "c", "x", "u/v", "*"]), max_size=2).map(tuple)
patterns = st.lists(st.sampled_from(LABELS), min_size=1, max_size=3).map(tuple)
queries = st.one_of(st.none(), st.sampled_from(["aaa", "stoic", "eat it", "10", "x"]))


_RAISED = object()


def _ident(items: list[Any]) -> list[tuple[tuple[str, ...], str]]:
    return [(tuple(i.namespace), i.key) for i in items]


def _check_item(got: Item | None, want: Item | None) -> None:
    if want is None:
        assert got is None
        return
    assert got is not None
    assert (got.namespace, got.key, got.value) == (want.namespace, want.key, want.value)
    assert got.created_at.tzinfo is not None and got.updated_at.tzinfo is not None
    assert got.created_at <= got.updated_at


class Differential(RuleBasedStateMachine):
    indexed = False
    #: Where each run's store lives: None, a directory of its own; else a fresh ``postgresql://`` URL.
    location_factory: Callable[[], str] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="filemem-lg-")
        factory = type(self).location_factory
        self.location = self.dir if factory is None else factory()
        self.index = {"dims": DIMS, "embed": toy_embed, "fields": ["text"]} if self.indexed else None
        self.ours = self._open()
        self.ref = InMemoryStore(index=self.index)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- writes

    @rule(ns=namespaces, key=keys, value=values, no_index=st.booleans())
    def put(self, ns: tuple[str, ...], key: str, value: dict[str, Any], no_index: bool) -> None:
        index = False if no_index else None
        self.ours.put(ns, key, value, index=index)
        if no_index:
            self.ref.delete(ns, key)  # D6: else the reference keeps the old version's vector
        self.ref.put(ns, key, value, index=index)

    @rule(ns=namespaces, key=keys, value=values)
    def put_with_ttl(self, ns: tuple[str, ...], key: str, value: dict[str, Any]) -> None:
        # D4: a TTL far in the future; reads refresh it (a write) yet change nothing observable.
        self.ours.put(ns, key, value, ttl=60)
        with pytest.raises(NotImplementedError):
            self.ref.put(ns, key, value, ttl=60)
        self.ref.put(ns, key, value)

    @rule(ns=namespaces, key=keys)
    def delete(self, ns: tuple[str, ...], key: str) -> None:
        self.ours.delete(ns, key)
        self.ref.delete(ns, key)

    @rule()
    def reopen(self) -> None:
        self.ours.close()
        self.ours.store.close()
        self.ours = self._open()

    def _open(self) -> FileMemStore:
        # durability="flush": the machine's fsyncs are not what is compared here.
        opts = FileMemStore.store_options(self.index) if self.index else {}  # type: ignore[arg-type]
        store = filemem.Store(self.location, durability="flush", **opts)
        return FileMemStore(store, index=self.index)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- reads

    @rule(ns=namespaces, key=keys)
    def get(self, ns: tuple[str, ...], key: str) -> None:
        _check_item(self.ours.get(ns, key), self.ref.get(ns, key))

    @rule(
        prefix=prefixes,
        flt=filters,
        limit=st.integers(0, 6),
        offset=st.integers(0, 4),
        query=queries,
    )
    def search(
        self, prefix: tuple[str, ...], flt: dict[str, Any] | None, limit: int, offset: int, query: str | None
    ) -> None:
        self._compare_search(
            SearchOp(prefix, flt, limit, offset, query),
            self.ours.search(prefix, filter=flt, limit=limit, offset=offset, query=query),
        )

    def _compare_search(self, op: SearchOp, got: list[Any]) -> None:
        try:
            want = self.ref.batch([op])[0]
            every = self.ref.batch([op._replace(limit=10_000, offset=0)])[0]
        except (TypeError, ValueError):
            return  # D3: the reference raised from float(); ours returned without raising
        assert len(got) == len(want), (op, _ident(got), _ident(want))
        by_id = {(tuple(i.namespace), i.key): i for i in every}
        for item in got:
            _check_item(item, by_id.get((tuple(item.namespace), item.key)))
        if not (op.query and self.indexed):
            assert all(i.score is None for i in got)
            assert _ident(got) == sorted(_ident(got))  # D1: our order is (namespace, key)
            assert set(_ident(got)) <= set(by_id)
            if op.offset == 0 and op.limit >= len(every):
                assert set(_ident(got)) == set(by_id)
            return
        # D5: ranked by score; scores agree (float32 vs float64), ties may swap.
        got_scored = [i for i in got if i.score is not None]
        want_scored = [i for i in want if i.score is not None]
        assert len(got_scored) == len(want_scored)
        for g, w in zip(got_scored, want_scored, strict=True):
            assert g.score == pytest.approx(w.score, abs=1e-5)
        ref_scores = {(tuple(i.namespace), i.key): i.score for i in every}
        for g in got_scored:
            assert ref_scores[(tuple(g.namespace), g.key)] == pytest.approx(g.score, abs=1e-5)
        # The unscored fill (items without a vector) is a set of the reference's unscored items.
        unscored = {k for k, s in ref_scores.items() if s is None}
        assert {(tuple(i.namespace), i.key) for i in got if i.score is None} <= unscored
        assert sum(i.score is None for i in got) == sum(i.score is None for i in want)

    @rule(
        prefix=st.one_of(st.none(), patterns),
        suffix=st.one_of(st.none(), patterns),
        max_depth=st.one_of(st.none(), st.integers(1, 3)),
        limit=st.integers(1, 8),
        offset=st.integers(0, 3),
    )
    def list_namespaces(
        self,
        prefix: tuple[str, ...] | None,
        suffix: tuple[str, ...] | None,
        max_depth: int | None,
        limit: int,
        offset: int,
    ) -> None:
        got = self.ours.list_namespaces(prefix=prefix, suffix=suffix, max_depth=max_depth, limit=limit, offset=offset)
        assert got == self._ref_listing().list_namespaces(
            prefix=prefix, suffix=suffix, max_depth=max_depth, limit=limit, offset=offset
        )

    def _ref_listing(self) -> InMemoryStore:
        # D2: the reference's own listing code, over its namespaces that hold items.
        held = InMemoryStore()
        for ns, items in self.ref._data.items():
            if items:
                held._data[ns].update(items)
        return held

    @rule(
        ops=st.lists(
            st.one_of(
                st.tuples(namespaces, keys).map(lambda t: GetOp(*t)),
                st.tuples(namespaces, keys, st.one_of(st.none(), values)).map(lambda t: PutOp(*t)),
                st.tuples(prefixes, filters, st.integers(1, 5), st.integers(0, 2)).map(lambda t: SearchOp(*t)),
                st.tuples(
                    st.one_of(
                        st.none(),
                        st.tuples(
                            st.tuples(st.sampled_from(["prefix", "suffix"]), patterns).map(lambda t: MatchCondition(*t))
                        ),
                    ),
                    st.one_of(st.none(), st.integers(1, 3)),
                ).map(lambda t: ListNamespacesOp(*t)),
            ),
            max_size=6,
        )
    )
    def mixed_batch(self, ops: list[Any]) -> None:
        """Reads see the state before the batch's puts; the last put of a key wins; results in op order.

        The reference runs the same batch as its reads (each alone, so that a
        D3 raise skips only that one), then its puts one at a time: D7, its
        batch raises ValueError when two puts in it have the same index text.
        """
        want: list[Any] = []
        for op in ops:
            if isinstance(op, ListNamespacesOp):
                want.append(self._ref_listing().batch([op])[0])  # D2
            elif isinstance(op, PutOp):
                want.append(None)
            else:
                try:
                    want.append(self.ref.batch([op])[0])
                except (TypeError, ValueError):
                    want.append(_RAISED)  # D3
        for op in ops:
            if isinstance(op, PutOp):
                self.ref.batch([op])
        got = self.ours.batch(ops)
        assert len(got) == len(ops)
        for op, mine, ref in zip(ops, got, want, strict=True):
            if ref is _RAISED:
                continue
            if isinstance(op, ListNamespacesOp):
                assert mine == ref
            elif isinstance(op, GetOp):
                _check_item(mine, ref)
            elif isinstance(op, PutOp):
                assert mine is None
            else:
                assert len(mine) == len(ref)
                assert _ident(mine) == sorted(_ident(mine))

    # ---------------------------------------------------------------- always

    @invariant()
    def same_items(self) -> None:
        want = {(tuple(i.namespace), i.key): i.value for i in self.ref.search((), limit=10_000)}
        got = {(tuple(i.namespace), i.key): i.value for i in self.ours.search((), limit=10_000)}
        assert got == want

    def teardown(self) -> None:
        try:
            assert self.ours.store.check() == []
        finally:
            self.ours.store.close()
            shutil.rmtree(self.dir, ignore_errors=True)


class IndexedDifferential(Differential):
    indexed = True


_SETTINGS = settings(max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck))
TestDifferential = Differential.TestCase
TestDifferential.settings = _SETTINGS
TestIndexedDifferential = IndexedDifferential.TestCase
TestIndexedDifferential.settings = _SETTINGS


@pytest.mark.postgres
@pytest.mark.parametrize("machine", [Differential, IndexedDifferential], ids=["plain", "indexed"])
def test_differential_on_postgres(pg_server_url: str, machine: type[Differential]) -> None:
    """The same machines on the PostgreSQL backend, a fresh schema per run (issue 16)."""
    import psycopg

    schemas: list[str] = []

    def fresh_schema() -> str:
        schema = f"lg_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        schemas.append(schema)
        sep = "&" if "?" in pg_server_url else "?"
        return f"{pg_server_url}{sep}options={quote(f'-csearch_path={schema}')}"

    on_pg = type(f"Pg{machine.__name__}", (machine,), {"location_factory": staticmethod(fresh_schema)})
    try:
        run_state_machine_as_test(on_pg, settings=_SETTINGS)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
