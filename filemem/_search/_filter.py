"""Search filters: parsing and matching of ``filter=`` dicts (layer L4).

A filter is a dict of ``{path: condition}``; every entry must hold (AND).

- ``path`` is a field name, or a dotted path into nested dicts
  (``"meta.lang"`` reads ``value["meta"]["lang"]``). A value that is not a
  dict has no fields, so it matches only ``$ne`` conditions.
- ``condition`` is either a plain value (equality) or a dict of operators:
  ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``.

Comparison rules (the same in every process, whatever the codec):

- Equality is Python equality except that ``bool`` never equals a number
  (``True`` is not ``1`` here) and lists equal tuples of the same items.
- ``$gt``/``$gte``/``$lt``/``$lte`` compare numbers with numbers and strings
  with strings; any other pairing (or a missing field) does not match.
- A missing field matches ``$ne`` and nothing else.
- ``$in`` takes a list; it matches when the field equals one of its items.

Anything else (an unknown ``$operator``, ``$in`` without a list, an empty
path, a dict mixing operators and plain keys) raises
:class:`~filemem.InvalidQueryError` before anything is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from .._errors import InvalidQueryError

__all__ = ["Predicate", "check_search_args", "compile_filter", "parse_filter", "resolve_path"]

#: A compiled filter: True when a record's value matches.
Predicate = Callable[[Any], bool]

_MISSING: Final = object()
_ORDER_OPS: Final = frozenset({"$gt", "$gte", "$lt", "$lte"})
OPERATORS: Final = frozenset({"$eq", "$ne", "$in"}) | _ORDER_OPS


def check_search_args(query: object, limit: object, offset: object) -> None:
    """Refuse a non-string query or a negative/non-int limit or offset (every backend's search, before it reads)."""
    if query is not None and not isinstance(query, str):
        raise InvalidQueryError(f"query must be a string or None, not {type(query).__name__}")
    for name, n in (("limit", limit), ("offset", offset)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidQueryError(f"{name} must be a non-negative int, not {n!r}")


def resolve_path(value: Any, path: tuple[str, ...]) -> Any:
    """The field at ``path`` inside ``value``, or the module's missing marker."""
    cur = value
    for seg in path:
        if type(cur) is not dict:
            return _MISSING
        cur = cur.get(seg, _MISSING)
        if cur is _MISSING:
            return _MISSING
    return cur


def _norm(v: Any) -> Any:
    """A hashable-free comparable form: tuples become lists, recursively."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


def _same_kind(a: Any, b: Any) -> bool:
    # bool is an int subclass; we keep them apart so {"ok": True} never matches 1.
    return isinstance(a, bool) == isinstance(b, bool)


def values_equal(a: Any, b: Any) -> bool:
    """Equality as filters define it (see the module docstring)."""
    if not _same_kind(a, b):
        return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, dict)) or isinstance(b, (list, tuple, dict)):
        return False
    try:
        return bool(a == b)
    except Exception:  # an exotic codec value must not break a search
        return False


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _orderable(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def _compare(op: str, field_value: Any, operand: Any) -> bool:
    if field_value is _MISSING:
        return op == "$ne"
    if op == "$eq":
        return values_equal(field_value, operand)
    if op == "$ne":
        return not values_equal(field_value, operand)
    if op == "$in":
        return any(values_equal(field_value, x) for x in operand)
    if not _orderable(field_value, operand):
        return False
    if op == "$gt":
        return bool(field_value > operand)
    if op == "$gte":
        return bool(field_value >= operand)
    if op == "$lt":
        return bool(field_value < operand)
    return bool(field_value <= operand)


def _parse_path(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, str) or not raw:
        raise InvalidQueryError(f"filter field names must be non-empty strings, not {raw!r}", field=str(raw))
    if raw.startswith("$"):
        raise InvalidQueryError(
            f"unknown filter operator {raw!r} at the top level; write {{field: {{op: value}}}}", field=raw
        )
    segs = tuple(raw.split("."))
    if any(not s for s in segs):
        raise InvalidQueryError(f"filter path {raw!r} has an empty segment", field=raw)
    return segs


def _parse_condition(name: str, cond: Any) -> list[tuple[str, Any]]:
    if not isinstance(cond, Mapping) or not cond:
        return [("$eq", _norm(cond))]
    keys = list(cond)
    dollar = [k for k in keys if isinstance(k, str) and k.startswith("$")]
    if not dollar:
        return [("$eq", _norm(dict(cond)))]
    if len(dollar) != len(keys):
        raise InvalidQueryError(f"filter on {name!r} mixes operators and plain keys: {keys!r}", field=name)
    out: list[tuple[str, Any]] = []
    for op in dollar:
        operand = cond[op]
        if op not in OPERATORS:
            raise InvalidQueryError(
                f"unknown filter operator {op!r} on {name!r}; use one of {', '.join(sorted(OPERATORS))}",
                field=name,
            )
        if op == "$in":
            if not isinstance(operand, (list, tuple)):
                raise InvalidQueryError(f"$in on {name!r} needs a list, not {type(operand).__name__}", field=name)
            operand = [_norm(x) for x in operand]
        elif op in _ORDER_OPS:
            if not (_is_number(operand) or isinstance(operand, str)):
                raise InvalidQueryError(
                    f"{op} on {name!r} needs a number or a string, not {type(operand).__name__}", field=name
                )
        else:
            operand = _norm(operand)
        out.append((op, operand))
    return out


def parse_filter(spec: object) -> list[tuple[tuple[str, ...], str, Any]]:
    """Check ``spec`` and return its clauses ``(path, operator, operand)`` (a server backend turns them into SQL)."""
    if not isinstance(spec, Mapping):
        raise InvalidQueryError(f"filter must be a dict, not {type(spec).__name__}")
    clauses: list[tuple[tuple[str, ...], str, Any]] = []
    for raw, cond in spec.items():
        path = _parse_path(raw)
        for op, operand in _parse_condition(raw, cond):
            clauses.append((path, op, operand))
    return clauses


def compile_filter(spec: Mapping[str, Any] | None) -> Predicate | None:
    """Check ``spec`` and turn it into a predicate over record values (None: no filter).

    >>> match = compile_filter({"lang": "en", "score": {"$gte": 0.5}})
    >>> match({"lang": "en", "score": 0.7}), match({"lang": "en", "score": 0.2})
    (True, False)
    """
    if spec is None:
        return None
    clauses = parse_filter(spec)
    if not clauses:
        return None

    def match(value: Any) -> bool:
        return all(_compare(op, resolve_path(value, path), operand) for path, op, operand in clauses)

    return match
