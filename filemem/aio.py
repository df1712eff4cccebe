"""filemem for asyncio: ``from filemem.aio import AsyncStore``.

``AsyncStore`` has every method of :class:`filemem.Store`, with the same
names and arguments, as coroutines (listings are awaitable and async-iterable,
batch and snapshot are ``async with`` blocks, ``scan`` streams). The other
names here are the types those methods return. See docs/async.md.

Example::

    from filemem.aio import AsyncStore

    async with AsyncStore("./memories") as store:
        await store.put("agent-1/facts", "sky", "blue")
        async for batch in store.scan("agent-1/facts"):
            ...
"""

from __future__ import annotations

from ._async import AsyncBatch, AsyncListing, AsyncMappingView, AsyncSnapshot, AsyncStore

__all__ = ["AsyncBatch", "AsyncListing", "AsyncMappingView", "AsyncSnapshot", "AsyncStore"]
