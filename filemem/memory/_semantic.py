"""Semantic memory: facts and patterns, merged across processes instead of duplicated.

A fact's key is a hash of its normalised text (case, Unicode form, spacing and
edge punctuation do not matter), so every process that learns "The sky is
blue." and "the sky is blue" writes the same record. Learning is an atomic
read-modify-write (``Store.update``), so concurrent learners never lose one
another's evidence.

**Merge rule** (also in docs/memory.md): learning a fact again

* adds 1 to ``evidence``;
* combines confidence as independent evidence (noisy-OR):
  ``confidence = 1 - (1 - old) * (1 - new)``, so it only goes up and never passes 1;
* adds ``source`` to ``sources`` (the first 32 distinct sources are kept);
* keeps the first wording as ``text`` and the first time as ``first_at``; sets ``last_at``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._types import NamespaceLike
from ._common import Snippet, check_identity, check_number, check_positive_int, check_text, namespace
from ._core import Face, async_op, sync_op
from ._steps import Call, Plan, SearchCall
from ._text import normalise_text, stable_key

if TYPE_CHECKING:
    from .._async import AsyncStore
    from .._store import Store

__all__ = ["AsyncSemantic", "Fact", "Semantic", "merge_fact"]

_MAX_SOURCES: Final = 32
#: A recall reads this many times ``k`` candidates before re-ranking by confidence.
_OVERFETCH: Final = 3


@dataclass(frozen=True, slots=True)
class Fact:
    """A learned fact: its text, combined confidence, how often it was learned, from where."""

    key: str
    text: str
    confidence: float
    evidence: int
    sources: list[str]
    first_at: float
    last_at: float
    score: float = 0.0

    @classmethod
    def of(cls, key: str, v: dict[str, Any], score: float = 0.0) -> Fact:
        return cls(
            key,
            v["text"],
            float(v["confidence"]),
            int(v["evidence"]),
            list(v.get("sources") or []),
            float(v["first_at"]),
            float(v["last_at"]),
            score,
        )


def merge_fact(text: str, confidence: float, source: str | None, now: float) -> Callable[[Any], dict[str, Any]]:
    """The update function that learns ``text`` once more (see the module docstring for the rule)."""

    def merge(current: Any) -> dict[str, Any]:
        if not current:
            return {
                "text": text,
                "norm": normalise_text(text),
                "confidence": confidence,
                "evidence": 1,
                "sources": [source] if source else [],
                "first_at": now,
                "last_at": now,
            }
        sources = list(current.get("sources") or [])
        if source and source not in sources and len(sources) < _MAX_SOURCES:
            sources.append(source)
        return {
            **current,
            "confidence": 1.0 - (1.0 - float(current["confidence"])) * (1.0 - confidence),
            "evidence": int(current["evidence"]) + 1,
            "sources": sources,
            "last_at": max(now, float(current.get("last_at") or 0.0)),
        }

    return merge


class SemanticCore:
    """The plans behind :class:`Semantic` and :class:`AsyncSemantic`."""

    def __init__(self, ns: NamespaceLike = ("memory", "facts")) -> None:
        self.ns = namespace(ns)

    @staticmethod
    def key_of(text: str) -> str:
        """The record key of a fact: a hash of its normalised text (``InvalidValueError`` if that is empty)."""
        return stable_key(normalise_text(check_identity("text", text)), prefix="f-")

    def learn(self, text: str, confidence: float, source: str | None = None) -> Plan[Fact]:
        """Learn a fact (or learn it again: merged, never duplicated); return it as stored now.

        >>> facts.learn("The staging DB is read-only.", 0.8, source="worker-3")  # doctest: +SKIP
        Fact(key='f-…', text='The staging DB is read-only.', confidence=0.8, evidence=1, ...)
        """
        check_text("text", text)
        c = check_number("confidence", confidence, 0.0, 1.0)
        if source is not None:
            check_text("source", source)
        key = self.key_of(text)
        value = yield Call("update", (self.ns, key, merge_fact(text, c, source, time.time())))
        return Fact.of(key, value)

    def get(self, text: str) -> Plan[Fact | None]:
        """The stored fact with this (normalised) text, or None."""
        key = self.key_of(check_text("text", text))
        value = yield Call("get", (self.ns, key))
        return None if value is None else Fact.of(key, value)

    def forget(self, text: str) -> Plan[bool]:
        """Remove a fact; True if it was there."""
        removed: bool = yield Call("delete", (self.ns, self.key_of(check_text("text", text))))
        return removed

    def recall(self, query: str, k: int = 5, *, min_confidence: float = 0.0) -> Plan[list[Fact]]:
        """The ``k`` facts that best match ``query``: BM25 relevance times ``0.5 + 0.5 * confidence``."""
        check_positive_int("k", k)
        flt = {"confidence": {"$gte": min_confidence}} if min_confidence > 0 else None
        hits = yield SearchCall(self.ns, query, flt, k * _OVERFETCH, 0)
        facts = [Fact.of(h.key, h.value, h.score * (0.5 + 0.5 * float(h.value["confidence"]))) for h in hits]
        facts.sort(key=lambda f: (-f.score, f.key))
        return facts[:k]

    def all(self) -> Plan[list[Fact]]:
        """Every fact, most confident first."""
        items = yield Call("items", (self.ns,))
        facts = [Fact.of(it.key, it.value) for it in items]
        facts.sort(key=lambda f: (-f.confidence, -f.evidence, f.key))
        return facts

    def context(self, query: str, k: int = 5) -> Plan[list[Snippet]]:
        """Snippets for :func:`~filemem.memory.recall_context`."""
        found = yield from self.recall(query, k)
        return [Snippet("facts", f.text, f.score, f"{'/'.join(self.ns)}/{f.key}", f) for f in found]


class Semantic(Face[SemanticCore]):
    """Facts and patterns shared by every process: learned again means merged, with more evidence.

    Example::

        facts = Semantic(store)
        facts.learn("The staging DB is read-only.", 0.6, source="worker-1")
        f = facts.learn("the staging db is read-only", 0.5, source="worker-2")
        assert f.evidence == 2 and f.confidence == 0.8     # 1 - 0.4 * 0.5
        facts.recall("staging database", k=3)
    """

    def __init__(self, store: Store, namespace: NamespaceLike = ("memory", "facts")) -> None:
        self._store = store
        self._core = SemanticCore(namespace)
        self.name = "facts"

    learn = sync_op(SemanticCore.learn)
    get = sync_op(SemanticCore.get)
    forget = sync_op(SemanticCore.forget)
    recall = sync_op(SemanticCore.recall)
    all = sync_op(SemanticCore.all)
    context = sync_op(SemanticCore.context)


class AsyncSemantic(Face[SemanticCore]):
    """The async twin of :class:`Semantic` (same names; await them)."""

    def __init__(self, store: AsyncStore, namespace: NamespaceLike = ("memory", "facts")) -> None:
        self._store = store
        self._core = SemanticCore(namespace)
        self.name = "facts"

    learn = async_op(SemanticCore.learn)
    get = async_op(SemanticCore.get)
    forget = async_op(SemanticCore.forget)
    recall = async_op(SemanticCore.recall)
    all = async_op(SemanticCore.all)
    context = async_op(SemanticCore.context)
