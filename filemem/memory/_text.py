"""Pure text helpers shared by every kind: normalising, tokenising, keys, BM25, similarity.

Nothing here touches the store, so each function is tested on its own.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from .._digest import blake2b

__all__ = [
    "BM25_B",
    "BM25_K1",
    "bm25_scores",
    "cosine",
    "jaccard",
    "normalise_text",
    "stable_key",
    "text_of",
    "tokens",
]

BM25_K1: Final = 1.2
BM25_B: Final = 0.75
_WORD: Final = re.compile(r"\w+", re.UNICODE)
_SPACE: Final = re.compile(r"\s+")
# Punctuation around a statement does not change what it says: "The sky is blue." == "the sky is blue"
_EDGE: Final = " \t\n\r.,;:!?\"'`()[]{}"


def normalise_text(text: str) -> str:
    """Case-folded, NFKC, whitespace collapsed, edge punctuation stripped: the identity of a fact.

    >>> normalise_text("  The SKY is   blue. ")
    'the sky is blue'
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip(_EDGE)


def tokens(text: str) -> list[str]:
    """Case-folded word tokens (``\\w+``) of ``text``: the same terms as ``Store.search``."""
    return _WORD.findall(text.casefold())


def stable_key(*parts: Any, prefix: str = "") -> str:
    """A short key (``prefix`` + 20 hex digits of BLAKE2b) from JSON-encodable ``parts``; same in every process."""
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return prefix + blake2b(raw.encode("utf-8"), digest_size=10).hexdigest()


def slug(text: str, limit: int = 40) -> str:
    """A readable key fragment: word characters joined by ``-``."""
    return "-".join(tokens(text))[:limit].strip("-") or "x"


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > 20:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v, depth + 1)


def text_of(value: Any, fields: Sequence[str] | None = None) -> str:
    """Every string inside ``value`` (or inside the given top-level ``fields``), joined by spaces."""
    if fields is not None and isinstance(value, Mapping):
        return " ".join(s for f in fields for s in _strings(value.get(f)))
    return " ".join(_strings(value))


def bm25_scores(query: str, docs: Sequence[str]) -> list[float]:
    """Okapi BM25 score of each document for ``query`` (k1=1.2, b=0.75, idf = ln(1 + (N-df+0.5)/(df+0.5))).

    A document that contains no query term scores 0.
    """
    q = list(dict.fromkeys(tokens(query)))
    toks = [tokens(d) for d in docs]
    n = len(toks)
    if not q or n == 0:
        return [0.0] * n
    avg = sum(len(t) for t in toks) / n or 1.0
    df: Counter[str] = Counter()
    for t in toks:
        df.update(set(t) & set(q))
    idf = {w: math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5)) for w in q}
    out = []
    for t in toks:
        tf = Counter(t)
        s = 0.0
        for w in q:
            f = tf.get(w, 0)
            if f:
                s += idf[w] * f * (BM25_K1 + 1) / (f + BM25_K1 * (1 - BM25_B + BM25_B * len(t) / avg))
        out.append(s)
    return out


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Size of the intersection over size of the union of two token collections (1.0 for two empty ones)."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0.0 when either is zero or they differ in length)."""
    if len(a) != len(b) or not a:
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
