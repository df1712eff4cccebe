"""What text a record contributes to keyword search, and how it is cut into terms (layer L4).

- **Text of a record**: every string inside its value, recursively (dict
  values and list items; dict keys are not text), in document order. With
  ``index_fields`` configured, only the strings under those dotted paths.
- **Terms**: the text is case-folded and split on runs of word characters
  (``\\w+``, Unicode-aware). No stemming, no stop words: "Deploy" and
  "deploy" are one term, "deploys" another.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, Final

from .._errors import InvalidQueryError
from ._filter import resolve_path

__all__ = ["parse_fields", "record_text", "tokenize"]

_WORD: Final = re.compile(r"\w+")
_MISSING_DEPTH: Final = 200  # values are at most 100 deep (engine MAX_DEPTH); a safe bound


def tokenize(text: str) -> list[str]:
    """The terms of ``text``, in order.

    >>> tokenize("Deploy the API, then re-deploy!")
    ['deploy', 'the', 'api', 'then', 're', 'deploy']
    """
    return _WORD.findall(text.casefold())


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict) and depth < _MISSING_DEPTH:
        for v in value.values():
            yield from _strings(v, depth + 1)
    elif isinstance(value, (list, tuple)) and depth < _MISSING_DEPTH:
        for v in value:
            yield from _strings(v, depth + 1)


def parse_fields(fields: Sequence[str] | None) -> tuple[tuple[str, ...], ...] | None:
    """Check ``index_fields`` (dotted paths); None means every string field."""
    if fields is None:
        return None
    if isinstance(fields, str):
        fields = [fields]
    out: list[tuple[str, ...]] = []
    for f in fields:
        if not isinstance(f, str) or not f or any(not s for s in f.split(".")):
            raise InvalidQueryError(f"index_fields must be dotted field paths, not {f!r}", field=str(f))
        out.append(tuple(f.split(".")))
    return tuple(out)


def record_text(value: Any, fields: tuple[tuple[str, ...], ...] | None) -> list[str]:
    """The strings a value contributes to search (see the module docstring)."""
    if fields is None:
        return list(_strings(value))
    out: list[str] = []
    for path in fields:
        got = resolve_path(value, path)
        out.extend(_strings(got))  # the missing marker is no string: contributes nothing
    return out
