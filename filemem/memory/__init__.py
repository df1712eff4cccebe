"""Agent memory kinds and context assembly over a filemem store (layer L4).

Each kind is a thin, typed layer over the public ``Store`` API (it never
touches files itself), with a sync face and an async face of the same method
names, and is safe when many processes use it at once::

    Episodic / AsyncEpisodic                  what happened: record, recent, search, stream
    Semantic / AsyncSemantic                  facts: learn (merged across processes), recall
    Skills / AsyncSkills                      procedures: add, record_use (exact counts), best_for
    Sites / AsyncSites                        site visits: record_visit, site, domain, top_sites
    Worklog / AsyncWorklog                    session logs: append, summarize (background), summary
    GenerationCache / AsyncGenerationCache    model outputs by (model, prompt, params), TTL, near-dups
    recall_context / arecall_context          ask several kinds at once, dedupe, rank, fit a budget

The logic of each kind is written once, as plans of store calls
(``_core.py``); the faces only run them. How-to: ``docs/memory.md``.

Example::

    import filemem
    from filemem.memory import Episodic, Semantic, recall_context

    with filemem.Store("./memories") as store:
        facts, episodes = Semantic(store), Episodic(store)
        facts.learn("The staging DB is read-only.", 0.7, source="worker-1")
        episodes.record("migrate staging", ["run migration"], "permission denied", False)
        print(recall_context("staging database", [facts, episodes], budget_chars=800).text)
"""

from __future__ import annotations

from ._common import Snippet as Snippet
from ._context import Context as Context
from ._context import Source as Source
from ._context import arecall_context as arecall_context
from ._context import recall_context as recall_context
from ._episodic import AsyncEpisodic as AsyncEpisodic
from ._episodic import Episode as Episode
from ._episodic import Episodic as Episodic
from ._gencache import AsyncGenerationCache as AsyncGenerationCache
from ._gencache import CachedGeneration as CachedGeneration
from ._gencache import GenerationCache as GenerationCache
from ._search import Hit as Hit
from ._semantic import AsyncSemantic as AsyncSemantic
from ._semantic import Fact as Fact
from ._semantic import Semantic as Semantic
from ._sites import AsyncSites as AsyncSites
from ._sites import Sites as Sites
from ._sites import SiteStats as SiteStats
from ._skills import AsyncSkills as AsyncSkills
from ._skills import Skill as Skill
from ._skills import Skills as Skills
from ._summarise import extractive_summary as extractive_summary
from ._worklog import AsyncWorklog as AsyncWorklog
from ._worklog import LogEntry as LogEntry
from ._worklog import Summary as Summary
from ._worklog import Worklog as Worklog

__all__ = [
    "AsyncEpisodic",
    "AsyncGenerationCache",
    "AsyncSemantic",
    "AsyncSites",
    "AsyncSkills",
    "AsyncWorklog",
    "CachedGeneration",
    "Context",
    "Episode",
    "Episodic",
    "Fact",
    "GenerationCache",
    "Hit",
    "LogEntry",
    "Semantic",
    "SiteStats",
    "Sites",
    "Skill",
    "Skills",
    "Snippet",
    "Source",
    "Summary",
    "Worklog",
    "arecall_context",
    "extractive_summary",
    "recall_context",
]
