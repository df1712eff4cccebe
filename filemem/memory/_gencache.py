"""A generation cache: memoise model outputs by (model, prompt, params), with a TTL.

Layout: ``(*namespace, <model slug>)`` holds one record per generation, keyed
by a hash of ``[model, prompt, params]`` (params JSON-encoded with sorted keys,
so ``{"t": 0, "n": 1}`` and ``{"n": 1, "t": 0}`` are one entry). Records
expire through the store's own TTL.

Near-duplicates: give ``embed=`` (a function from text to a vector) and
``similarity=`` (a cosine threshold, default 0.95). Each entry then stores its
prompt's vector beside it, and an exact miss looks for the most similar
prompt of the same model and params at or above the threshold. That lookup
scans the model's entries (one namespace), so keep it for caches of
thousands, not millions, of entries.

Invalidation: ``invalidate(tag=...)`` drops every entry carrying the tag,
``invalidate(prefix=...)`` every entry whose prompt starts with the prefix;
both can be limited to one ``model``; the deletes of one call commit as one batch.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._errors import ConflictError, InvalidValueError
from .._types import NamespaceLike
from ._common import check_number, check_text, namespace
from ._core import Face, async_op, run_async, run_sync, sync_op
from ._steps import Call, Plan
from ._text import cosine, slug, stable_key

if TYPE_CHECKING:
    from .._async import AsyncStore
    from .._store import Store

__all__ = ["AsyncGenerationCache", "CachedGeneration", "GenerationCache"]

Embed = Callable[[str], Sequence[float]]
_DEFAULT_SIMILARITY: Final = 0.95


@dataclass(frozen=True, slots=True)
class CachedGeneration:
    """A cache hit: the output, what produced it, and how similar its prompt was (1.0: exact)."""

    model: str
    prompt: str
    params: dict[str, Any]
    output: Any
    tags: list[str]
    created_at: float
    similarity: float = 1.0


def _params(params: dict[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidValueError(f"params must be a dict or None, not {type(params).__name__}")
    return params


def _vector(embed: Embed, text: str) -> list[float]:
    vec = [float(x) for x in embed(text)]
    if not vec or not all(math.isfinite(x) for x in vec):
        raise InvalidValueError("embed() must return a non-empty vector of finite numbers")
    return vec


class GenerationCacheCore:
    """The plans behind :class:`GenerationCache` and :class:`AsyncGenerationCache`."""

    def __init__(
        self,
        ns: NamespaceLike = ("memory", "gencache"),
        ttl_s: float | None = 24 * 3600.0,
        embed: Embed | None = None,
        similarity: float = _DEFAULT_SIMILARITY,
    ) -> None:
        self.ns = namespace(ns)
        self.ttl_s = None if ttl_s is None else check_number("ttl_s", ttl_s, 0.001)
        self.embed = embed
        self.similarity = check_number("similarity", similarity, -1.0, 1.0)

    def model_ns(self, model: str) -> tuple[str, ...]:
        return (*self.ns, slug(check_text("model", model), 48) + "-" + stable_key(model)[:8])

    @staticmethod
    def key_of(model: str, prompt: str, params: dict[str, Any]) -> str:
        return stable_key(model, prompt, params, prefix="g-")

    @staticmethod
    def _hit(v: dict[str, Any], similarity: float = 1.0) -> CachedGeneration:
        return CachedGeneration(
            v["model"], v["prompt"], dict(v["params"]), v["output"], list(v["tags"]), v["created_at"], similarity
        )

    def lookup(self, model: str, prompt: str, params: dict[str, Any] | None = None) -> Plan[CachedGeneration | None]:
        """The cached generation for exactly these arguments, else (with ``embed``) the most similar prompt's."""
        p = _params(params)
        check_text("prompt", prompt)
        ns = self.model_ns(model)
        v = yield Call("get", (ns, self.key_of(model, prompt, p)))
        if v is not None:
            return self._hit(v)
        if self.embed is None:
            return None
        want = _vector(self.embed, prompt)
        best: tuple[float, dict[str, Any]] | None = None
        for item in (yield Call("items", (ns,))):
            val = item.value
            if val.get("params") != p or not val.get("embedding"):
                continue
            sim = cosine(want, val["embedding"])
            if sim >= self.similarity and (best is None or sim > best[0]):
                best = (sim, val)
        return None if best is None else self._hit(best[1], best[0])

    def get(self, model: str, prompt: str, params: dict[str, Any] | None = None) -> Plan[Any]:
        """The cached output (exact, or near-duplicate with ``embed``), or None."""
        hit = yield from self.lookup(model, prompt, params)
        return None if hit is None else hit.output

    def put(
        self,
        model: str,
        prompt: str,
        output: Any,
        params: dict[str, Any] | None = None,
        *,
        tags: Sequence[str] = (),
        ttl_s: float | None = None,
    ) -> Plan[str]:
        """Cache ``output``; return its key. ``ttl_s`` overrides the cache's default for this entry."""
        p = _params(params)
        check_text("prompt", prompt)
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise InvalidValueError("tags must be a sequence of strings")
        ttl = self.ttl_s if ttl_s is None else check_number("ttl_s", ttl_s, 0.001)
        value: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "params": p,
            "output": output,
            "tags": list(tags),
            "created_at": time.time(),
        }
        if self.embed is not None:
            value["embedding"] = _vector(self.embed, prompt)
        key = self.key_of(model, prompt, p)
        yield Call("put", (self.model_ns(model), key, value), {"ttl": ttl})
        return key

    def invalidate(self, *, tag: str | None = None, prefix: str | None = None, model: str | None = None) -> Plan[int]:
        """Drop entries with ``tag`` and/or whose prompt starts with ``prefix`` (optionally of one ``model``).

        Returns how many were dropped. With neither ``tag`` nor ``prefix``, drops every
        entry (of ``model``, or of the whole cache). Each delete is conditional on the
        version scanned: an entry rewritten meanwhile is kept, one already gone is not counted.
        """
        if model is not None:
            spaces = [self.model_ns(model)]
        else:
            found = yield Call("list_namespaces", (self.ns,))
            spaces = [n for n in found if len(n) == len(self.ns) + 1]
        dropped = 0
        for ns in spaces:
            for item in (yield Call("items", (ns,))):
                v = item.value
                if tag is not None and tag not in (v.get("tags") or []):
                    continue
                if prefix is not None and not str(v.get("prompt", "")).startswith(prefix):
                    continue
                # Conditional: an entry rewritten since the scan (a fresh answer) is kept, and one
                # already gone (another invalidator, a TTL) is not counted.
                try:
                    removed = yield Call("delete", (ns, item.key), {"if_version": item.version})
                except ConflictError:
                    continue
                dropped += bool(removed)
        return dropped


