"""One core, two faces: store calls described as data, run by a sync or an async driver.

Every operation of a memory kind is written once, as a *plan*: a generator
that yields the store calls it needs (:class:`Call`, :class:`BatchCall`,
:class:`SearchCall`) and receives their results. :func:`run_sync` runs a plan
against a :class:`filemem.Store`; :func:`run_async` runs the same plan against
an ``AsyncStore`` (awaiting each call). The faces (``Episodic`` /
``AsyncEpisodic`` ...) are one line per method (:func:`sync_op`,
:func:`async_op`), so the sync and async behaviour cannot drift apart.

A plan may catch a store error: the driver throws it back into the generator
at the ``yield`` that asked for the call.

A store whose backend refuses ranked search (``UnsupportedFeatureError``
naming ``search``: the PostgreSQL backend before its keyword index, issue 16)
is searched by :func:`~filemem.memory._search.fallback_search`, a scan with the
same filter and BM25 semantics, so every memory kind runs on every backend;
the store's own search takes over as soon as the backend has it.

Example::

    def bump(ns: tuple[str, ...]) -> Plan[int]:
        n = yield Call("update", (ns, "runs", lambda v: (v or 0) + 1))
        return int(n)

    run_sync(store, bump(("stats",)))          # in a thread
    await run_async(astore, bump(("stats",)))  # in a coroutine
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from .._errors import UnsupportedFeatureError
from ._search import Hit, fallback_search
from ._steps import BatchCall, Call, Plan, SearchCall

__all__ = [
    "BatchCall",
    "Call",
    "Face",
    "Plan",
    "SearchCall",
    "async_op",
    "items_plan",
    "list_plan",
    "run_async",
    "run_sync",
    "sync_op",
]

T = TypeVar("T")
C = TypeVar("C")
P = ParamSpec("P")


def _hits(raw: Any) -> list[Hit]:
    return [Hit.of(h) for h in raw]


def _search_refused(exc: UnsupportedFeatureError) -> bool:
    """The backend has no ranked search (yet): scan instead (module docstring)."""
    return (exc.feature or "").startswith("search")


def run_sync(store: Any, plan: Plan[T]) -> T:
    """Run ``plan`` against a synchronous store; return what the plan returns."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            step = plan.send(result) if error is None else plan.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        result, error = None, None
        try:
            if isinstance(step, Call):
                result = getattr(store, step.method)(*step.args, **step.kwargs)
            elif isinstance(step, BatchCall):
                with store.batch() as b:
                    for c in step.calls:
                        getattr(b, c.method)(*c.args, **c.kwargs)
                result = list(b.results)
            elif callable(getattr(store, "search", None)):
                try:
                    result = _hits(
                        store.search(
                            step.prefix, query=step.query, filter=step.filter, limit=step.limit, offset=step.offset
                        )
                    )
                except UnsupportedFeatureError as exc:
                    if not _search_refused(exc):
                        raise
                    result = run_sync(
                        store, fallback_search(step.prefix, step.query, step.filter, step.limit, step.offset)
                    )
            else:
                result = run_sync(store, fallback_search(step.prefix, step.query, step.filter, step.limit, step.offset))
        except Exception as exc:  # handed to the plan, which re-raises what it does not handle
            error = exc


async def _maybe_await(x: Any) -> Any:
    return await x if inspect.isawaitable(x) else x


async def run_async(astore: Any, plan: Plan[T]) -> T:
    """Run ``plan`` against an ``AsyncStore`` (each call awaited); return what the plan returns."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            step = plan.send(result) if error is None else plan.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        result, error = None, None
        try:
            if isinstance(step, Call):
                result = await _maybe_await(getattr(astore, step.method)(*step.args, **step.kwargs))
            elif isinstance(step, BatchCall):
                result = await _async_batch(astore, step)
            elif callable(getattr(astore, "search", None)) or callable(getattr(_sync_of(astore), "search", None)):
                try:
                    result = _hits(await _search_async(astore, step))
                except UnsupportedFeatureError as exc:
                    if not _search_refused(exc):
                        raise
                    result = await run_async(
                        astore, fallback_search(step.prefix, step.query, step.filter, step.limit, step.offset)
                    )
            else:
                result = await run_async(
                    astore, fallback_search(step.prefix, step.query, step.filter, step.limit, step.offset)
                )
        except Exception as exc:  # handed to the plan, which re-raises what it does not handle
            error = exc


def _sync_of(astore: Any) -> Any:
    return getattr(astore, "sync", None)


async def _search_async(astore: Any, step: SearchCall) -> Any:
    if not callable(getattr(astore, "search", None)):
        # An AsyncStore without its own search: run the sync store's in a thread.
        return await asyncio.to_thread(
            _sync_of(astore).search,
            step.prefix,
            query=step.query,
            filter=step.filter,
            limit=step.limit,
            offset=step.offset,
        )
    return await _maybe_await(
        astore.search(step.prefix, query=step.query, filter=step.filter, limit=step.limit, offset=step.offset)
    )


async def _async_batch(astore: Any, step: BatchCall) -> list[Any]:
    batch = astore.batch()
    if inspect.isawaitable(batch):
        batch = await batch
    if hasattr(batch, "__aenter__"):
        async with batch as b:
            for c in step.calls:
                await _maybe_await(getattr(b, c.method)(*c.args, **c.kwargs))
    else:
        with batch as b:
            for c in step.calls:
                await _maybe_await(getattr(b, c.method)(*c.args, **c.kwargs))
    return list(b.results)


class Face(Generic[C]):
    """Base of every face: the store it runs on and the core that plans its calls."""

    _store: Any
    _core: C


def _face_signature(plan: Callable[..., Any], method: Callable[..., Any], asynchronous: bool) -> None:
    """Copy the plan's name and docs to the face method, with the plan's result as its return type."""
    functools.update_wrapper(method, plan)
    del method.__wrapped__  # type: ignore[attr-defined]  # the signature below is the truth, not the plan's
    sig = inspect.signature(plan)
    ret = sig.return_annotation
    if isinstance(ret, str) and ret.startswith("Plan[") and ret.endswith("]"):
        ret = ret[5:-1]
    if asynchronous:
        ret = f"Awaitable[{ret}]"
    method.__signature__ = sig.replace(return_annotation=ret)  # type: ignore[attr-defined]


def sync_op(plan: Callable[Concatenate[C, P], Plan[T]]) -> Callable[Concatenate[Face[C], P], T]:
    """Make a sync face method from a core plan method."""

    def method(self: Face[C], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(self._store, plan(self._core, *args, **kwargs))

    _face_signature(plan, method, False)
    return method


def async_op(plan: Callable[Concatenate[C, P], Plan[T]]) -> Callable[Concatenate[Face[C], P], Coroutine[Any, Any, T]]:
    """Make an async face method (a coroutine function) from a core plan method."""

    async def method(self: Face[C], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await run_async(self._store, plan(self._core, *args, **kwargs))

    _face_signature(plan, method, True)
    return method


def list_plan(prefix: tuple[str, ...]) -> Plan[list[tuple[str, ...]]]:
    """A plan: the namespaces under ``prefix``."""
    got: list[tuple[str, ...]] = yield Call("list_namespaces", (prefix,))
    return got


def items_plan(ns: tuple[str, ...]) -> Plan[list[Any]]:
    """A plan: the live items of ``ns``."""
    got: list[Any] = yield Call("items", (ns,))
    return got
