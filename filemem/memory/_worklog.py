"""Worklogs: append-only logs per session, with summaries made in the background.

Layout: ``(*namespace, session_id, "entries")`` holds one record per entry
(time-sortable ids, puts that never overwrite); ``(*namespace, session_id)``
holds ``meta`` (the exact entry count, bumped in the same batch as each
append) and ``summary``.

Summaries never block writers: the summariser reads the entries lock-free
(``items`` takes no lock), computes outside any lock, and only then stores the
result with one short atomic update that keeps whichever summary covers more
of the log (two processes summarising at once cannot roll it back; on a tie
the newer text wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import InvalidValueError, StoreClosedError
from .._types import NamespaceLike
from ._common import Snippet, check_positive_int, id_time, namespace, new_id
from ._core import Face, async_op, run_async, run_sync, sync_op
from ._steps import BatchCall, Call, Plan, SearchCall
from ._summarise import extractive_summary

if TYPE_CHECKING:
    from .._async import AsyncStore
    from .._store import Store

__all__ = ["AsyncWorklog", "LogEntry", "Summary", "Worklog"]

Summarizer = Callable[[list[str]], str]
AsyncSummarizer = Callable[[list[str]], str | Awaitable[str]]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One worklog entry: its id (sorts by time), when, and what was appended."""

    id: str
    at: float
    entry: Any

    def text(self) -> str:
        return self.entry if isinstance(self.entry, str) else json.dumps(self.entry, sort_keys=True, default=str)


@dataclass(frozen=True, slots=True)
class Summary:
    """A stored summary: its text, how many entries it covers, up to which entry id, when, by which summariser."""

    session_id: str
    text: str
    entries: int
    upto: str
    at: float
    summarizer: str


def _incr(v: Any) -> dict[str, Any]:
    cur = dict(v) if v else {"count": 0}
    cur["count"] = int(cur["count"]) + 1
    return cur


def _keep_newer(new: dict[str, Any]) -> Callable[[Any], dict[str, Any]]:
    def fn(current: Any) -> dict[str, Any]:
        if current and (current["upto"], current["entries"]) > (new["upto"], new["entries"]):
            return dict(current)
        return new

    return fn


