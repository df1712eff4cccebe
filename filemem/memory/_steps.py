"""Store calls described as data: what a plan yields (see _core)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

__all__ = ["BatchCall", "Call", "Plan", "SearchCall", "Step"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One store method call: ``store.<method>(*args, **kwargs)``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchCall:
    """Writes committed all or nothing (``store.batch()``); the result is the batch's ``results``."""

    calls: tuple[Call, ...]


@dataclass(frozen=True, slots=True)
class SearchCall:
    """``store.search(prefix, query, filter, limit, offset)``; the result is a list of :class:`Hit`.

    A store without ``search`` (an older filemem) is searched by a scan with the
    same filter and BM25 semantics (:func:`filemem.memory._search.fallback_search`).
    """

    prefix: tuple[str, ...]
    query: str | None = None
    filter: dict[str, Any] | None = None
    limit: int = 10
    offset: int = 0


Step: TypeAlias = Call | BatchCall | SearchCall
Plan: TypeAlias = Generator[Step, Any, T]
