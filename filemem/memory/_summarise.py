"""The default summariser: extractive, deterministic, needs no model.

It splits the log into sentences, scores each by the summed TF-IDF weight of
its words across the log (divided by the square root of its length, so long
sentences do not win by size alone), always keeps the first and the last
entry's opening sentence (how the session began and where it stands; when
the two do not fit together each is cut to half the budget), and
returns the best sentences in log order, within ``max_chars``.

A user's own summariser (an LLM call, say) has the same shape:
``summarizer(texts: list[str]) -> str`` (or a coroutine function for the async face).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Final

from ._text import tokens

__all__ = ["extractive_summary"]

_SENTENCE: Final = re.compile(r"(?<=[.!?])\s+|\n+")


def extractive_summary(texts: Sequence[str], max_chars: int = 600) -> str:
    """Summarise log entries by picking their most informative sentences (see the module docstring).

    >>> extractive_summary(["Opened the login page.", "Login failed: captcha.", "Solved captcha; logged in."])
    'Opened the login page. Login failed: captcha. Solved captcha; logged in.'
    """
    sentences: list[tuple[int, int, str]] = []  # (entry index, position, sentence)
    for i, text in enumerate(texts):
        # Positions count non-empty sentences only: an entry opening with a newline still has an opening sentence.
        for j, s in enumerate(x for x in (p.strip() for p in _SENTENCE.split(text)) if x):
            sentences.append((i, j, s))
    if not sentences:
        return ""
    docs = [set(tokens(s)) for _, _, s in sentences]
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d)
    n = len(sentences)
    idf = {w: math.log(1 + n / c) for w, c in df.items()}
    scored = []
    for idx, ((i, j, _), words) in enumerate(zip(sentences, docs, strict=True)):
        weight = sum(idf[w] for w in words) / math.sqrt(len(words) or 1)
        if (i == 0 or i == len(texts) - 1) and j == 0:
            weight = math.inf  # the first and the last entry frame the session
        scored.append((weight, idx))
    scored.sort(key=lambda t: (-t[0], t[1]))
    shown = {idx: sentences[idx][2] for _, idx in scored}
    frames = [idx for w, idx in scored if w == math.inf]
    if len(frames) > 1 and sum(len(shown[i]) for i in frames) + len(frames) - 1 > max_chars:
        # The frames do not fit together: each gets an equal share of the budget (cut with "…").
        share = (max_chars - (len(frames) - 1)) // len(frames)
        if share >= 2:
            for i in frames:
                if len(shown[i]) > share:
                    shown[i] = shown[i][: share - 1] + "…"
    chosen: list[int] = []
    used = 0
    for _, idx in scored:
        s = shown[idx]
        cost = len(s) + (1 if chosen else 0)
        if used + cost <= max_chars:
            chosen.append(idx)
            used += cost
    if not chosen:  # one sentence longer than the budget: cut it
        return sentences[scored[0][1]][2][: max(0, max_chars - 1)] + "…"
    return " ".join(shown[idx] for idx in sorted(chosen))
