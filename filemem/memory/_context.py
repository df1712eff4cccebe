"""Context assembly: ask several memories at once, merge, de-duplicate, rank, fit a budget.

A *source* is anything with ``context(query, k)`` returning snippets (every
kind has one), or a :class:`Source` wrapping your own function. Sources are
asked concurrently (threads in :func:`recall_context`, tasks in
:func:`arecall_context`) under one deadline; a source that raises or is still
running at the deadline is named in ``Context.failed`` and the others' snippets
are used. A source left running in a thread finishes (or not) on its own; its
result is ignored.

Ranking: each source's scores are divided by that source's best (BM25 scales
differ between namespaces), multiplied by the source's ``weight``; ties go to
the source listed first. Duplicates (same normalised text, or word sets that
overlap by ``dedupe_jaccard`` or more) keep the best-ranked copy. Snippets are
then taken best first while they fit ``budget_chars`` (a snippet that does
not fit is skipped, and a smaller one after it may still fit).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .._errors import InvalidValueError
from .._types import NamespaceLike
from ._common import Snippet, check_number, check_positive_int, namespace
from ._core import run_async, run_sync
from ._steps import Plan, SearchCall
from ._text import jaccard, normalise_text, text_of, tokens

__all__ = ["Context", "Source", "arecall_context", "recall_context"]

_DEDUPE_JACCARD: Final = 0.9
_CANCEL_GRACE_S: Final = 0.05


@dataclass(frozen=True)
class Source:
    """A named source of snippets: ``fetch(query, k)`` returns snippets, strings, or ``(text, score)`` pairs.

    ``fetch`` may be a plain or a coroutine function. ``weight`` scales its
    normalised scores.

    Example::

        docs = Source("docs", lambda q, k: [(d.text, d.score) for d in my_index.search(q, k)], weight=0.5)
    """

    name: str
    fetch: Callable[[str, int], Any]
    weight: float = 1.0

    @classmethod
    def namespace(cls, store: Any, prefix: NamespaceLike, *, name: str | None = None, weight: float = 1.0) -> Source:
        """A source over raw records: ``store.search(prefix, query)`` on a ``Store`` or an ``AsyncStore``.

        Each hit becomes a snippet of every string in its value.

        Example::

            notes = Source.namespace(store, ("team", "notes"), weight=0.5)
            recall_context("deploy", [facts, notes])
        """
        ns = namespace(prefix)
        label = name or "/".join(ns)

        def plan(query: str, k: int) -> Plan[list[Snippet]]:
            hits = yield SearchCall(ns, query, None, k, 0)
            return [Snippet(label, text_of(h.value), h.score, f"{'/'.join(h.namespace)}/{h.key}") for h in hits]

        if inspect.iscoroutinefunction(getattr(store, "get", None)):

            async def afetch(query: str, k: int) -> list[Snippet]:
                return await run_async(store, plan(query, k))

            return cls(label, afetch, weight)
        return cls(label, lambda query, k: run_sync(store, plan(query, k)), weight)


@dataclass(frozen=True)
class Context:
    """What :func:`recall_context` assembled.

    ``text``: the snippets as lines (``[source] text``), at most ``budget_chars``;
    ``snippets``: those used, best first; ``failed``: source name -> why it gave
    nothing (an exception, or a timeout); ``dropped``: snippets that did not fit;
    ``duplicates``: snippets removed as duplicates.
    """

    text: str
    snippets: list[Snippet]
    failed: dict[str, str] = field(default_factory=dict)
    dropped: int = 0
    duplicates: int = 0

    @property
    def ok(self) -> bool:
        """True when every source answered in time."""
        return not self.failed


def _as_source(src: Any, i: int) -> tuple[str, Callable[[str, int], Any], float]:
    if isinstance(src, Source):
        weight = _finite(f"weight of source {src.name!r}", src.weight)
        if weight < 0:
            raise InvalidValueError(f"weight of source {src.name!r} must be >= 0, not {src.weight!r}")
        return src.name, src.fetch, weight
    fetch = getattr(src, "context", None)
    if callable(fetch):
        return str(getattr(src, "name", None) or type(src).__name__), fetch, 1.0
    if isinstance(src, tuple) and len(src) == 2 and isinstance(src[0], str) and callable(src[1]):
        return src[0], src[1], 1.0
    raise InvalidValueError(f"source #{i} ({src!r}) has no context(query, k); wrap it in filemem.memory.Source")


def _named(sources: Sequence[Any]) -> list[tuple[str, Callable[[str, int], Any], float]]:
    got = [_as_source(src, i) for i, src in enumerate(sources)]
    out = []
    used: set[str] = set()
    for base, fetch, weight in got:
        name, n = base, 1
        while name in used:  # a renamed "facts#2" must not clash with one named so explicitly
            n += 1
            name = f"{base}#{n}"
        used.add(name)
        out.append((name, fetch, weight))
    return out


def _finite(what: str, value: Any) -> float:
    # NaN or infinite scores and weights would make the ranking arbitrary.
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise InvalidValueError(f"{what} must be a finite number, not {value!r}")
    return v


def _score(name: str, score: Any) -> float:
    return _finite(f"score from source {name!r}", score)  # refused: the source is reported as failed


def _snippets(name: str, raw: Any, k: int) -> list[Snippet]:
    out = []
    # Only the first k count (per_source): a source returning thousands must not make the dedupe quadratic.
    for n, x in enumerate(itertools.islice(raw or (), k)):
        if isinstance(x, Snippet):
            out.append(Snippet(name, x.text, _score(name, x.score), x.ref, x.meta))
        elif isinstance(x, str):
            out.append(Snippet(name, x, 1.0 / (n + 1)))
        elif isinstance(x, tuple) and len(x) == 2:
            out.append(Snippet(name, str(x[0]), _score(name, x[1])))
        else:
            raise InvalidValueError(
                f"source {name!r} returned {type(x).__name__}; expected Snippet, str or (text, score)"
            )
    return out


def _check(query: str, budget_chars: int, timeout_s: float, k: int) -> None:
    if not isinstance(query, str):
        raise InvalidValueError("query must be a str")
    check_positive_int("budget_chars", budget_chars)
    check_positive_int("per_source", k)
    check_number("timeout_s", timeout_s, 0.0)


def assemble(
    query: str,
    order: Sequence[str],
    weights: dict[str, float],
    results: dict[str, list[Snippet]],
    failed: dict[str, str],
    budget_chars: int,
    dedupe_jaccard: float = _DEDUPE_JACCARD,
) -> Context:
    """Rank, de-duplicate and fit (pure: the shared second half of both functions)."""
    ranked: list[tuple[float, int, int, Snippet]] = []
    for si, name in enumerate(order):
        snips = results.get(name) or []
        best = max((s.score for s in snips), default=0.0)
        for j, s in enumerate(snips):
            norm = (s.score / best) if best > 0 else 1.0 / (j + 1)
            ranked.append((norm * weights[name], si, j, s))
    ranked.sort(key=lambda t: (-t[0], t[1], t[2]))
    kept: list[tuple[Snippet, set[str]]] = []
    seen_text: set[str] = set()
    duplicates = 0
    for score, _, _, s in ranked:
        key = normalise_text(s.text)
        words = set(tokens(s.text))
        if key in seen_text or any(words and jaccard(words, w) >= dedupe_jaccard for _, w in kept):
            duplicates += 1
            continue
        seen_text.add(key)
        kept.append((Snippet(s.source, s.text, score, s.ref, s.meta), words))
    lines: list[str] = []
    used: list[Snippet] = []
    size = 0
    dropped = 0
    for s, _ in kept:
        line = f"[{s.source}] {s.text}"
        cost = len(line) + (1 if lines else 0)
        if size + cost > budget_chars:
            dropped += 1
            continue
        lines.append(line)
        used.append(s)
        size += cost
    del query  # ranking is by the sources' own relevance; the query is theirs to use
    return Context("\n".join(lines), used, dict(failed), dropped, duplicates)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def recall_context(
    query: str,
    sources: Sequence[Any],
    budget_chars: int = 4000,
    timeout_s: float = 2.0,
    *,
    per_source: int = 8,
) -> Context:
    """Gather context for ``query`` from several memories at once, within ``budget_chars`` and ``timeout_s``.

    Each source runs in its own daemon thread; the call returns by the
    deadline whatever happens, naming the sources that failed or timed out.

    Example::

        ctx = recall_context("log in to staging", [facts, episodes, skills], budget_chars=1500, timeout_s=1.0)
        prompt = ctx.text
        if ctx.failed:
            log.warning("context without %s", ", ".join(ctx.failed))
    """
    _check(query, budget_chars, timeout_s, per_source)
    named = _named(sources)
    results: dict[str, list[Snippet]] = {}
    failed: dict[str, str] = {}
    lock = threading.Lock()
    done = threading.Condition(lock)
    pending = {name for name, _, _ in named}

    def run(name: str, fetch: Callable[[str, int], Any]) -> None:
        try:
            raw = fetch(query, per_source)
            if inspect.isawaitable(raw):
                raw = asyncio.run(_await(raw))
            got, err = _snippets(name, raw, per_source), None
        except Exception as exc:  # a failing source is reported, never raised
            got, err = [], _describe(exc)
        with done:
            if name in pending:
                pending.discard(name)
                if err is None:
                    results[name] = got
                else:
                    failed[name] = err
                done.notify_all()

    deadline = time.monotonic() + timeout_s
    for name, fetch, _ in named:
        # Daemon threads: a source hung for good must not keep the interpreter alive.
        threading.Thread(target=run, args=(name, fetch), name=f"filemem-context-{name}", daemon=True).start()
    with done:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done.wait(min(left, threading.TIMEOUT_MAX))  # a huge timeout_s must not overflow the wait
        for name in sorted(pending):
            failed[name] = f"timed out after {timeout_s:g}s"
        pending.clear()
        got_results = dict(results)
        got_failed = dict(failed)
    order = [n for n, _, _ in named]
    return assemble(query, order, {n: w for n, _, w in named}, got_results, got_failed, budget_chars)


async def _await(x: Awaitable[Any]) -> Any:
    return await x


async def arecall_context(
    query: str,
    sources: Sequence[Any],
    budget_chars: int = 4000,
    timeout_s: float = 2.0,
    *,
    per_source: int = 8,
) -> Context:
    """The async :func:`recall_context`: sources are asked concurrently as tasks, under one deadline.

    A source whose ``context``/``fetch`` is a plain function (a sync kind) runs
    in a daemon thread so it cannot stall the loop; one that misses the
    deadline is cancelled (a task; one slow to unwind is left to finish on its own)
    or abandoned (a thread) and named in ``failed``.

    Example::

        ctx = await arecall_context("log in", [afacts, aepisodes], budget_chars=1500, timeout_s=1.0)
    """
    _check(query, budget_chars, timeout_s, per_source)
    named = _named(sources)
    loop = asyncio.get_running_loop()

    async def one(name: str, fetch: Callable[[str, int], Any]) -> list[Snippet]:
        if inspect.iscoroutinefunction(fetch):
            raw = await fetch(query, per_source)
        else:
            fut: asyncio.Future[Any] = loop.create_future()

            def work() -> None:
                res: Any = None
                err: Exception | None = None
                try:
                    res = fetch(query, per_source)
                    if inspect.isawaitable(res):
                        res = asyncio.run(_await(res))
                except Exception as exc:
                    err = exc
                # An abandoned source may finish after the loop has closed: nobody waits for it then.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, fut, res, err)

            threading.Thread(target=work, name=f"filemem-context-{name}", daemon=True).start()
            raw = await fut
        return _snippets(name, raw, per_source)

    tasks = {name: asyncio.ensure_future(one(name, fetch)) for name, fetch, _ in named}
    if tasks:
        await asyncio.wait(tasks.values(), timeout=timeout_s)
    results: dict[str, list[Snippet]] = {}
    failed: dict[str, str] = {}
    for name, task in tasks.items():
        if not task.done():
            task.cancel()
            failed[name] = f"timed out after {timeout_s:g}s"
        elif task.cancelled():
            failed[name] = "cancelled"
        elif task.exception() is not None:
            failed[name] = _describe(task.exception())  # type: ignore[arg-type]
        else:
            results[name] = task.result()
    pending = [t for t in tasks.values() if not t.done()]
    if pending:
        # Give the cancellations a moment to land; a source with slow cancellation cleanup is
        # abandoned (already named in failed) rather than holding the call past its deadline.
        await asyncio.wait(pending, timeout=_CANCEL_GRACE_S)
        for t in pending:
            t.add_done_callback(_consume)
    return assemble(query, [n for n, _, _ in named], {n: w for n, _, w in named}, results, failed, budget_chars)


def _consume(task: asyncio.Future[Any]) -> None:
    # An abandoned task's outcome is not wanted: retrieve it so asyncio does not log it as never retrieved.
    if not task.cancelled():
        task.exception()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # cancelled at the deadline
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
