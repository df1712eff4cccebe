"""Context assembly: concurrent sources, a failing one, a hanging one, duplicates, ranking, the budget."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import filemem
from filemem.memory import (
    AsyncEpisodic,
    AsyncSemantic,
    Context,
    Episodic,
    Semantic,
    Skills,
    Snippet,
    Source,
    arecall_context,
    recall_context,
)


def _boom(q: str, k: int) -> list[str]:
    raise RuntimeError("index offline")


def _hang_for(seconds: float, release: threading.Event) -> Any:
    def fetch(q: str, k: int) -> list[str]:
        release.wait(seconds)
        return ["too late"]

    return fetch


def _fill(store: filemem.Store) -> tuple[Semantic, Episodic, Skills]:
    facts, eps, skills = Semantic(store), Episodic(store), Skills(store)
    facts.learn("The staging database is read-only on Fridays.", 0.9)
    facts.learn("Deploys happen at noon.", 0.8)
    eps.record("migrate the staging database", ["run migration"], "permission denied", False)
    eps.record("deploy at noon", ["push"], "ok", True)
    skills.add("database migration", ["take a backup", "run migrate", "verify"])
    return facts, eps, skills


def test_sync_context_survives_a_raising_and_a_hanging_source(mstore: filemem.Store) -> None:
    facts, eps, skills = _fill(mstore)
    release = threading.Event()
    try:
        t0 = time.monotonic()
        ctx = recall_context(
            "staging database",
            [facts, Source("broken", _boom), eps, Source("slow", _hang_for(30, release)), skills],
            budget_chars=2000,
            timeout_s=0.5,
        )
        took = time.monotonic() - t0
    finally:
        release.set()  # let the abandoned thread finish before the leak check
    assert 0.4 <= took < 3.0
    assert set(ctx.failed) == {"broken", "slow"}
    assert "RuntimeError: index offline" in ctx.failed["broken"] and "timed out" in ctx.failed["slow"]
    assert not ctx.ok
    sources = {s.source for s in ctx.snippets}
    assert sources == {"facts", "episodes", "skills"}
    assert "read-only on Fridays" in ctx.text and "too late" not in ctx.text
    assert ctx.snippets[0].score == max(s.score for s in ctx.snippets)


def test_async_context_survives_a_raising_and_a_hanging_source(mstore: filemem.Store, location: str) -> None:
    _fill(mstore)

    async def boom(q: str, k: int) -> list[str]:
        raise ValueError("bad source")

    async def hang(q: str, k: int) -> list[str]:
        await asyncio.sleep(30)
        return ["too late"]

    async def main() -> Context:
        async with filemem.AsyncStore(location, durability="flush") as astore:
            t0 = time.monotonic()
            ctx = await arecall_context(
                "staging database",
                [
                    AsyncSemantic(astore),
                    Source("boom", boom),
                    Source("hang", hang),
                    AsyncEpisodic(astore),
                    Skills(mstore),
                ],
                budget_chars=2000,
                timeout_s=0.5,
            )
            assert time.monotonic() - t0 < 3.0
            return ctx

    ctx = asyncio.run(main())
    assert set(ctx.failed) == {"boom", "hang"} and "timed out" in ctx.failed["hang"]
    assert {s.source for s in ctx.snippets} == {"facts", "episodes", "skills"}


def test_async_context_abandons_a_blocking_sync_source_without_stalling_the_loop() -> None:
    release = threading.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> Context:
        t = asyncio.create_task(ticker())
        try:
            return await arecall_context(
                "q", [Source("blocking", _hang_for(30, release)), Source("ok", lambda q, k: ["fine"])], timeout_s=0.3
            )
        finally:
            t.cancel()

    try:
        ctx = asyncio.run(main())
    finally:
        release.set()
    assert ctx.failed.keys() == {"blocking"} and ctx.text == "[ok] fine"
    assert ticks >= 10  # the loop kept running while the source blocked its thread


def test_duplicates_are_removed_and_the_best_copy_kept() -> None:
    a = Source("a", lambda q, k: [Snippet("x", "The sky is blue.", 5.0), Snippet("x", "Grass is green", 1.0)])
    b = Source("b", lambda q, k: [("the sky is blue", 9.0), ("Water is wet and cold today", 3.0)], weight=0.5)
    c = Source("c", lambda q, k: ["Water is wet and cold today!"])
    ctx = recall_context("q", [a, b, c], budget_chars=1000)
    texts = [s.text for s in ctx.snippets]
    assert ctx.duplicates == 2
    assert texts[0] == "The sky is blue." and ctx.snippets[0].source == "a"  # weight 1 beats 0.5 x 1.0
    assert sum("sky" in t for t in texts) == 1 and sum("Water" in t for t in texts) == 1
    assert ctx.failed == {}


def test_budget_is_respected_and_smaller_snippets_still_fit() -> None:
    big = "x" * 300
    src = Source("s", lambda q, k: [(big, 3.0), ("small one", 2.0), ("another", 1.0)])
    ctx = recall_context("q", [src], budget_chars=40)
    assert len(ctx.text) <= 40 and ctx.dropped == 1
    assert ctx.text == "[s] small one\n[s] another"


def test_sources_with_the_same_name_are_told_apart_and_bad_sources_refused() -> None:
    ctx = recall_context("q", [Source("s", lambda q, k: ["one"]), Source("s", _boom)], budget_chars=100)
    assert ctx.failed.keys() == {"s#2"} and ctx.text == "[s] one"
    with pytest.raises(filemem.InvalidValueError):
        recall_context("q", [object()])
    with pytest.raises(filemem.InvalidValueError):
        recall_context("q", [], budget_chars=0)
    bad = recall_context("q", [Source("odd", lambda q, k: [object()])])
    assert "odd" in bad.failed


def test_raw_namespaces_are_sources_too(mstore: filemem.Store, location: str) -> None:
    mstore.put(("team", "notes"), "n1", {"title": "Deploy checklist", "body": "Run the smoke tests after a deploy."})
    mstore.put(("team", "notes"), "n2", {"title": "Lunch", "body": "Noodles on Fridays."})
    facts = Semantic(mstore)
    facts.learn("We deploy at noon.", 0.9)
    ctx = recall_context("deploy", [facts, Source.namespace(mstore, ("team", "notes"), weight=0.5)])
    assert ctx.failed == {}
    assert [s.source for s in ctx.snippets] == ["facts", "team/notes"]
    assert (
        ctx.snippets[1].text == "Deploy checklist Run the smoke tests after a deploy."
        and ctx.snippets[1].ref == "team/notes/n1"
    )

    async def main() -> Context:
        async with filemem.AsyncStore(location) as astore:
            return await arecall_context("deploy", [Source.namespace(astore, "team/notes", name="notes")])

    actx = asyncio.run(main())
    assert actx.text == "[notes] Deploy checklist Run the smoke tests after a deploy."
