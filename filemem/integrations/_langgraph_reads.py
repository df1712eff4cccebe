"""The read side of the LangGraph adapter: get, search, list_namespaces, TTL refresh on read (layer L7).

A mixin of :class:`filemem.integrations.langgraph.FileMemStore`, kept apart
because it is one job. Invariant: what these return is what LangGraph's
``InMemoryStore`` returns for the same operation, except for the deliberate
differences in docs/integrations.md (namespaces with no items are not
listed; ordering where LangGraph leaves it undefined is (namespace, key);
range filters on non-numbers do not match); records in a shared store that
the adapter did not write are never returned. A TTL refresh on read never
undoes another process's write (it is conditional on the version read).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Final

import filemem

from ._langgraph_filter import compile_filter, does_match
from ._langgraph_names import (
    _SECONDS_PER_MINUTE,
    _TEXT,
    _TTL,
    _UPDATED,
    _VALUE,
    _is_item,
    _ns_in,
    _ns_out,
    _when,
    escape_key,
    unescape_key,
)

try:
    from langgraph.store.base import GetOp, Item, ListNamespacesOp, MatchCondition, SearchItem, SearchOp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('filemem.integrations.langgraph needs LangGraph: pip install "filemem[langgraph]"') from exc

__all__ = ["LangGraphReads"]

#: "Every hit" for filemem's vector search, whose page must hold all candidates when a filter follows.
_ALL_HITS: Final = 2**31
#: A read restarts an item's TTL clock only if the last restart is older than
#: this share of the TTL (at most _REFRESH_SLACK_MAX_S): a refresh is a write,
#: and a hot item read in a loop should not become a write in a loop.
_REFRESH_SLACK: Final = 0.01
_REFRESH_SLACK_MAX_S: Final = 60.0


class LangGraphReads:
    """The reads of ``FileMemStore`` (its ``_store`` is set up by FileMemStore.__init__)."""

    _store: filemem.Store

    def _item(self, rec: filemem.Item, cls: type[Item] = Item, score: float | None = None) -> Item | None:
        env = rec.value
        if not _is_item(env):
            return None  # not written by this adapter (a shared filemem store): not a LangGraph item
        created = _when(rec.created_at)
        ts = env.get(_UPDATED, rec.updated_at)
        updated = created if ts == rec.created_at else _when(ts)
        if cls is SearchItem:
            return SearchItem(
                namespace=_ns_out(rec.namespace),
                key=unescape_key(rec.key),
                value=env[_VALUE],
                created_at=created,
                updated_at=updated,
                score=score,
            )
        return Item(
            value=env[_VALUE],
            key=unescape_key(rec.key),
            namespace=_ns_out(rec.namespace),
            created_at=created,
            updated_at=updated,
        )

    def _get(self, op: GetOp) -> Item | None:
        if not op.namespace:
            return None  # filemem has no empty namespace, so nothing can be there
        rec = self._store.get_item(_ns_in(op.namespace), escape_key(op.key))
        if rec is None:
            return None
        if op.refresh_ttl:
            self._refresh([rec])
        return self._item(rec)

    def _refresh(self, recs: Sequence[filemem.Item]) -> None:
        """Restart the TTL clock of records read with ``refresh_ttl``; a concurrent write wins."""
        now = time.time()
        for rec in recs:
            env = rec.value
            if not isinstance(env, dict) or env.get(_TTL) is None:
                continue
            ttl_s = env[_TTL] * _SECONDS_PER_MINUTE
            slack = min(ttl_s * _REFRESH_SLACK, _REFRESH_SLACK_MAX_S)
            if rec.expires_at is not None and rec.expires_at >= now + ttl_s - slack:
                continue  # restarted moments ago: it expires at most `slack` earlier than a strict refresh
            kept = {**env, _UPDATED: env.get(_UPDATED, rec.updated_at)}  # a refresh is not an update
            # Another process may have written since we read: then its write
            # (and its TTL) stands, and ours must not undo it.
            with contextlib.suppress(filemem.ConflictError):
                self._store.put(rec.namespace, rec.key, kept, ttl=ttl_s, if_version=rec.version)

    def _namespaces(self, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        """filemem namespaces (escaped form) under a LangGraph prefix, in LangGraph's order."""
        return sorted(self._store.list_namespaces(_ns_in(prefix) or None), key=_ns_out)

    def _scan(self, prefix: tuple[str, ...]) -> Iterator[filemem.Item]:
        for ns in self._namespaces(prefix):
            recs = self._store.items(ns)  # sorted by filemem key: escaping can reorder keys with % or /
            if any("%" in r.key for r in recs):
                recs.sort(key=lambda r: unescape_key(r.key))
            yield from recs

    def _search(self, op: SearchOp, qvec: list[float] | None) -> list[SearchItem]:
        pred = compile_filter(op.filter)
        if op.limit == 0:
            return []
        page: list[tuple[filemem.Item, float | None]] = []
        if qvec is not None:
            # Ranked by filemem's shared vector index; the filter (LangGraph's
            # semantics, not filemem's) runs on the hits.
            want = op.offset + op.limit
            hits = self._store.search(
                _ns_in(op.namespace_prefix) or None, vector=qvec, limit=_ALL_HITS if pred else want
            )
            scored = [(h.item, h.score) for h in hits if _is_item(h.item.value)]
            if len(scored) < len(hits) == want:
                # Records not written by this adapter took places on the page: rank them all.
                hits = self._store.search(_ns_in(op.namespace_prefix) or None, vector=qvec, limit=_ALL_HITS)
                scored = [(h.item, h.score) for h in hits if _is_item(h.item.value)]
            if pred is not None:
                scored = [(r, s) for r, s in scored if pred(r.value[_VALUE])]
            page = list(scored[op.offset : op.offset + op.limit])
            if len(page) < op.limit:
                # InMemoryStore's corner case: items without a vector fill the
                # page after the ranked ones (counted from 0, not from offset).
                want = op.limit - len(page)
                for rec in self._scan(op.namespace_prefix):
                    env = rec.value
                    if not _is_item(env) or env.get(_TEXT):
                        continue
                    if pred is None or pred(env[_VALUE]):
                        page.append((rec, None))
                        want -= 1
                        if not want:
                            break
        else:
            skip = op.offset
            for rec in self._scan(op.namespace_prefix):
                if not _is_item(rec.value) or (pred is not None and not pred(rec.value[_VALUE])):
                    continue
                if skip:
                    skip -= 1
                    continue
                page.append((rec, None))
                if len(page) == op.limit:
                    break
        if op.refresh_ttl:
            self._refresh([r for r, _ in page])
        out: list[SearchItem] = []
        for rec, score in page:
            item = self._item(rec, SearchItem, None if score is None else float(score))
            assert isinstance(item, SearchItem)
            out.append(item)
        return out

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conds: tuple[MatchCondition, ...] = tuple(op.match_conditions or ())
        # A literal leading prefix (no wildcard) narrows the directory walk.
        literal: list[str] = []
        for c in conds:
            if c.match_type == "prefix":
                for seg in c.path:
                    if seg == "*":
                        break
                    literal.append(seg)
                break
        held = [ns for ns in self._namespaces(tuple(literal)) if self._store.keys(ns)]
        found = [_ns_out(ns) for ns in held]
        # filemem keeps a namespace's directory (and lists it) after its last
        # record is deleted or expires; LangGraph lists namespaces that hold items.
        found = [ns for ns in found if all(does_match(c, ns) for c in conds)]
        if op.max_depth is not None:
            found = sorted({ns[: op.max_depth] for ns in found})
        return found[op.offset : op.offset + op.limit]
