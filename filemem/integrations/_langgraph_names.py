"""How a LangGraph item is held in filemem: escaped keys and namespaces, the envelope (layer L7).

Invariants: :func:`escape_key` and ``_ns_in`` are bijections (any LangGraph
key or namespace label round-trips through :func:`unescape_key` /
``_ns_out``, and no two escape to the same filemem name). A LangGraph item
``(namespace, key, value)`` is the filemem record ``(_ns_in(namespace),
escape_key(key), {"value": value, ...})``; the envelope carries, when they
apply, the text to embed (``"text"``), the TTL in minutes (``"ttl"``) and the
LangGraph ``updated_at`` kept across TTL refreshes (``"updated_at"``). A
record whose value is not such an envelope was not written by the adapter
(``_is_item``). Needs no LangGraph import.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["escape_key", "unescape_key"]

# Envelope fields of a stored record (see the module docstring).
_VALUE: Final = "value"
_TEXT: Final = "text"
_TTL: Final = "ttl"
_UPDATED: Final = "updated_at"
#: The envelope's TTL is in minutes (LangGraph's unit); filemem's is in seconds.
_SECONDS_PER_MINUTE: Final = 60.0

# Keys filemem refuses outright, mapped to forms no other key escapes to
# (a lone "%" and "%2E" never come out of the general rule below).
_SPECIAL_KEYS: Final = {"": "%", ".": "%2E", "..": "%2E%2E"}
_SPECIAL_NAMES: Final = {v: k for k, v in _SPECIAL_KEYS.items()}
_ESCAPED: Final = re.compile("%(25|2F|00)")


def escape_key(key: str) -> str:
    """The filemem key of a LangGraph key: a bijection, so any string round-trips.

    >>> escape_key("a/b"), escape_key(""), escape_key("50%")
    ('a%2Fb', '%', '50%25')
    """
    special = _SPECIAL_KEYS.get(key)
    if special is not None:
        return special
    if "%" in key or "/" in key or "\x00" in key:
        return key.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    return key


def unescape_key(name: str) -> str:
    """Invert :func:`escape_key`."""
    if "%" not in name:
        return name
    special = _SPECIAL_NAMES.get(name)
    if special is not None:
        return special
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), name)


def _ns_in(namespace: tuple[str, ...]) -> tuple[str, ...]:
    """The filemem namespace of a LangGraph one: filemem refuses ``/`` in a segment, LangGraph allows it.

    Labels are escaped like keys (``%`` -> ``%25``, ``/`` -> ``%2F``); LangGraph's
    own rules (no ``.``, no NUL, not empty) leave nothing else to escape.
    """
    if any("/" in label or "%" in label for label in namespace):
        return tuple(label.replace("%", "%25").replace("/", "%2F") for label in namespace)
    return namespace


def _ns_out(namespace: tuple[str, ...]) -> tuple[str, ...]:
    """Invert :func:`_ns_in`."""
    if any("%" in label for label in namespace):
        return tuple(unescape_key(label) for label in namespace)
    return namespace


def _is_item(env: Any) -> bool:
    """Whether a record's value is an envelope this adapter wrote (a shared store may hold others)."""
    return type(env) is dict and type(env.get(_VALUE)) is dict


#: Recent epoch -> aware datetime conversions: datetimes are immutable, so
#: sharing one is safe, and a hot item's two stamps then cost a dict lookup.
_WHEN: dict[float, datetime] = {}
_WHEN_MAX: Final = 8192


def _when(ts: float) -> datetime:
    got = _WHEN.get(ts)
    if got is None:
        if len(_WHEN) >= _WHEN_MAX:
            _WHEN.clear()
        got = _WHEN[ts] = datetime.fromtimestamp(ts, UTC)
    return got
