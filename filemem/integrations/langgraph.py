"""LangGraph's long-term memory store over filemem (layer L7, public API only).

``FileMemStore`` is a ``langgraph.store.base.BaseStore``: pass it to
``graph.compile(store=...)`` (or to LangMem's tools) and every process that
opens the same directory shares the memories, with filemem's guarantees
(atomic writes, no torn reads, cross-process locks).

The invariant: what ``batch`` returns is what LangGraph's ``InMemoryStore``
returns for the same operations, except for the deliberate differences listed
in docs/integrations.md (namespaces with no items are not listed; ordering
where LangGraph leaves it undefined is (namespace, key); one vector per item;
range filters on non-numbers do not match instead of raising). The
differential test in tests/integrations/test_langgraph_differential.py holds
it to that.

The adapter's rooms: this module (the store object, ``batch``, writes,
``update``, TTL sweeping), ``_langgraph_reads`` (get, search,
list_namespaces, refresh on read), ``_langgraph_names`` (how an item is held
on disk: escaped key and namespace, the envelope) and ``_langgraph_filter``
(LangGraph's filter semantics).

Example::

    from filemem.integrations.langgraph import FileMemStore

    with FileMemStore("./memories") as store:
        store.put(("users", "42"), "prefs", {"theme": "dark"})
        assert store.get(("users", "42"), "prefs").value == {"theme": "dark"}
        store.update(("users", "42"), "visits", lambda v: {"n": (v or {"n": 0})["n"] + 1})
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

import filemem

try:
    from langchain_core.embeddings import Embeddings
    from langgraph.store.base import (
        NOT_PROVIDED,
        BaseStore,
        GetOp,
        IndexConfig,
        InvalidNamespaceError,
        Item,
        ListNamespacesOp,
        NotProvided,
        Op,
        PutOp,
        Result,
        SearchOp,
        TTLConfig,
        ensure_embeddings,
        get_text_at_path,
        tokenize_path,
        validate_op_namespace,
    )
    from langgraph.store.base.embed import EmbeddingsLambda
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('filemem.integrations.langgraph needs LangGraph: pip install "filemem[langgraph]"') from exc

from ._langgraph_filter import compile_filter
from ._langgraph_names import _SECONDS_PER_MINUTE, _TEXT, _TTL, _VALUE, _is_item, _ns_in, escape_key, unescape_key
from ._langgraph_reads import LangGraphReads

__all__ = ["FileMemStore", "escape_key", "unescape_key"]

#: Namespaces whose labels passed LangGraph's checks, remembered per instance.
_VALID_NS_MAX: Final = 4096


class FileMemStore(LangGraphReads, BaseStore):
    """A LangGraph ``BaseStore`` whose items live in a filemem store directory.

    Args:
        path_or_store: a store directory (opened, and closed by :meth:`close`),
            or an open :class:`filemem.Store` (left open; with ``index``, open
            it with :meth:`store_options`, which gives it the embed function).
        index: LangGraph's ``IndexConfig`` (``dims``, ``embed``, ``fields``):
            semantic search through filemem's shared vector index. Without
            it, ``query`` is ignored and scores are None, as in LangGraph.
        ttl: LangGraph's ``TTLConfig`` (``default_ttl`` minutes,
            ``refresh_on_read``, ``sweep_interval_minutes``).

    Example::

        from langgraph.graph import StateGraph
        store = FileMemStore("./memories", ttl={"default_ttl": 60 * 24})
        graph = StateGraph(State).add_node(...).compile(store=store)
    """

    supports_ttl: bool = True

    def __init__(
        self,
        path_or_store: str | os.PathLike[str] | filemem.Store,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
    ) -> None:
        self.index_config: IndexConfig | None = None
        self.embeddings: Embeddings | None = None
        self._fields: list[tuple[str, str | list[str]]] = []
        if index:
            self.index_config = index.copy()
            self.embeddings = ensure_embeddings(index.get("embed"))
            if isinstance(self.embeddings, EmbeddingsLambda) and not hasattr(self.embeddings, "func"):
                raise filemem.InvalidValueError(
                    "index['embed'] is an async-only function; filemem indexes in worker threads and needs a "
                    "sync one (an Embeddings object, or a plain function)"
                )
            self._fields = [(p, tokenize_path(p) if p != "$" else p) for p in (index.get("fields") or ["$"])]
        self.ttl_config: TTLConfig | None = ttl
        self._owned = not isinstance(path_or_store, filemem.Store)
        if isinstance(path_or_store, filemem.Store):
            self._store = path_or_store
        else:
            self._store = filemem.Store(path_or_store, **(self.store_options(index) if index else {}))
        self._valid_ns: set[tuple[str, ...]] = set()
        self._sweeper: concurrent.futures.Future[None] | None = None
        self._sweep_stop = threading.Event()
        if ttl and ttl.get("sweep_interval_minutes"):
            self.start_ttl_sweeper()

    # ------------------------------------------------------------------ plumbing

    @property
    def store(self) -> filemem.Store:
        """The filemem store underneath (for ``update``, ``check``, ``subscribe`` ...)."""
        return self._store

    @staticmethod
    def store_options(index: IndexConfig) -> dict[str, Any]:
        """The ``filemem.Store`` arguments that give ``index`` its vectors: for opening the Store yourself.

        ``FileMemStore(path, index=index)`` opens its Store with these; to
        choose other Store options (durability, cache), open it with them too:

        >>> opts = FileMemStore.store_options(index)  # doctest: +SKIP
        >>> store = FileMemStore(filemem.Store(path, durability="flush", **opts), index=index)  # doctest: +SKIP

        A Store opened without them has no vectors for this index: a query
        then fails with ``InvalidQueryError`` (the store has no embed function).
        """
        embeddings = ensure_embeddings(index.get("embed"))

        def embed(text: str) -> list[float]:
            # filemem joins the strings of the "text" field with spaces; an
            # item whose index paths give one text (always so with the
            # default "$") is embedded exactly as InMemoryStore embeds it.
            return list(embeddings.embed_documents([text])[0])

        return {"index_fields": [_TEXT], "embed": embed, "embed_id": FileMemStore._embed_id(index)}

    @staticmethod
    def _embed_id(index: IndexConfig) -> str:
        embed = index.get("embed")
        name = embed if isinstance(embed, str) else getattr(embed, "__qualname__", type(embed).__qualname__)
        module = "" if isinstance(embed, str) else getattr(embed, "__module__", type(embed).__module__)
        # The model's own name where the embedder carries one (LangChain's
        # OpenAI, Cohere, HuggingFace classes do): two models of one class and
        # size must never share vectors in the index.
        model = getattr(embed, "model", None) or getattr(embed, "model_name", None)
        fields = ",".join(index.get("fields") or ["$"])
        return f"langgraph:{module}.{name}:{model or ''}:{index.get('dims')}:{fields}"

    def close(self) -> None:
        """Stop the TTL sweeper; close the filemem store if this object opened it. Idempotent."""
        self.stop_ttl_sweeper()
        if self._owned:
            with contextlib.suppress(filemem.StoreClosedError):
                self._store.close()

    def __enter__(self) -> FileMemStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileMemStore({self._store.path!r}, index={bool(self.index_config)}, ttl={self.ttl_config!r})"

    # ------------------------------------------------------------------ batch

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` as ``InMemoryStore`` does: reads first, then the puts (last one per key wins), atomically."""
        ops = list(ops)
        self._validate(ops)
        queries = self._queries(ops)
        vectors = {q: list(self.embeddings.embed_query(q)) for q in queries} if self.embeddings else {}
        return self._run(ops, vectors)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """The async ``batch``: queries are embedded with the async API, the store work runs in a worker thread."""
        ops = list(ops)
        self._validate(ops)
        queries = self._queries(ops)
        vectors: dict[str, list[float]] = {}
        if self.embeddings and queries:
            got = await asyncio.gather(*(self.embeddings.aembed_query(q) for q in queries))
            vectors = {q: list(v) for q, v in zip(queries, got, strict=True)}
        # One thread hop per batch: the lock waits, fsyncs and reads never run on the loop.
        return await asyncio.to_thread(self._run, ops, vectors)

    def get(self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None = None) -> Item | None:
        """LangGraph's ``get``, without the batch machinery for one read (same checks, same result)."""
        namespace = tuple(namespace)
        op = GetOp(namespace, str(key), self._refresh_default() if refresh_ttl is None else refresh_ttl)
        if namespace not in self._valid_ns:  # labels are checked once per namespace, not per call
            validate_op_namespace(op)
            if len(self._valid_ns) > _VALID_NS_MAX:
                self._valid_ns.clear()
            self._valid_ns.add(namespace)
        return self._get(op)

    def _refresh_default(self) -> bool:
        return True if self.ttl_config is None else bool(self.ttl_config.get("refresh_on_read", True))

    def _validate(self, ops: list[Op]) -> None:
        # Everything is checked before anything is read or written.
        for op in ops:
            if not isinstance(op, (GetOp, PutOp, SearchOp, ListNamespacesOp)):
                raise filemem.InvalidValueError(f"unknown operation type: {type(op).__name__}")
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                if not op.namespace:
                    raise InvalidNamespaceError("Namespace cannot be empty.")
                if op.value is not None and not isinstance(op.value, Mapping):
                    raise filemem.InvalidValueError(f"a put's value must be a mapping or None, not {op.value!r}")
            elif isinstance(op, SearchOp):
                compile_filter(op.filter)
                for name, n in (("limit", op.limit), ("offset", op.offset)):
                    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                        raise filemem.InvalidQueryError(f"{name} must be a non-negative int, not {n!r}")
            elif isinstance(op, ListNamespacesOp):
                for cond in op.match_conditions or ():
                    if cond.match_type not in ("prefix", "suffix"):
                        raise filemem.InvalidQueryError(f"unsupported match type: {cond.match_type!r}")

    def _queries(self, ops: list[Op]) -> list[str]:
        if not self.embeddings:
            return []
        return list(dict.fromkeys(op.query for op in ops if isinstance(op, SearchOp) and op.query))

    def _run(self, ops: list[Op], vectors: dict[str, list[float]]) -> list[Result]:
        results: list[Result] = []
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if isinstance(op, GetOp):
                results.append(self._get(op))
            elif isinstance(op, SearchOp):
                results.append(self._search(op, vectors.get(op.query) if op.query else None))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                assert isinstance(op, PutOp)
                puts.pop((op.namespace, op.key), None)  # the last put of a key wins, in its place
                puts[(op.namespace, op.key)] = op
                results.append(None)
        if puts:
            self._apply_puts(list(puts.values()))
        return results

    # ------------------------------------------------------------------ writes

    def _envelope(
        self, value: Mapping[str, Any], index: Literal[False] | list[str] | None, ttl: float | None
    ) -> dict[str, Any]:
        env: dict[str, Any] = {_VALUE: dict(value)}
        if self.embeddings is not None and index is not False:
            paths = self._fields if index is None else [(p, tokenize_path(p)) for p in index]
            texts = [t for _, tokens in paths for t in get_text_at_path(env[_VALUE], tokens)]
            if texts:
                env[_TEXT] = texts
        if ttl is not None:
            env[_TTL] = ttl
        return env

    def _apply_puts(self, puts: list[PutOp]) -> None:
        def seconds(op: PutOp) -> float | None:
            return None if op.ttl is None else op.ttl * _SECONDS_PER_MINUTE

        if len(puts) == 1:  # the common case: one write, no batch record
            op = puts[0]
            if op.value is None:
                self._store.delete(_ns_in(op.namespace), escape_key(op.key))
            else:
                self._store.put(
                    _ns_in(op.namespace),
                    escape_key(op.key),
                    self._envelope(op.value, op.index, op.ttl),
                    ttl=seconds(op),
                )
            return
        # Envelopes first: a value that cannot be stored fails before the batch starts.
        staged = [(op, None if op.value is None else self._envelope(op.value, op.index, op.ttl)) for op in puts]
        with self._store.batch() as b:
            for op, env in staged:
                if env is None:
                    b.delete(_ns_in(op.namespace), escape_key(op.key))
                else:
                    b.put(_ns_in(op.namespace), escape_key(op.key), env, ttl=seconds(op))

    def update(
        self,
        namespace: tuple[str, ...],
        key: str,
        fn: Callable[[dict[str, Any] | None], Mapping[str, Any]],
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> dict[str, Any]:
        """Atomically replace the item's value with ``fn(current value or None)``; return the new value.

        LangGraph's API has no compare-and-set, so ``get`` then ``put`` from two
        processes can lose an update. This runs ``fn`` under filemem's
        exclusive cross-process lock (``filemem.Store.update``): N processes
        each adding 1 M times end at exactly N*M. ``fn`` may run more than
        once (keep it free of side effects). ``ttl`` in minutes restarts the
        item's clock; without one (and no ``default_ttl``) it keeps its TTL.

        >>> store.update(("stats",), "runs", lambda v: {"n": (v or {"n": 0})["n"] + 1})  # doctest: +SKIP
        {'n': 1}
        """
        minutes = self._ttl_minutes(ttl)
        validate_op_namespace(GetOp(namespace, key))
        if not namespace:
            raise InvalidNamespaceError("Namespace cannot be empty.")

        def step(env: Any) -> dict[str, Any]:
            current = env[_VALUE] if _is_item(env) else None
            new = fn(current)
            if not isinstance(new, Mapping):
                raise filemem.InvalidValueError(f"update's fn must return a mapping, not {type(new).__name__}")
            # Without a ttl the item keeps its own (filemem keeps the expiry; the envelope keeps the minutes).
            kept = env.get(_TTL) if minutes is None and _is_item(env) else minutes
            return self._envelope(new, None, kept)

        env = self._store.update(
            _ns_in(tuple(namespace)),
            escape_key(key),
            step,
            ttl=None if minutes is None else minutes * _SECONDS_PER_MINUTE,
        )
        value: dict[str, Any] = env[_VALUE]
        return value

    async def aupdate(
        self,
        namespace: tuple[str, ...],
        key: str,
        fn: Callable[[dict[str, Any] | None], Mapping[str, Any]],
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> dict[str, Any]:
        """The async :meth:`update` (runs in a worker thread)."""
        return await asyncio.to_thread(self.update, namespace, key, fn, ttl=ttl)

    def _ttl_minutes(self, ttl: float | NotProvided | None) -> float | None:
        if isinstance(ttl, NotProvided):
            return self.ttl_config.get("default_ttl") if self.ttl_config else None
        return ttl

    # ------------------------------------------------------------------ TTL sweeping

    def sweep_ttl(self) -> int:
        """Delete expired items from disk now; return how many were dropped.

        Expired items are never returned whether or not they were swept
        (filemem hides them at once); sweeping frees their space.
        """
        return int(self._store.compact().get("expired_dropped", 0))

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> concurrent.futures.Future[None]:
        """Sweep every ``sweep_interval_minutes`` (default: ``ttl_config``'s) in a daemon thread until closed."""
        if self._sweeper is not None and not self._sweeper.done():
            return self._sweeper
        interval = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._sweep_stop.clear()

        def loop() -> None:
            try:
                while not self._sweep_stop.wait(interval * _SECONDS_PER_MINUTE):
                    with contextlib.suppress(filemem.LockTimeout):  # busy now: the next round sweeps
                        self.sweep_ttl()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

        threading.Thread(target=loop, name="filemem-langgraph-ttl", daemon=True).start()
        self._sweeper = future
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; True if it has stopped (or never ran)."""
        if self._sweeper is None:
            return True
        self._sweep_stop.set()
        try:
            self._sweeper.exception(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return False
        self._sweeper = None
        return True