class WorklogCore:
    """The plans behind :class:`Worklog` and :class:`AsyncWorklog`."""

    def __init__(self, ns: NamespaceLike = ("memory", "worklog"), summarize_every: int | None = 20) -> None:
        self.ns = namespace(ns)
        if summarize_every is not None:
            check_positive_int("summarize_every", summarize_every)
        self.every = summarize_every

    def session(self, sid: str) -> tuple[str, ...]:
        if not isinstance(sid, str) or not sid:
            raise InvalidValueError(f"session_id must be a non-empty str, not {sid!r}")
        return namespace((*self.ns, sid))

    def append_plan(self, session_id: str, entry: Any) -> Plan[tuple[str, int, int]]:
        """Append; return (entry id, entries now, entries the stored summary covers)."""
        sess = self.session(session_id)
        key = new_id()
        value = {"id": key, "at": id_time(key), "entry": entry}
        results = yield BatchCall(
            (
                Call("put", ((*sess, "entries"), key, value), {"if_version": 0}),
                Call("update", (sess, "meta", _incr)),
            )
        )
        try:
            summary = yield Call("get", (sess, "summary"))
            covered = int(summary["entries"]) if summary else 0
        except Exception:  # the entry is committed: never raise now (a retry would duplicate it)
            covered = 0
        return key, int(results[1]["count"]), covered

    def append(self, session_id: str, entry: Any) -> Plan[str]:
        """Append ``entry`` (a str or any JSON-able value) to the session's log; return its id."""
        key, _, _ = yield from self.append_plan(session_id, entry)
        return key

    def entries(self, session_id: str) -> Plan[list[LogEntry]]:
        """Every entry of the session, oldest first."""
        items = yield Call("items", ((*self.session(session_id), "entries"),))
        return [LogEntry(it.key, float(it.value["at"]), it.value["entry"]) for it in items]

    def count(self, session_id: str) -> Plan[int]:
        """How many entries the session has (exact)."""
        meta = yield Call("get", (self.session(session_id), "meta"))
        return int(meta["count"]) if meta else 0

    def summary(self, session_id: str) -> Plan[Summary | None]:
        """The stored summary (None before the first one); it may lag the log, see ``Summary.entries``."""
        v = yield Call("get", (self.session(session_id), "summary"))
        return None if v is None else Summary(session_id, v["text"], v["entries"], v["upto"], v["at"], v["summarizer"])

    def sessions(self) -> Plan[list[str]]:
        """Ids of every session with a log."""
        found = yield Call("list_namespaces", (self.ns,))
        depth = len(self.ns) + 1
        return sorted({n[depth - 1] for n in found if len(n) > depth - 1 and n[: depth - 1] == self.ns})

    def store_summary(self, session_id: str, entries: list[LogEntry], text: str, name: str) -> Plan[Summary]:
        """Store a summary computed from ``entries`` unless a newer one is there already; return the stored one."""
        new = {
            "text": text,
            "entries": len(entries),
            "upto": entries[-1].id if entries else "",
            "at": time.time(),
            "summarizer": name,
        }
        v = yield Call("update", (self.session(session_id), "summary", _keep_newer(new)))
        return Summary(session_id, v["text"], v["entries"], v["upto"], v["at"], v["summarizer"])

    def context(self, query: str, k: int = 5) -> Plan[list[Snippet]]:
        """Snippets for :func:`~filemem.memory.recall_context`: matching entries and summaries of any session."""
        check_positive_int("k", k)
        hits = yield SearchCall(self.ns, query, None, k * 2, 0)
        out = []
        depth = len(self.ns)
        for h in hits:
            if not isinstance(h.value, dict) or len(h.namespace) <= depth:
                continue
            sid = h.namespace[depth]
            ref = f"{'/'.join(h.namespace)}/{h.key}"
            if h.namespace[-1] == "entries" and len(h.namespace) == depth + 2 and "entry" in h.value:
                e = LogEntry(h.key, float(h.value.get("at") or 0.0), h.value.get("entry"))
                out.append(Snippet("worklog", f"[{sid}] {e.text()}", h.score, ref, e))
            elif h.key == "summary" and len(h.namespace) == depth + 1 and isinstance(h.value.get("text"), str):
                out.append(Snippet("worklog", f"[{sid} summary] {h.value['text']}", h.score, ref))
        return out[:k]


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class Worklog(Face[WorklogCore]):
    """Per-session append-only logs; summaries made in a background thread, stored, refreshed as logs grow.

    ``summarizer(texts) -> str`` replaces the default extractive one (e.g. an
    LLM call). With ``summarize_every=N`` an append that finds the stored
    summary N or more entries behind starts a background refresh (at most one
    per session at a time in this process). ``close()`` waits for running
    summaries; the store stays open.

    Example::

        log = Worklog(store)
        log.append("run-7", "opened the login page")
        log.append("run-7", {"step": "submit", "ok": False})
        summary = log.summarize("run-7").result()    # a Future: the caller is not blocked
        print(summary.text, summary.entries)
        log.close()
    """

    def __init__(
        self,
        store: Store,
        namespace: NamespaceLike = ("memory", "worklog"),
        *,
        summarizer: Summarizer | None = None,
        summarize_every: int | None = 20,
    ) -> None:
        self._store = store
        self._core = WorklogCore(namespace, summarize_every)
        self._summarizer: Summarizer = summarizer or extractive_summary
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._running: dict[str, Future[Summary]] = {}
        self._closed = False
        self.name = "worklog"

    entries = sync_op(WorklogCore.entries)
    count = sync_op(WorklogCore.count)
    summary = sync_op(WorklogCore.summary)
    sessions = sync_op(WorklogCore.sessions)
    context = sync_op(WorklogCore.context)

    def append(self, session_id: str, entry: Any) -> str:
        """Append ``entry`` (a str or JSON-able value); return its id. May start a background summary.

        Raises ``StoreClosedError`` before writing anything when the worklog is
        closed; once the entry is committed it never raises.
        """
        if self._closed:
            raise StoreClosedError("worklog closed")
        key, count, covered = run_sync(self._store, self._core.append_plan(session_id, entry))
        if self._core.every is not None and count - covered >= self._core.every:
            # Closed meanwhile (or the pool refused): skip the refresh; the entry is committed.
            with contextlib.suppress(StoreClosedError, RuntimeError):
                self._start(session_id, only_if_idle=True)
        return key

    def summarize(self, session_id: str) -> Future[Summary]:
        """Summarise the session in the background; the Future gives the stored summary.

        Writers are never blocked: the log is read without locks and the
        summariser runs outside any lock.
        """
        self._core.session(session_id)
        fut = self._start(session_id, only_if_idle=False)
        assert fut is not None
        return fut

    def _start(self, session_id: str, *, only_if_idle: bool) -> Future[Summary] | None:
        with self._lock:
            if self._closed:
                raise StoreClosedError("worklog closed")
            running = self._running.get(session_id)
            if running is not None and not running.done():
                if only_if_idle:
                    return None
                if not running.running():
                    # Queued and not started: it reads the log when it starts, after the
                    # caller's appends, so callers share it and the queue cannot grow.
                    return running
            # One is running: the single worker runs this one after it, so it covers the caller's appends.
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filemem-summary")
            fut = self._pool.submit(self._summarize_now, session_id)
            self._running[session_id] = fut
            return fut

    def _summarize_now(self, session_id: str) -> Summary:
        entries = run_sync(self._store, self._core.entries(session_id))
        text = self._summarizer([e.text() for e in entries])
        if not isinstance(text, str):
            raise InvalidValueError(f"summarizer returned {type(text).__name__}, not str")
        return run_sync(self._store, self._core.store_summary(session_id, entries, text, _name(self._summarizer)))

    def close(self) -> None:
        """Wait for running summaries and stop the background thread (idempotent)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> Worklog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncWorklog(Face[WorklogCore]):
    """The async twin of :class:`Worklog`: ``summarize`` returns an ``asyncio.Task``; ``await close()``.

    ``summarizer`` may be a coroutine function (an async LLM client).
    """

    def __init__(
        self,
        store: AsyncStore,
        namespace: NamespaceLike = ("memory", "worklog"),
        *,
        summarizer: AsyncSummarizer | None = None,
        summarize_every: int | None = 20,
    ) -> None:
        self._store = store
        self._core = WorklogCore(namespace, summarize_every)
        self._summarizer: AsyncSummarizer = summarizer or extractive_summary
        self._running: dict[str, asyncio.Task[Summary]] = {}
        self._queued: dict[str, asyncio.Task[Summary]] = {}
        self._closed = False
        self.name = "worklog"

    entries = async_op(WorklogCore.entries)
    count = async_op(WorklogCore.count)
    summary = async_op(WorklogCore.summary)
    sessions = async_op(WorklogCore.sessions)
    context = async_op(WorklogCore.context)

    async def append(self, session_id: str, entry: Any) -> str:
        """Append ``entry``; return its id. May start a background summary task.

        Raises ``StoreClosedError`` before writing anything when the worklog is
        closed; once the entry is committed it never raises.
        """
        if self._closed:
            raise StoreClosedError("worklog closed")
        key, count, covered = await run_async(self._store, self._core.append_plan(session_id, entry))
        if self._core.every is not None and count - covered >= self._core.every and not self._closed:
            running = self._running.get(session_id)
            if running is None or running.done():
                self._start(session_id)
        return key

    def summarize(self, session_id: str) -> asyncio.Task[Summary]:
        """Summarise in a background task (call inside a running loop); await it for the stored summary."""
        self._core.session(session_id)
        return self._start(session_id)

    def _start(self, session_id: str) -> asyncio.Task[Summary]:
        if self._closed:
            raise StoreClosedError("worklog closed")
        queued = self._queued.get(session_id)
        if queued is not None and not queued.done():
            return queued  # not started yet: it will read the log after the caller's appends
        task = asyncio.get_running_loop().create_task(self._after(self._running.get(session_id), session_id))
        self._running[session_id] = task
        self._queued[session_id] = task
        return task

    async def _after(self, prev: asyncio.Task[Summary] | None, session_id: str) -> Summary:
        # One summary per session at a time, in order: a later one covers at least as much of the log.
        if prev is not None and not prev.done():
            await asyncio.wait([prev])
        if self._queued.get(session_id) is asyncio.current_task():
            del self._queued[session_id]
        return await self._summarize_now(session_id)

    async def _summarize_now(self, session_id: str) -> Summary:
        entries = await run_async(self._store, self._core.entries(session_id))
        texts = [e.text() for e in entries]
        if inspect.iscoroutinefunction(self._summarizer):
            text = await self._summarizer(texts)
        elif self._summarizer is extractive_summary:
            text = extractive_summary(texts)  # pure and quick: no thread needed
        else:  # a blocking user hook must not stall the event loop
            text = await asyncio.to_thread(self._summarizer, texts)
        if inspect.isawaitable(text):
            text = await text
        if not isinstance(text, str):
            raise InvalidValueError(f"summarizer returned {type(text).__name__}, not str")
        return await run_async(
            self._store, self._core.store_summary(session_id, entries, text, _name(self._summarizer))
        )

    async def close(self) -> None:
        """Wait for running summaries (idempotent)."""
        self._closed = True
        tasks = [t for t in self._running.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> AsyncWorklog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
