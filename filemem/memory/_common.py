"""Helpers every kind shares: namespaces, time-sortable ids, argument checks, context snippets."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._errors import InvalidValueError
from .._names import normalize_namespace
from .._types import NamespaceLike
from ._text import normalise_text

__all__ = ["Snippet", "check_number", "check_positive_int", "check_text", "id_time", "namespace", "new_id"]

_ID_LOCK: Final = threading.Lock()
_last_ns = [0]


def namespace(ns: NamespaceLike) -> tuple[str, ...]:
    """The namespace as a tuple of segments (``InvalidKeyError`` if it could escape the store)."""
    return normalize_namespace(ns)


def new_id(now_ns: int | None = None) -> str:
    """A key that sorts by creation time across processes: 16 hex digits of ns since the epoch, then randomness.

    Strictly increasing within one process (a clock that stands still or steps
    back still gives a later id); across processes, ids are ordered by the wall
    clock, and the 8 random hex digits keep two ids of the same nanosecond apart.
    """
    t = time.time_ns() if now_ns is None else now_ns
    with _ID_LOCK:
        if os.getpid() != _last_pid[0]:
            _last_pid[0] = os.getpid()
            _last_ns[0] = 0
        t = max(t, _last_ns[0] + 1)
        _last_ns[0] = t
    return f"{t:016x}-{os.urandom(4).hex()}"


_last_pid = [os.getpid()]


def id_time(key: str) -> float | None:
    """Seconds since the epoch encoded in an id from :func:`new_id` (None if it is not one)."""
    head = key.split("-", 1)[0]
    if len(head) != 16:
        return None
    try:
        return int(head, 16) / 1e9
    except ValueError:
        return None


MAX_DURATION_S: Final = 1e9
"""The largest ``duration_s`` accepted (about 31 years): sums of durations stay finite."""


def check_text(name: str, value: object) -> str:
    """``value`` if it is a non-empty string, else ``InvalidValueError``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidValueError(f"{name} must be a non-empty string, not {value!r}")
    return value


def check_identity(name: str, value: object) -> str:
    """``value`` if it is a string whose normalised text is not empty, else ``InvalidValueError``.

    Texts that normalise to "" (only punctuation: "...", "???") would all share one key.
    """
    text = check_text(name, value)
    if not normalise_text(text):
        raise InvalidValueError(f"{name} must have some text besides punctuation, not {value!r}")
    return text


def check_items(name: str, value: object) -> list[Any]:
    """``value`` as a list if it is an iterable of items (not a str, bytes or mapping), else ``InvalidValueError``.

    ``list("open the page")`` would silently store one item per character.
    """
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise InvalidValueError(f"{name} must be a sequence of items (e.g. a list of str), not {value!r}")
    return list(value)


def check_number(name: str, value: object, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a float if it is a finite number within ``[lo, hi]``, else ``InvalidValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidValueError(f"{name} must be a finite number, not {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidValueError(f"{name} must be within [{lo}, {hi}], not {value!r}")
    return float(value)


def check_positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1, else ``InvalidValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValueError(f"{name} must be a positive int, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Snippet:
    """One piece of context: its text, the source it came from, its score there, and where it is stored.

    Example::

        Snippet(source="facts", text="the staging db is read-only", score=2.3, ref="memory/facts/f-1a2b")
    """

    source: str
    text: str
    score: float = 0.0
    ref: str = ""
    meta: Any = None