class GenerationCache(Face[GenerationCacheCore]):
    """Memoise model generations by (model, prompt, params), with a TTL and optional near-duplicate hits.

    Example::

        cache = GenerationCache(store, ttl_s=3600)
        out = cache.get_or_generate("gpt-x", "Summarise: ...", lambda: call_model(...), params={"t": 0})
        cache.invalidate(tag="pricing-v1")
    """

    def __init__(
        self,
        store: Store,
        namespace: NamespaceLike = ("memory", "gencache"),
        *,
        ttl_s: float | None = 24 * 3600.0,
        embed: Embed | None = None,
        similarity: float = _DEFAULT_SIMILARITY,
    ) -> None:
        self._store = store
        self._core = GenerationCacheCore(namespace, ttl_s, embed, similarity)

    lookup = sync_op(GenerationCacheCore.lookup)
    get = sync_op(GenerationCacheCore.get)
    put = sync_op(GenerationCacheCore.put)
    invalidate = sync_op(GenerationCacheCore.invalidate)

    def get_or_generate(
        self,
        model: str,
        prompt: str,
        generate: Callable[[], Any],
        params: dict[str, Any] | None = None,
        *,
        tags: Sequence[str] = (),
        ttl_s: float | None = None,
    ) -> Any:
        """The cached output, or ``generate()``'s, cached on the way out."""
        hit = run_sync(self._store, self._core.lookup(model, prompt, params))
        if hit is not None:
            return hit.output
        out = generate()
        run_sync(self._store, self._core.put(model, prompt, out, params, tags=tags, ttl_s=ttl_s))
        return out


class AsyncGenerationCache(Face[GenerationCacheCore]):
    """The async twin of :class:`GenerationCache` (same names; await them)."""

    def __init__(
        self,
        store: AsyncStore,
        namespace: NamespaceLike = ("memory", "gencache"),
        *,
        ttl_s: float | None = 24 * 3600.0,
        embed: Embed | None = None,
        similarity: float = _DEFAULT_SIMILARITY,
    ) -> None:
        self._store = store
        self._core = GenerationCacheCore(namespace, ttl_s, embed, similarity)

    lookup = async_op(GenerationCacheCore.lookup)
    get = async_op(GenerationCacheCore.get)
    put = async_op(GenerationCacheCore.put)
    invalidate = async_op(GenerationCacheCore.invalidate)

    async def get_or_generate(
        self,
        model: str,
        prompt: str,
        generate: Callable[[], Any | Awaitable[Any]],
        params: dict[str, Any] | None = None,
        *,
        tags: Sequence[str] = (),
        ttl_s: float | None = None,
    ) -> Any:
        """The cached output, or ``generate()``'s (awaited if it is a coroutine), cached on the way out."""
        hit = await run_async(self._store, self._core.lookup(model, prompt, params))
        if hit is not None:
            return hit.output
        out = generate()
        if inspect.isawaitable(out):
            out = await out
        await run_async(self._store, self._core.put(model, prompt, out, params, tags=tags, ttl_s=ttl_s))
        return out
