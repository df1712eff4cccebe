"""LangGraph's search filters and namespace match conditions, with InMemoryStore's semantics (layer L7).

The invariant: a compiled filter keeps exactly the values LangGraph's
``InMemoryStore`` keeps, with one deliberate difference: a range operator
(``$gt $gte $lt $lte``) on a value that is not a number (nor a numeric string)
does not match, where InMemoryStore raises ``TypeError``/``ValueError`` from
``float()`` in the middle of a search. Filter keys are literal top-level keys
of the value (``"a.b"`` is the key ``"a.b"``, not a path), so a key with a
``.`` matches losslessly. A malformed filter raises ``filemem.InvalidQueryError``
before anything is read.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

import filemem

__all__ = ["compile_filter", "does_match"]

Pred = Callable[[Any], bool]

_RANGE: Final[dict[str, Callable[[float, float], bool]]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_OPERATORS: Final = frozenset({"$eq", "$ne", *_RANGE})


def compile_filter(flt: Mapping[str, Any] | None) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate over an item's value, or None for "keep everything".

    >>> keep = compile_filter({"score": {"$gt": 8}, "a.b": 1})
    >>> keep({"score": 10, "a.b": 1}), keep({"score": 10, "a": {"b": 1}})
    (True, False)
    """
    if not flt:
        if flt is not None and not isinstance(flt, Mapping):
            raise filemem.InvalidQueryError(f"filter must be a dict, not {type(flt).__name__}")
        return None
    if not isinstance(flt, Mapping):
        raise filemem.InvalidQueryError(f"filter must be a dict, not {type(flt).__name__}")
    checks = [(key, _compile(cond)) for key, cond in flt.items()]

    def keep(value: Mapping[str, Any]) -> bool:
        return all(check(value.get(key)) for key, check in checks)

    return keep


def _compile(cond: Any) -> Pred:
    if isinstance(cond, Mapping):
        if any(isinstance(k, str) and k.startswith("$") for k in cond):
            ops = [_operator(k, v) for k, v in cond.items()]
            return lambda v: all(op(v) for op in ops)
        # A plain dict condition: every key it names must match (a subset match, not equality).
        subs = [(k, _compile(v)) for k, v in cond.items()]
        return lambda v: isinstance(v, dict) and all(check(v.get(k)) for k, check in subs)
    if isinstance(cond, (list, tuple)):
        items = [_compile(c) for c in cond]
        n = len(items)
        return lambda v: (
            isinstance(v, (list, tuple)) and len(v) == n and all(check(x) for check, x in zip(items, v, strict=True))
        )
    return lambda v: bool(v == cond)


def _operator(name: Any, arg: Any) -> Pred:
    if name not in _OPERATORS:
        raise filemem.InvalidQueryError(f"unsupported filter operator {name!r} (use one of {sorted(_OPERATORS)})")
    if name == "$eq":
        return lambda v: bool(v == arg)
    if name == "$ne":
        return lambda v: bool(v != arg)
    bound = _number(arg)
    if bound is None:
        raise filemem.InvalidQueryError(f"{name} needs a number, not {arg!r}")
    cmp = _RANGE[name]

    def check(v: Any) -> bool:
        x = _number(v)
        return x is not None and cmp(x, bound)

    return check


def _number(v: Any) -> float | None:
    # float() as InMemoryStore applies it (numbers, bools, numeric strings);
    # what it cannot convert does not match instead of raising.
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def does_match(condition: Any, namespace: tuple[str, ...]) -> bool:
    """Whether ``namespace`` meets a LangGraph ``MatchCondition`` (``*`` matches any one label)."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise filemem.InvalidQueryError(f"unsupported match type: {condition.match_type!r}")
    return all(p in ("*", k) for k, p in pairs)
