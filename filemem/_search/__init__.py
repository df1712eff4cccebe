"""Search over a store: filters, BM25 keyword ranking, vectors, shared index files (layer L4).

Modules, one mechanism each:

- ``_filter``: ``filter=`` dicts (operators, dotted paths) into predicates;
- ``_text``: which strings of a record are text, and the tokenizer;
- ``_segment``: one shard's index (postings, lengths, vectors), its encoding;
- ``_indexfile``: the per-namespace index file shared by processes;
- ``_searcher``: query execution (shard identity checks, index state, results);
- ``_scoring``: BM25, cosine, reciprocal rank fusion, the page;
- ``_checkindex``: what ``store.check()`` says about index files.
"""

from __future__ import annotations

from ._checkindex import check_indexes
from ._result import SearchHit
from ._searcher import Searcher
from ._segment import Embed

__all__ = ["Embed", "SearchHit", "Searcher", "check_indexes"]
