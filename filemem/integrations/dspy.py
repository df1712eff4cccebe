"""A DSPy retriever over filemem memories (layer L7; needs ``pip install "filemem[dspy]"``).

The invariant: every face answers from the same ranking and never returns
more than ``k`` passages: ``store.search`` over a namespace prefix (BM25,
plus the store's embedder with ``vector=True``), or, given ``sources``,
:func:`filemem.recall_context` over memory kinds (merged, de-duplicated,
within a character budget and a deadline).

Three faces, for the three ways DSPy programs take a retriever:

* a module: ``FileMemRetriever(...)(query)`` returns ``dspy.Prediction(passages=[...])``,
  like ``dspy.retrievers.Embeddings``;
* ``dspy.configure(rm=retriever.rm)``: what ``dspy.Retrieve(k=...)`` calls,
  ``rm(query, k=k)`` returning items with ``long_text`` (DSPy 3.x keeps
  ``dspy.Retrieve`` and this protocol);
* ``retriever.as_tool()``: a plain ``search_memory(query) -> list[str]`` for ``dspy.ReAct``.

Example::

    import dspy
    import filemem
    from filemem.integrations.dspy import FileMemRetriever

    store = filemem.Store("./agent-store")
    retriever = FileMemRetriever(store, ("agent-1", "facts"), k=3)
    retriever("where is the staging db?").passages      # a module
    dspy.configure(rm=retriever.rm)                      # for dspy.Retrieve
    agent = dspy.ReAct("question -> answer", tools=[retriever.as_tool()])
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import filemem

try:
    import dspy
    from dspy.dsp.utils import dotdict
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('filemem.integrations.dspy needs DSPy: pip install "filemem[dspy]"') from exc

__all__ = ["FileMemRM", "FileMemRetriever", "Passage"]


@dataclass(frozen=True)
class Passage:
    """One retrieved passage: its text, its score, and where it is stored (``namespace/key``)."""

    text: str
    score: float
    ref: str


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise filemem.InvalidValueError(f"k must be a positive int, not {k!r}")
    return k


class FileMemRetriever(dspy.Module):  # type: ignore[misc]  # dspy ships no type information
    """Retrieve passages from a filemem store for DSPy programs.

    ``store_or_path``: an open :class:`filemem.Store` (left open) or a
    directory (opened here; ``close()`` closes it). ``namespace_prefix``:
    which records to search (None: the whole store). ``k``: passages per
    query. ``text_field``: the value field holding a record's text (default:
    every string of the value, joined by spaces). ``filter``: as for
    ``store.search``. ``vector``: also rank by the store's ``embed`` (hybrid).
    ``sources``: memory kinds (or :class:`filemem.memory.Source`) to answer
    from with :func:`filemem.recall_context` instead, within
    ``budget_chars`` and ``timeout_s``.

    Example::

        retriever = FileMemRetriever("./agent-store", ("agent-1", "facts"), k=2)
        print(retriever("staging database").passages)
    """

    def __init__(
        self,
        store_or_path: filemem.Store | str | os.PathLike[str] | None = None,
        namespace_prefix: tuple[str, ...] | list[str] | str | None = None,
        *,
        k: int = 3,
        text_field: str | None = None,
        filter: Mapping[str, Any] | None = None,
        vector: bool = False,
        sources: Sequence[Any] | None = None,
        budget_chars: int = 4000,
        timeout_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.k = _check_k(k)
        if sources is None and store_or_path is None:
            raise filemem.InvalidValueError("FileMemRetriever needs a store (or a path), or sources")
        self._owns_store = False
        self.store: filemem.Store | None = None
        if isinstance(store_or_path, filemem.Store):
            self.store = store_or_path
        elif isinstance(store_or_path, (str, os.PathLike)):
            self.store, self._owns_store = filemem.Store(store_or_path), True
        elif store_or_path is not None:
            raise filemem.InvalidValueError(
                f"store_or_path must be a filemem.Store or a path, not {type(store_or_path).__name__}"
            )
        self.namespace_prefix = namespace_prefix
        self.text_field = text_field
        self.filter = dict(filter) if filter is not None else None
        self.vector = vector
        self.sources = list(sources) if sources is not None else None
        self.budget_chars = budget_chars
        self.timeout_s = timeout_s
        if self.store is not None and self.sources is None:
            try:  # bad arguments (prefix, filter) fail here, not at the first question
                self.store.search(self.namespace_prefix, query="x", filter=self.filter, limit=1)
            except BaseException:
                self.close()
                raise

    def __deepcopy__(self, memo: dict[int, Any]) -> FileMemRetriever:
        # DSPy optimizers deep-copy programs; a store handle is shared, never copied.
        clone = copy.copy(self)
        clone._owns_store = False
        return clone

    def close(self) -> None:
        """Close the store if this retriever opened it (from a path)."""
        if self._owns_store and self.store is not None:
            self.store.close()

    def search(self, query: str, k: int | None = None) -> list[Passage]:
        """The best ``k`` passages for ``query`` (at most ``k``; fewer when fewer match)."""
        k = self.k if k is None else _check_k(k)
        if not isinstance(query, str):
            raise filemem.InvalidQueryError(f"query must be a str, not {type(query).__name__}")
        if self.sources is not None:
            ctx = filemem.recall_context(query, self.sources, self.budget_chars, self.timeout_s, per_source=k)
            return [Passage(s.text, s.score, s.ref) for s in ctx.snippets[:k]]
        assert self.store is not None
        if not query.strip() and self.filter is None:
            return []  # a blank question matches nothing (store.search would list everything)
        hits = self.store.search(
            self.namespace_prefix,
            query=query if query.strip() else None,
            filter=self.filter,
            limit=k,
            vector=query if self.vector and query.strip() else None,
        )
        out = []
        for hit in hits[:k]:
            value = hit.item.value
            if self.text_field is not None and isinstance(value, Mapping):
                text = " ".join(_strings(value.get(self.text_field)))
            else:
                text = " ".join(_strings(value))
            out.append(Passage(text, hit.score, "/".join((*hit.item.namespace, hit.item.key))))
        return out

    def forward(self, query: str, k: int | None = None) -> Any:
        """``dspy.Prediction(passages=[text...], scores=[...], refs=[...])``, best first, at most ``k``."""
        found = self.search(query, k)
        return dspy.Prediction(
            passages=[p.text for p in found], scores=[p.score for p in found], refs=[p.ref for p in found]
        )

    @property
    def rm(self) -> FileMemRM:
        """This retriever as a DSPy retrieval model: ``dspy.configure(rm=retriever.rm)``."""
        return FileMemRM(self)

    def as_tool(self, name: str = "search_memory") -> Callable[[str], list[str]]:
        """A plain function for ``dspy.ReAct(..., tools=[...])``: ``query -> list of passages``."""

        def search_memory(query: str) -> list[str]:
            """Search long-term memory; returns the most relevant stored passages, best first."""
            return [p.text for p in self.search(query)]

        search_memory.__name__ = search_memory.__qualname__ = name
        return search_memory


class FileMemRM:
    """What ``dspy.Retrieve`` calls as ``dspy.settings.rm``: ``rm(query, k=k)`` -> items with ``long_text``.

    Example::

        dspy.configure(rm=FileMemRetriever(store, ("agent-1",)).rm)
        dspy.Retrieve(k=2)("staging database").passages
    """

    def __init__(self, retriever: FileMemRetriever) -> None:
        self.retriever = retriever

    def __call__(self, query: str, k: int | None = None, **kwargs: Any) -> list[Any]:
        """The passages as ``dotdict(long_text=..., score=..., ref=...)``, best first, at most ``k``."""
        return [dotdict(long_text=p.text, score=p.score, ref=p.ref) for p in self.retriever.search(query, k)]
