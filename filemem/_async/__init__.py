"""The async twin of the store (layer L5): AsyncStore and its batch, snapshot and mapping faces.

One mechanism per file: ``_runner`` (worker threads, the in-flight limit,
cancellation), ``_store`` (AsyncStore, one thin wrapper per Store method),
``_views`` (AsyncBatch, AsyncSnapshot, AsyncMappingView, AsyncListing).
"""

from __future__ import annotations

from ._store import AsyncStore
from ._views import AsyncBatch, AsyncListing, AsyncMappingView, AsyncSnapshot

__all__ = ["AsyncBatch", "AsyncListing", "AsyncMappingView", "AsyncSnapshot", "AsyncStore"]
