"""Ops and values: what a write carries into the engine (layer L2).

Invariant: a value the engine keeps or hands back is never shared with a
caller. ``copy_value`` copies the containers both ways (so no caller can
alias the shard cache) and refuses nesting deeper than :data:`MAX_DEPTH`, so
every reader can decode what any writer wrote. ``_checked_version`` is the
one conditional-write rule both write paths (the log's and the shards') use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .._errors import ConflictError, InvalidValueError
from .._shard import Record
from .._view import View

_SCALAR_TYPES: Final = frozenset({str, int, float, bool, bytes, type(None)})

#: Deepest nesting of containers a value may have. Every reader must be able
#: to decode what a writer wrote, whatever its own recursion limit: one
#: over-nested value would otherwise make its whole shard unreadable.
MAX_DEPTH: Final = 100


def copy_value(value: Any, _depth: int = 0) -> Any:
    """Copy the containers of a codec value so callers never alias the cache.

    Raises InvalidValueError past :data:`MAX_DEPTH` levels of nesting.
    """
    t = type(value)
    if t is dict or t is list:
        # Fast path: a flat container (the common memory record) is copied
        # whole at C speed; only nested ones take the recursive walk.
        scalars = _SCALAR_TYPES
        for v in value.values() if t is dict else value:
            if type(v) not in scalars:
                break
        else:
            return value.copy()
    elif isinstance(value, (dict, list, tuple)):
        t = dict if isinstance(value, dict) else list  # subclasses and tuples copy as plain containers
    if t is dict:
        if _depth >= MAX_DEPTH:
            raise InvalidValueError(f"value is nested deeper than {MAX_DEPTH} levels")
        return {k: copy_value(v, _depth + 1) for k, v in value.items()}
    if t is list or t is tuple:
        if _depth >= MAX_DEPTH:
            raise InvalidValueError(f"value is nested deeper than {MAX_DEPTH} levels")
        return [copy_value(v, _depth + 1) for v in value]
    if t is bytearray:
        return bytes(value)
    return value


def check_nesting(value: Any, _depth: int = 0) -> None:
    """Raise InvalidValueError exactly where :func:`copy_value` would (nesting past :data:`MAX_DEPTH`); copy nothing.

    For a value encoded at once and never kept (a plain put of a batch: only
    its bytes are), so no copy is made only to be dropped. Keep it in step
    with :func:`copy_value` (``tests/unit/test_batch_plain_puts.py`` compares them).

    >>> check_nesting({"a": [1, {"b": 2}]})
    """
    t = type(value)
    if t is dict or t is list:
        scalars = _SCALAR_TYPES
        items = value.values() if t is dict else value
        for v in items:
            if type(v) not in scalars:
                break
        else:
            return  # copy_value's fast path: a flat container, at any depth
    elif isinstance(value, dict):
        items = [v for _, v in value.items()]  # as copy_value walks a subclass: through items()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return
    if _depth >= MAX_DEPTH:
        raise InvalidValueError(f"value is nested deeper than {MAX_DEPTH} levels")
    for v in items:
        if type(v) not in _SCALAR_TYPES:
            check_nesting(v, _depth + 1)


def copier(value: Any) -> Callable[[Any], Any]:
    """The cheapest call that copies ``value`` as :func:`copy_value` does, chosen once for a cached value.

    A flat dict or list of scalars (the common record) copies whole at C
    speed with no walk over its items; a scalar is immutable and served as
    is. A cache that serves the same value many times keeps the call beside it.
    """
    t = type(value)
    if t in _SCALAR_TYPES:
        return _same
    if t is dict or t is list:
        scalars = _SCALAR_TYPES
        for v in value.values() if t is dict else value:
            if type(v) not in scalars:
                return copy_value
        return dict.copy if t is dict else list.copy
    return copy_value


def _same(value: Any) -> Any:
    return value


OpKind = Literal["put", "delete", "update", "install"]


class _Undecoded:
    """The type of :data:`UNDECODED` (one instance; its repr names it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDECODED"


#: A put's ``value`` when only its ``encoded`` bytes are given (the collector:
#: its records wait as codec bytes, and decoding each one only to log the same
#: bytes again was a third of its apply step, issue 13). The file engine
#: decodes the bytes where it needs the value (a format-1 store's shard write,
#: a later op of the same key in one batch, a read of the record) and never
#: otherwise. Only for engines that say so (``Engine.takes_undecoded``).
UNDECODED: Final[Any] = _Undecoded()


@dataclass(slots=True)
class Op:
    """One write in a transaction. ``value`` is already copied off the caller."""

    namespace: tuple[str, ...]
    key: str
    kind: OpKind
    value: Any = None
    ttl: float | None = None
    if_version: int | None = None
    fn: Callable[[Any], Any] | None = None
    bits: str = ""
    view: View | None = field(default=None, repr=False)
    prefix: str = ""
    #: ``install`` (the fold): the record to put (None: delete) and its version.
    record: Record | None = None
    version: int = 0
    #: ``install``: the shards may drop records expired before this time, no later ones
    #: (a carried ``created_at`` still to be resolved may need them; see filemem._wal._carry).
    expired_before: float | None = None
    #: ``put``: the value as already encoded by the codec named here (checked
    #: against the limit), so the commit does not encode it again; None: encode it then.
    encoded: tuple[str, bytes] | None = field(default=None, repr=False)


def undecoded_put(namespace: tuple[str, ...], key: str, codec: str, data: bytes) -> Op:
    """A plain put given as its codec bytes alone (value :data:`UNDECODED`); the engine decodes it where needed.

    >>> undecoded_put(("ns",), "k", "json", b"1").encoded
    ('json', b'1')
    """
    return Op(namespace, key, "put", UNDECODED, encoded=(codec, data))


def _checked_version(op: Op, rec: Record | None, now: float) -> tuple[Record | None, int]:
    """The live record and its version (0 when absent or expired); ``ConflictError`` if ``op.if_version`` differs.

    One rule for both write paths (the log's and the shards'), so a conditional
    write means the same thing whichever format the store has.
    """
    if rec is not None and (x := rec.get("expires_at")) is not None and x <= now:
        rec = None
    current = rec["version"] if rec is not None else 0
    if op.if_version is not None and op.if_version != current:
        raise ConflictError(
            f"{'/'.join(op.namespace)}/{op.key}: expected version {op.if_version}, found {current}",
            namespace=op.namespace,
            key=op.key,
            expected=op.if_version,
            current_version=current,
        )
    return rec, current


def _written_value(op: Op, rec: Record | None) -> tuple[Any, bool]:
    """The value a put or update writes over the live ``rec``, and whether it was an update.

    One rule for both write paths, as :func:`_checked_version`: an update's
    function gets a copy of the current value (None if absent) and its result
    is copied, so neither aliases a cached record. A put's value is the op's
    (it may be :data:`UNDECODED`; the caller decodes where it needs it).
    """
    if op.kind == "update":
        assert op.fn is not None
        return copy_value(op.fn(copy_value(rec["value"]) if rec is not None else None)), True
    return op.value, False
