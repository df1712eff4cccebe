"""Store features beyond single-key reads and writes: search and scan, sessions, the collector (layer L5).

``Store`` inherits these facets; they live here to keep ``_store`` about the
data API. Each facet reaches the store only through the attributes declared
at its top, which ``Store`` sets in its constructor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from ._backends import StoreBackend
from ._collector import Collector, CollectorConfig, DeadLetter, list_dead_letters, recover_journals, replay_dead_letters
from ._engine import Engine
from ._errors import FileMemError, InvalidValueError, ReadOnlyError
from ._feed import Change, Subscription
from ._search import Searcher, SearchHit
from ._sessions import Session, SessionHub, SessionInfo, StoreLike, normalize_shared, validate_id
from ._types import Item, NamespaceLike

__all__ = ["CollectorFacet", "SearchScanFacet", "SessionsFacet"]

#: Guards the making of a store's session hub (rare: once per store object).
_HUB_LOCK = threading.Lock()


class SearchScanFacet:
    """Reading a namespace whole: ranked search (issue 6) and streaming scan (issue 4)."""

    _engine: Engine
    _searcher: Searcher
    _backend: StoreBackend

    if TYPE_CHECKING:

        def _ns(self, namespace: NamespaceLike) -> tuple[str, ...]: ...

    def search(
        self,
        namespace_prefix: NamespaceLike | None,
        query: str | None = None,
        filter: Mapping[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        *,
        vector: Sequence[float] | str | None = None,
    ) -> list[SearchHit]:
        """Records under ``namespace_prefix`` that match, best first, as ``SearchHit(item, score)``.

        ``namespace_prefix`` matches whole segments (as ``list_namespaces``;
        ``None`` or ``()``: the whole store). ``filter`` keeps records whose
        value fields match: ``{"lang": "en", "meta.score": {"$gte": 0.5},
        "tag": {"$in": ["a", "b"]}}`` (``$eq $ne $gt $gte $lt $lte $in``;
        dotted paths reach nested dicts). ``query`` ranks by BM25 over the
        text fields (every string, or the store's ``index_fields``); only
        records holding a query term are hits. ``vector`` (a vector, or a
        text the store's ``embed`` turns into one) ranks by cosine
        similarity; with both, ranks fuse (reciprocal rank fusion). With
        neither, every record passing the filter is a hit, score 1.0, in
        (namespace, key) order. ``offset``/``limit`` page the ranking.

        Reads go through a per-namespace index under ``<store>/index`` that
        any process reuses; a stale index entry is detected by shard
        identity and rebuilt, never served. Bad arguments raise
        ``InvalidQueryError`` before anything is read.

        >>> hits = store.search(("agent-1",), query="login timeout", filter={"ok": False}, limit=3)  # doctest: +SKIP
        >>> [(h.item.key, round(h.score, 2)) for h in hits]  # doctest: +SKIP
        [('ep-42', 1.87), ('ep-7', 0.52)]
        """
        self._backend.check_open()
        pre = self._ns(namespace_prefix) if namespace_prefix not in (None, (), "", []) else ()
        return self._backend.search(pre, query, filter, limit, offset, vector)

    def scan(self, namespace: NamespaceLike, batch_size: int = 100) -> Generator[list[Item], None, None]:
        """Every live record of a namespace, in lists of at most ``batch_size``, one shard at a time.

        Memory stays bounded however large the namespace: one shard's parse
        and one batch are alive at a time, and shards read here do not enter
        the process cache (a scan would evict every hot entry). Records come
        in shard order (by key hash), sorted by key within a shard, then
        records only the write-ahead log holds yet (format 2: no fold first);
        like ``items()`` it is not a snapshot: a record written during the
        scan may or may not be seen, but none is returned twice.

        >>> for batch in store.scan("agent-1/episodic", batch_size=500):  # doctest: +SKIP
        ...     index(batch)
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidValueError(f"batch_size must be a positive int, not {batch_size!r}")
        self._backend.check_open()
        # Validate now, not at the first next(): bad input fails at the call.
        return self._backend.scan(self._ns(namespace), batch_size)


class SessionsFacet:
    """Sessions of every process (issue 7): registry, liveness, limits, stop requests."""

    _backend: StoreBackend
    _session_hub: SessionHub | None = None

    if TYPE_CHECKING:

        def _ns(self, namespace: NamespaceLike) -> tuple[str, ...]: ...

    def _sessions(self) -> SessionHub:
        self._backend.check_open()
        hub = self._session_hub
        if hub is None:
            # One hub per store even when threads race to make it: a second
            # hub's waiters would outlive the store's close() (and on a server
            # making one is a round trip, a wide window).
            with _HUB_LOCK:
                hub = self._session_hub
                if hub is None:
                    hub = self._session_hub = self._backend.session_hub()
        return hub

    def session(
        self,
        agent: str,
        *,
        priority: int = 0,
        metadata: dict[str, Any] | None = None,
        namespace: NamespaceLike | None = None,
        shared: Iterable[NamespaceLike] | str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        on_stop: Callable[[Session], object] | None = None,
    ) -> Session:
        """Register a session that every process can see, and return it running.

        The session holds a lock on its own file while it lives: other
        processes see it alive exactly as long as this process holds it, and
        dead at once if the process dies (SIGKILL included); no heartbeats.

        ``namespace``: the session's own namespace. It confines the session's
        ``store`` facade (read-write there, read-only under each of ``shared``,
        nothing elsewhere: ``SessionPermissionError``), and a limit set with
        :meth:`limit_sessions` on it or on a prefix of it applies. Without a
        namespace the facade is unconfined. ``priority``: waiting sessions
        start by priority (higher first), then by arrival. ``wait``/``timeout``:
        when a limit is reached, wait (up to ``timeout`` seconds; None: for
        ever) or fail at once (``wait=False``); both raise
        ``SessionLimitError``. ``on_stop(session)``: called on filemem's
        session thread when another process calls :meth:`request_stop`.
        ``close()`` the session (or leave its ``with`` block) to end it;
        closing the store ends the sessions it started.

        >>> with store.session(agent="worker-3", priority=5, metadata={"task": "crawl"}) as s:  # doctest: +SKIP
        ...     s.set_status("running", progress=0.4)
        ...     s.store.put("worker-3", "page-1", {"ok": True})
        """
        ns = self._ns(namespace) if namespace is not None else None
        hub = self._sessions()
        codec = self._backend.codec
        return hub.start(
            cast(StoreLike, self),  # the Store this facet is part of
            lambda value: len(codec.encode(value)),
            agent=agent,
            priority=priority,
            metadata=metadata,
            namespace=ns,
            shared=normalize_shared(shared, self._ns),
            wait=wait,
            timeout=timeout,
            on_stop=on_stop,
        )

    def sessions(self, *, alive: bool | None = True) -> list[SessionInfo]:
        """Sessions of every process, oldest first: live ones (default), ended ones (``alive=False``), or all (None).

        Looking is also cleaning up: a session whose owner died is marked
        ``crashed`` by whoever looks next. Ended and crashed records are kept
        for an hour, then removed.

        >>> [(i.agent, i.status, i.progress) for i in store.sessions()]  # doctest: +SKIP
        [('worker-3', 'running', 0.4)]
        """
        return self._sessions().sessions(alive)

    def session_info(self, session_id: str) -> SessionInfo | None:
        """One session by id (None if unknown or long gone); a dead owner is seen and recorded as crashed."""
        return self._sessions().registry.look(validate_id(session_id))

    def request_stop(self, session_id: str) -> bool:
        """Ask a live session (of any process) to stop; False if it is not alive.

        The session sees ``stop_requested`` become True and, if it passed
        ``on_stop``, its callback runs. Stopping is up to the session.

        >>> store.request_stop(info.id)  # doctest: +SKIP
        True
        """
        return self._sessions().request_stop(session_id)

    def limit_sessions(self, max_sessions: int | None, *, namespace: NamespaceLike | None = None) -> None:
        """Allow at most ``max_sessions`` live sessions in the store, or under ``namespace``, across processes.

        Persisted in the store (``sessions/limits.json``), so every process
        enforces the same limit; None removes it. Lowering a limit does not
        stop running sessions; new ones wait until the count is under it.

        >>> store.limit_sessions(5)  # doctest: +SKIP
        >>> store.limit_sessions(2, namespace="crawlers")  # doctest: +SKIP
        """
        scope = self._ns(namespace) if namespace not in (None, (), "", []) else ()
        self._sessions().limit(scope, max_sessions)

    def session_limits(self) -> dict[tuple[str, ...], int]:
        """Every limit set with :meth:`limit_sessions`: namespace (``()``: the whole store) -> max_sessions."""
        return self._sessions().slots.limits()

    def subscribe_sessions(self, callback: Callable[[Change], object], *, max_queue: int = 1000) -> Subscription:
        """Call ``callback(change)`` when a session of any process starts, changes or ends.

        ``change.kind`` is ``"session-started"``, ``"session-changed"`` or
        ``"session-ended"`` (a crash included, seen within ``poll_interval_s``),
        ``change.keys`` is ``(session_id,)``. Read the session with
        :meth:`session_info`. ``close()`` the subscription (or the store) to stop.

        >>> sub = store.subscribe_sessions(lambda c: print(c.kind, c.keys[0]))  # doctest: +SKIP
        """
        if not callable(callback):
            raise InvalidValueError("subscribe_sessions() needs a callable")
        return self._sessions().subscribe(callback, max(1, max_queue))

    def session_changes(self, *, max_queue: int = 1000) -> Subscription:
        """An async iterator of session changes (as :meth:`subscribe_sessions`; call it inside a running loop)."""
        return self._sessions().subscribe(None, max(1, max_queue), asynchronous=True)


class CollectorFacet:
    """Fire-and-forget collectors (issue 5) and their dead letters."""

    _engine: Engine
    _backend: StoreBackend

    if TYPE_CHECKING:

        @property
        def path(self) -> str: ...

        def _ns(self, namespace: NamespaceLike) -> tuple[str, ...]: ...

    def collector(self, config: CollectorConfig | str | os.PathLike[str] | None = None, **overrides: Any) -> Collector:
        """A fire-and-forget collector: ``collect()`` queues in microseconds, a background
        writer applies in batches, a journal makes accepted records survive a crash.

        ``config``: a :class:`CollectorConfig`, or the path of a TOML file; with
        a path or None, ``FILEMEM_COLLECTOR_*`` environment variables apply
        too. ``overrides`` (e.g. ``batch_size=500``) win over both. Invalid
        settings raise InvalidValueError here. Closing the store closes its
        collectors (draining them). See docs/collector.md.

        >>> with store.collector(batch_size=500) as c:  # doctest: +SKIP
        ...     c.collect("agent-1/events", "ev-1", {"ok": True})
        ...     c.flush()
        """
        self._journaled.check_open()
        if isinstance(config, CollectorConfig):
            cfg = config.replace(**overrides) if overrides else config
        else:
            cfg = CollectorConfig.load(config, **overrides)
        collector = Collector(self._journaled, cfg, normalize=self._ns)
        collectors: list[Collector] = self.__dict__.setdefault("_collectors", [])
        # Forget closed ones (a store that makes many short-lived collectors
        # must not keep them all); remove/append one at a time, so a collector
        # added by another thread meanwhile is never lost.
        for old in [c for c in collectors if c.closed]:
            with contextlib.suppress(ValueError):
                collectors.remove(old)
        collectors.append(collector)
        return collector

    def dead_letters(self) -> list[DeadLetter]:
        """Records collectors could not apply (or dropped), from ``journals/deadletter-*.jsonl``.

        >>> for d in store.dead_letters():  # doctest: +SKIP
        ...     print(d.namespace, d.key, d.reason, d.error)
        """
        self._journaled.check_open()
        return list_dead_letters(self._journaled)

    def replay_dead_letters(self) -> dict[str, int]:
        """Put dead letters back into the store; return counts ``applied``, ``superseded``, ``failed``.

        A letter is *superseded* (skipped) when its key already holds a record
        written after the letter was collected; letters that fail again stay.

        >>> store.replay_dead_letters()  # doctest: +SKIP
        {'applied': 3, 'superseded': 0, 'failed': 0}
        """
        self._journaled.check_open()
        if self._journaled.readonly:
            raise ReadOnlyError(f"store {self.path} was opened read-only")
        return replay_dead_letters(self._journaled)

    @property
    def _journaled(self) -> Engine:
        # What collectors journal beside and apply to: the file engine, or a
        # server store's local journal directory over its transactions.
        engine: Engine = self._backend.collector_engine
        return engine

    def _recover_journals(self) -> None:
        # Replays journals of collectors that died; a failing store must not
        # make open() fail: the journals stay and check() reports them.
        try:
            recover_journals(self._journaled)
        except FileMemError as exc:
            logging.getLogger("filemem.collector").warning("journal replay deferred: %s", exc)

    def _close_collectors(self) -> None:
        for collector in self.__dict__.pop("_collectors", []):
            collector.close()
