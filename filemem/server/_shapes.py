"""How the API writes namespaces and records (layer L7).

Invariant: a namespace in a URL or a JSON body is its segments joined by
``/`` (filemem's ``"agent-1/episodic"`` form), never with an empty segment;
a record is ``{"namespace", "key", "value", "version", "created_at",
"updated_at", "expires_at"}`` with the value as plain JSON (msgpack-only
types tagged as ``filemem export`` tags them).
"""

from __future__ import annotations

from typing import Any

from .. import InvalidKeyError, Item
from ..admin import to_json_value

__all__ = ["namespace_of", "record_json"]


def namespace_of(text: str) -> tuple[str, ...]:
    """``a/b/c`` -> ``("a", "b", "c")``; an empty segment is InvalidKeyError (400)."""
    segments = tuple(text.split("/"))
    if not text or any(not s for s in segments):
        raise InvalidKeyError(f"namespace {text!r} has an empty segment; write it as a/b/c")
    return segments


def record_json(item: Item) -> dict[str, Any]:
    """An Item as the API returns it."""
    return {
        "namespace": "/".join(item.namespace),
        "key": item.key,
        "value": to_json_value(item.value),
        "version": item.version,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "expires_at": item.expires_at,
    }
