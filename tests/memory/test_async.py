"""The async faces over the real AsyncStore: same names, same results as the sync faces."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

import filemem
from filemem import memory as m
from tests.memory.conftest import ThreadAsyncStore

PAIRS = [
    (m.Episodic, m.AsyncEpisodic),
    (m.Semantic, m.AsyncSemantic),
    (m.Skills, m.AsyncSkills),
    (m.Sites, m.AsyncSites),
    (m.Worklog, m.AsyncWorklog),
    (m.GenerationCache, m.AsyncGenerationCache),
]


@pytest.mark.parametrize("sync_cls,async_cls", PAIRS)
def test_async_faces_have_the_same_public_names_and_signatures(sync_cls: Any, async_cls: Any) -> None:
    names = {n for n in dir(sync_cls) if not n.startswith("_")}
    extra = {"__len__"}  # sync-only conveniences
    assert names - extra <= {n for n in dir(async_cls) if not n.startswith("_")}
    for n in names:
        a, s = getattr(async_cls, n, None), getattr(sync_cls, n)
        if callable(s) and n not in ("summarize", "close", "stream"):
            assert inspect.iscoroutinefunction(a), n
            assert list(inspect.signature(a).parameters) == list(inspect.signature(s).parameters), n


def _astores(path: str) -> list[Any]:
    return [filemem.AsyncStore(path, durability="flush")]


async def _exercise(astore: Any) -> None:
    eps = m.AsyncEpisodic(astore)
    ids = [await eps.record(f"task {i}", ["a"], "done", i % 2 == 0) for i in range(5)]
    assert [e.id for e in await eps.recent(2)] == ids[::-1][:2]
    assert [e.id async for e in eps.stream()] == ids
    assert sorted([e.id async for e in eps.stream(ordered=False, batch_size=2)]) == ids
    assert (await eps.search("task 3", k=1))[0].id == ids[3]
    assert [e.id for e in await eps.search(success=False, k=5)] == [ids[3], ids[1]]

    facts = m.AsyncSemantic(astore)
    await facts.learn("Paris is in France.", 0.5)
    f = await facts.learn("paris is in france", 0.5)
    assert f.evidence == 2 and f.confidence == pytest.approx(0.75)
    assert [x.text for x in await facts.recall("france", 3)] == ["Paris is in France."]

    skills = m.AsyncSkills(astore)
    await skills.add("login", ["open", "submit"])
    await asyncio.gather(*(skills.record_use("login", True, 1.0) for _ in range(10)))
    s = await skills.get("login")
    assert s is not None and s.uses == 10
    assert [x.name for x in await skills.best_for("login", 1)] == ["login"]

    sites = m.AsyncSites(astore)
    await asyncio.gather(*(sites.record_visit("https://x.org/a", 0.5) for _ in range(10)))
    site = await sites.site("https://x.org/a")
    dom = await sites.domain("x.org")
    assert site is not None and dom is not None and site.visits == dom.visits == 10
    assert len(await sites.top_sites(3)) == 1

    async with m.AsyncWorklog(astore, summarize_every=3) as log:
        for i in range(7):
            await log.append("s", f"Did step {i}.")
        summary = await log.summarize("s")
        assert summary.entries == 7 and "Did step 6." in summary.text
        assert await log.count("s") == 7 and len(await log.entries("s")) == 7

    async def llm(texts: list[str]) -> str:
        await asyncio.sleep(0)
        return f"{len(texts)} things happened"

    async with m.AsyncWorklog(astore, summarizer=llm, summarize_every=None) as log2:
        assert (await log2.summarize("s")).text == "7 things happened"

    cache = m.AsyncGenerationCache(astore)

    async def gen() -> str:
        return "out"

    assert await cache.get_or_generate("m", "p", gen) == "out"
    assert await cache.get("m", "p") == "out"
    assert await cache.invalidate(prefix="p") == 1


def test_async_faces_on_the_real_async_store(location: str) -> None:
    async def main() -> None:
        async with filemem.AsyncStore(location, durability="flush") as astore:
            await _exercise(astore)
            assert await astore.check() == []

    asyncio.run(main())


def test_async_faces_on_a_store_without_search_use_the_scan_fallback(location: str) -> None:
    """The plan runner falls back to a scan with the same filter/BM25 semantics when a store has no search."""

    class NoSearch(ThreadAsyncStore):
        def __getattr__(self, name: str) -> Any:
            if name in ("search", "sync", "scan"):
                raise AttributeError(name)
            return super().__getattr__(name)

    async def main() -> None:
        with filemem.Store(location, durability="flush") as s:
            await _exercise(NoSearch(s))
            assert s.check() == []

    asyncio.run(main())
