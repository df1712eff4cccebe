"""Episodic memory: what an agent did, how it went. One record per episode, ids that sort by time.

Layout: ``(*namespace, <UTC hour>)`` holds the episodes recorded in that hour,
keyed by :func:`~filemem.memory._common.new_id`. Hour buckets make
``recent(n)`` read only the newest buckets, and ``stream()`` hold one bucket
in memory at a time, however many episodes there are.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._errors import InvalidValueError
from .._types import NamespaceLike
from ._common import Snippet, check_items, check_positive_int, check_text, id_time, namespace, new_id
from ._core import Face, async_op, items_plan, list_plan, run_async, sync_op
from ._search import Hit, matches
from ._steps import Call, Plan, SearchCall

if TYPE_CHECKING:
    from .._async import AsyncStore
    from .._store import Store

__all__ = ["AsyncEpisodic", "Episode", "Episodic"]

_BUCKET_FMT: Final = "%Y-%m-%dT%H"
_BUCKET_LEN: Final = 13


@dataclass(frozen=True, slots=True)
class Episode:
    """One recorded episode (``score`` is set by search)."""

    id: str
    task: str
    actions: list[Any]
    outcome: Any
    success: bool
    tags: list[str]
    metadata: dict[str, Any]
    at: float
    score: float = 0.0

    @classmethod
    def of(cls, value: dict[str, Any], score: float = 0.0) -> Episode:
        return cls(
            value["id"],
            value["task"],
            list(value.get("actions") or []),
            value.get("outcome"),
            bool(value.get("success")),
            list(value.get("tags") or []),
            dict(value.get("metadata") or {}),
            float(value.get("at") or 0.0),
            score,
        )

    def text(self) -> str:
        """A one-line rendering for a prompt."""
        ok = "succeeded" if self.success else "failed"
        return f"{self.task} -> {self.outcome} ({ok})"


def bucket_of(key: str) -> str:
    """The hour bucket (``2026-11-28T14``, UTC) an episode id belongs to."""
    t = id_time(key)
    return time.strftime(_BUCKET_FMT, time.gmtime(t if t is not None else time.time()))


class EpisodicCore:
    """The plans behind :class:`Episodic` and :class:`AsyncEpisodic` (no I/O here)."""

    def __init__(self, ns: NamespaceLike = ("memory", "episodes")) -> None:
        self.ns = namespace(ns)

    def buckets(self, namespaces: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
        """The hour buckets among ``namespaces``, oldest first."""
        depth = len(self.ns) + 1
        return sorted(
            n for n in namespaces if len(n) == depth and n[: depth - 1] == self.ns and len(n[-1]) == _BUCKET_LEN
        )

    def record(
        self,
        task: str,
        actions: Sequence[Any],
        outcome: Any,
        success: bool,
        tags: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> Plan[str]:
        """Record an episode; return its id (ids sort by time across processes).

        >>> ep_id = episodes.record("log in", ["open /login", "submit"], "dashboard shown", True)  # doctest: +SKIP
        """
        check_text("task", task)
        acts = check_items("actions", actions)
        if not isinstance(success, bool):
            raise InvalidValueError(f"success must be a bool, not {success!r}")
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise InvalidValueError("tags must be a sequence of strings")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidValueError("metadata must be a dict or None")
        key = new_id()
        value = {
            "id": key,
            "task": task,
            "actions": acts,
            "outcome": outcome,
            "success": success,
            "tags": list(tags),
            "metadata": metadata or {},
            "at": id_time(key),
        }
        # if_version=0: an id is never reused, so never overwrite (a clash would be a bug, not a merge).
        yield Call("put", ((*self.ns, bucket_of(key)), key, value), {"if_version": 0})
        return key

    def get(self, episode_id: str) -> Plan[Episode | None]:
        """The episode with this id, or None."""
        if not isinstance(episode_id, str):
            raise InvalidValueError(f"episode_id must be a str, not {episode_id!r}")
        value = yield Call("get", ((*self.ns, bucket_of(episode_id)), episode_id))
        return None if value is None else Episode.of(value)

    def recent(self, n: int = 10) -> Plan[list[Episode]]:
        """The ``n`` newest episodes, newest first; reads only the newest hour buckets."""
        check_positive_int("n", n)
        out: list[Episode] = []
        for ns in reversed(self.buckets((yield Call("list_namespaces", (self.ns,))))):
            # Keys only (no value copies), then read just the newest few.
            keys = yield Call("keys", (ns,))
            for key in reversed(keys):
                value = yield Call("get", (ns, key))
                if value is not None:  # deleted since the listing
                    out.append(Episode.of(value))
                    if len(out) == n:
                        return out
        return out

    def search(
        self,
        query: str | None = None,
        *,
        filter: dict[str, Any] | None = None,
        success: bool | None = None,
        k: int = 10,
    ) -> Plan[list[Episode]]:
        """Episodes matching ``query`` (BM25 over task, actions, outcome, tags) and ``filter``, best first.

        ``filter`` uses the store's syntax (``{"metadata.worker": 3}``,
        ``{"at": {"$gte": t0}}``); ``success`` is a shortcut for ``{"success": ...}``.
        """
        check_positive_int("k", k)
        flt = dict(filter or {})
        if success is not None:
            flt["success"] = success
        if not query:
            # A filter alone: newest first, reading hour buckets from the newest until k match.
            out: list[Episode] = []
            for ns in reversed(self.buckets((yield Call("list_namespaces", (self.ns,))))):
                items = yield Call("items", (ns,))
                for item in sorted(items, key=lambda it: it.key, reverse=True):
                    if matches(item.value, flt):
                        out.append(Episode.of(item.value, 1.0))
                        if len(out) == k:
                            return out
            return out
        hits: list[Hit] = yield SearchCall(self.ns, query, flt or None, k, 0)
        return [Episode.of(h.value, h.score) for h in hits]

    def context(self, query: str, k: int = 5) -> Plan[list[Snippet]]:
        """Snippets for :func:`~filemem.memory.recall_context`."""
        found = yield from self.search(query, k=k)
        return [Snippet("episodes", e.text(), e.score, f"{'/'.join(self.ns)}/{e.id}", e) for e in found]


class Episodic(Face[EpisodicCore]):
    """Episodic memory over a :class:`filemem.Store`: record what happened, recall recent or similar episodes.

    Safe for many processes at once: every episode is its own record (a put
    that never overwrites), with an id that sorts by time.

    Example::

        store = filemem.Store("./memories")
        episodes = Episodic(store, namespace=("team", "episodes"))
        episodes.record("log in", ["open /login", "submit"], "dashboard shown", True, tags=["auth"])
        for ep in episodes.recent(5):
            print(ep.task, ep.success)
    """

    def __init__(self, store: Store, namespace: NamespaceLike = ("memory", "episodes")) -> None:
        self._store = store
        self._core = EpisodicCore(namespace)
        self.name = "episodes"

    record = sync_op(EpisodicCore.record)
    get = sync_op(EpisodicCore.get)
    recent = sync_op(EpisodicCore.recent)
    search = sync_op(EpisodicCore.search)
    context = sync_op(EpisodicCore.context)

    def stream(self, *, ordered: bool = True, batch_size: int = 100) -> Iterator[Episode]:
        """Every episode, in bounded memory.

        ``ordered=True``: oldest first, holding one hour bucket at a time.
        ``ordered=False``: hour by hour but unordered within an hour, holding
        one shard at a time (``Store.scan``), however big an hour gets.
        """
        for ns in self._core.buckets(self._store.list_namespaces(self._core.ns)):
            if ordered or not callable(getattr(self._store, "scan", None)):
                for item in self._store.items(ns):
                    yield Episode.of(item.value)
            else:
                for chunk in self._store.scan(ns, batch_size):
                    for item in chunk:
                        yield Episode.of(item.value)

    def __len__(self) -> int:
        return sum(len(self._store.keys(ns)) for ns in self._core.buckets(self._store.list_namespaces(self._core.ns)))


class AsyncEpisodic(Face[EpisodicCore]):
    """The async twin of :class:`Episodic` over an ``AsyncStore`` (same names; await them).

    Example::

        episodes = AsyncEpisodic(astore)
        await episodes.record("log in", ["submit"], "ok", True)
        async for ep in episodes.stream():
            ...
    """

    def __init__(self, store: AsyncStore, namespace: NamespaceLike = ("memory", "episodes")) -> None:
        self._store = store
        self._core = EpisodicCore(namespace)
        self.name = "episodes"

    record = async_op(EpisodicCore.record)
    get = async_op(EpisodicCore.get)
    recent = async_op(EpisodicCore.recent)
    search = async_op(EpisodicCore.search)
    context = async_op(EpisodicCore.context)

    async def stream(self, *, ordered: bool = True, batch_size: int = 100) -> AsyncIterator[Episode]:
        """Every episode, in bounded memory (``ordered`` as for :meth:`Episodic.stream`)."""
        spaces = await run_async(self._store, list_plan(self._core.ns))
        for ns in self._core.buckets(spaces):
            if ordered or not callable(getattr(self._store, "scan", None)):
                for item in await run_async(self._store, items_plan(ns)):
                    yield Episode.of(item.value)
            else:
                async for chunk in self._store.scan(ns, batch_size):
                    for item in chunk:
                        yield Episode.of(item.value)
