"""An OpenAI Agents SDK ``Session`` over a filemem store (layer L7; needs ``pip install "filemem[openai-agents]"``).

The invariant: a session is a head record ``{"first": f, "next": n}`` and
one record per item at positions ``f <= i < n`` (keys ``item-000000000042``),
all in the namespace ``(*namespace_prefix, session_id)``. Every change —
``add_items``, ``pop_item``, ``clear_session`` — is one all-or-nothing batch
that rewrites the head under ``if_version`` and is retried on conflict, so
writes from any number of processes are serialised by the head: positions
follow commit order, no item is lost, and each ``pop_item`` removes and
returns exactly the item that was last at that instant. Reads take a
snapshot, so a history is never seen half-written.

Results match the SDK's ``SQLiteSession`` (tests/integrations/
test_openai_agents_differential.py), including ``limit`` semantics: ``None``
uses ``session_settings.limit`` (all items when that is None too), a positive
limit the latest items in order, 0 none, a negative limit all.

Example::

    from agents import Agent, Runner
    from filemem.integrations.openai_agents import FileMemSession

    session = FileMemSession("user-42", "./agent-store")
    result = await Runner.run(Agent(name="helper"), "Hi", session=session)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import filemem

from ._retry import retry_conflicts

try:
    from agents.memory import SessionSettings
    from agents.memory.session_settings import resolve_session_limit
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'filemem.integrations.openai_agents needs the OpenAI Agents SDK: pip install "filemem[openai-agents]"'
    ) from exc

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["FileMemSession"]

_HEAD: Final = "head"

_T = TypeVar("_T")


def _item_key(position: int) -> str:
    # Zero-padded: keys sort in position order in listings and exports.
    return f"item-{position:012d}"


async def _finish(job: Callable[[], _T]) -> _T:
    """Run a write in a worker thread and see it finish even if the caller is cancelled.

    A batch either commits or not, but the caller must learn which: like
    SQLiteSession, wait for the outcome, then re-raise the cancellation.
    """
    task: asyncio.Future[_T] = asyncio.ensure_future(asyncio.to_thread(job))
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    result = task.result()
    if cancelled is not None:
        raise cancelled
    return result


class FileMemSession:
    """Conversation history for one ``session_id``, shared safely by every process on the store.

    ``store_or_path``: an open :class:`filemem.Store` (left open) or a
    directory (opened here; ``close()`` closes it). ``session_settings``: as
    for the SDK's sessions (``limit`` is the default for ``get_items``).

    Example::

        session = FileMemSession("chat-1", "./agent-store")
        await session.add_items([{"role": "user", "content": "hi"}])
        assert await session.get_items(limit=1) == [{"role": "user", "content": "hi"}]
        await session.pop_item()
        session.close()
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        store_or_path: filemem.Store | str | os.PathLike[str],
        *,
        session_settings: SessionSettings | None = None,
        namespace_prefix: Sequence[str] = ("openai-agents", "sessions"),
    ) -> None:
        if not isinstance(session_id, str):
            raise filemem.InvalidKeyError(f"session_id must be a str, not {type(session_id).__name__}")
        if isinstance(store_or_path, filemem.Store):
            store, owns = store_or_path, False
        elif isinstance(store_or_path, (str, os.PathLike)):
            store, owns = filemem.Store(store_or_path), True
        else:
            raise filemem.InvalidValueError(
                f"store_or_path must be a filemem.Store or a path, not {type(store_or_path).__name__}"
            )
        try:
            self.namespace: tuple[str, ...] = (*namespace_prefix, session_id)
            store.get_item(self.namespace, _HEAD)  # validates the namespace (the session id) now
        except BaseException:
            if owns:
                store.close()
            raise
        self.session_id = session_id
        self.session_settings = session_settings if session_settings is not None else SessionSettings()
        self.store = store
        self._owns_store = owns

    def close(self) -> None:
        """Close the store if this session opened it (from a path); a store passed in stays open."""
        if self._owns_store:
            self.store.close()

    # ------------------------------------------------------------------ the engine, synchronous

    def _head(self) -> tuple[int, int, int]:
        """(first, next, version) of the head record; (0, 0, 0) for an empty session."""
        item = self.store.get_item(self.namespace, _HEAD, consistency="strict")
        if item is None:
            return 0, 0, 0
        return int(item.value["first"]), int(item.value["next"]), item.version

    def get_items_sync(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The history, oldest first (``limit`` as for :meth:`get_items`)."""
        wanted = resolve_session_limit(limit, self.session_settings)
        with self.store.snapshot() as snap:
            head = snap.get_item(self.namespace, _HEAD)
            if head is None:
                return []
            first, nxt = int(head.value["first"]), int(head.value["next"])
            if wanted is not None and wanted >= 0:
                first = max(first, nxt - wanted)
            out = []
            for position in range(first, nxt):
                item = snap.get_item(self.namespace, _item_key(position))
                if item is not None:
                    out.append(item.value)
            return out

    def add_items_sync(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in one commit, after everything committed before."""
        items = list(items)
        if not items:
            return

        def attempt() -> None:
            first, nxt, version = self._head()
            with self.store.batch() as batch:
                batch.put(self.namespace, _HEAD, {"first": first, "next": nxt + len(items)}, if_version=version)
                for offset, item in enumerate(items):
                    batch.put(self.namespace, _item_key(nxt + offset), item)

        retry_conflicts(attempt)

    def pop_item_sync(self) -> TResponseInputItem | None:
        """Remove and return the latest item, or None for an empty session."""

        def attempt() -> Any:
            # One snapshot for the head and the item: a lock-free read could see
            # an add's new head before the item it commits in another shard.
            with self.store.snapshot() as snap:
                head = snap.get_item(self.namespace, _HEAD)
                if head is None or head.value["next"] <= head.value["first"]:
                    return None
                first, nxt, version = int(head.value["first"]), int(head.value["next"]), head.version
                key = _item_key(nxt - 1)
                item = snap.get_item(self.namespace, key)
            with self.store.batch() as batch:
                batch.put(self.namespace, _HEAD, {"first": first, "next": nxt - 1}, if_version=version)
                if item is not None:
                    batch.delete(self.namespace, key, if_version=item.version)
            # A missing item (only a damaged store has one) is skipped: pop the one before it.
            return item.value if item is not None else attempt()

        result: TResponseInputItem | None = retry_conflicts(attempt)
        return result

    def clear_session_sync(self) -> None:
        """Remove every item of the session, in one commit."""

        def attempt() -> None:
            first, nxt, version = self._head()
            if version == 0:
                return
            with self.store.batch() as batch:
                batch.delete(self.namespace, _HEAD, if_version=version)
                for position in range(first, nxt):
                    batch.delete(self.namespace, _item_key(position))

        retry_conflicts(attempt)

    # ------------------------------------------------------------------ the Session protocol

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The history, oldest first: the latest ``limit`` items (None: ``session_settings.limit``, else all)."""
        return await asyncio.to_thread(self.get_items_sync, limit)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` to the history, all at once."""
        await _finish(lambda: self.add_items_sync(items))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the most recent item, or None if the session is empty."""
        return await _finish(self.pop_item_sync)

    async def clear_session(self) -> None:
        """Remove every item of this session."""
        await _finish(self.clear_session_sync)

    def __repr__(self) -> str:
        return f"FileMemSession({self.session_id!r}, {self.store.path!r})"
