"""Regressions for review findings on the memory kinds (each fails before its fix)."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

import filemem
from filemem.memory import (
    AsyncWorklog,
    Episodic,
    GenerationCache,
    Semantic,
    Sites,
    Skills,
    Source,
    Worklog,
    arecall_context,
    extractive_summary,
    recall_context,
)
from filemem.memory._sites import normalise_url


def test_worklog_append_when_closed_raises_before_writing(mstore: filemem.Store) -> None:
    log = Worklog(mstore, summarize_every=1)
    log.close()
    with pytest.raises(filemem.StoreClosedError):
        log.append("s", "hello")
    assert log.count("s") == 0
    assert log.entries("s") == []


def test_worklog_append_never_raises_after_commit(mstore: filemem.Store) -> None:
    log = Worklog(mstore, summarize_every=1)
    real = log._start

    def closing(*a: Any, **kw: Any) -> Any:
        log._closed = True  # closed between the commit and the refresh
        return real(*a, **kw)

    log._start = closing  # type: ignore[method-assign]
    key = log.append("s", "hello")
    assert [e.id for e in log.entries("s")] == [key]
    log.close()


def test_async_worklog_append_when_closed_raises_before_writing(location: str) -> None:
    async def main() -> None:
        async with filemem.AsyncStore(location, durability="flush") as astore:
            log = AsyncWorklog(astore, summarize_every=1)
            await log.close()
            with pytest.raises(filemem.StoreClosedError):
                await log.append("s", "hello")
            assert await log.count("s") == 0

    asyncio.run(main())


def test_recall_context_keeps_per_source_items_only() -> None:
    def many(q: str, k: int) -> list[str]:
        return [f"item {i} word{i} other{i * 7}" for i in range(3000)]

    t = time.monotonic()
    ctx = recall_context("q", [Source("many", many)], timeout_s=0.5, per_source=8, budget_chars=200)
    assert time.monotonic() - t < 2.0
    assert len(ctx.snippets) + ctx.dropped + ctx.duplicates == 8


def test_recall_context_huge_timeout() -> None:
    def slow(q: str, k: int) -> list[str]:
        time.sleep(0.1)
        return ["x"]

    assert recall_context("q", [Source("slow", slow)], timeout_s=1e10).text == "[slow] x"

    async def main() -> str:
        return (await arecall_context("q", [Source("slow", slow)], timeout_s=1e10)).text

    assert asyncio.run(main()) == "[slow] x"


def test_arecall_context_does_not_wait_for_slow_cancellation() -> None:
    async def stubborn(q: str, k: int) -> list[str]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(1.5)  # e.g. closing an http client
            raise
        return []

    async def main() -> None:
        t = time.monotonic()
        sources = [Source("fast", lambda q, k: ["a"]), Source("stubborn", stubborn)]
        ctx = await arecall_context("q", sources, timeout_s=0.2)
        assert time.monotonic() - t < 1.0
        assert "stubborn" in ctx.failed and ctx.text == "[fast] a"

    asyncio.run(main())


def test_punctuation_only_texts_are_refused(mstore: filemem.Store) -> None:
    facts = Semantic(mstore)
    skills = Skills(mstore)
    for text in ("...", "???", " !! "):
        with pytest.raises(filemem.InvalidValueError):
            facts.learn(text, 0.5)
        with pytest.raises(filemem.InvalidValueError):
            skills.add(text, ["step"])
    assert facts.learn("The sky is blue.", 0.5).evidence == 1


def test_context_source_names_never_collide() -> None:
    sources = [Source("facts", lambda q, k: ["one"]), Source("facts", lambda q, k: ["two"])]
    sources.append(Source("facts#2", lambda q, k: ["three"]))
    ctx = recall_context("q", sources, timeout_s=2.0)
    assert sorted(s.text for s in ctx.snippets) == ["one", "three", "two"]
    assert len({s.source for s in ctx.snippets}) == 3


def test_non_finite_weights_scores_and_durations_are_refused(mstore: filemem.Store) -> None:
    with pytest.raises(filemem.InvalidValueError):
        recall_context("q", [Source("b", lambda q, k: ["beta"], weight=float("nan"))])
    with pytest.raises(filemem.InvalidValueError):
        recall_context("q", [Source("b", lambda q, k: ["beta"], weight=-1.0)])
    ctx = recall_context("q", [Source("a", lambda q, k: ["alpha"]), Source("b", lambda q, k: [("beta", math.nan)])])
    assert "b" in ctx.failed and ctx.text == "[a] alpha"
    skills = Skills(mstore)
    skills.add("deploy", ["push"])
    sites = Sites(mstore)
    for d in (1e308, math.inf, math.nan):
        with pytest.raises(filemem.InvalidValueError):
            skills.record_use("deploy", True, d)
        with pytest.raises(filemem.InvalidValueError):
            sites.record_visit("https://example.com/", d)
    assert skills.get("deploy").uses == 0  # type: ignore[union-attr]


def test_bad_actions_steps_and_ids_are_refused(mstore: filemem.Store) -> None:
    ep = Episodic(mstore)
    for bad in ("open the page", None, 3, {"a": 1}):
        with pytest.raises(filemem.InvalidValueError):
            ep.record("t", bad, "ok", True)  # type: ignore[arg-type]
    assert ep.recent() == []
    with pytest.raises(filemem.InvalidValueError):
        ep.get(123)  # type: ignore[arg-type]
    assert ep.get(ep.record("t", ("open", "submit"), "ok", True)).actions == ["open", "submit"]  # type: ignore[union-attr]
    skills = Skills(mstore)
    for steps, pre in ((None, ()), ("push", ()), (["push"], None), (["push"], "logged in")):
        with pytest.raises(filemem.InvalidValueError):
            skills.add("deploy", steps, pre)  # type: ignore[arg-type]
    assert skills.get("deploy") is None


def test_gencache_invalidate_keeps_entries_rewritten_after_the_scan(mstore: filemem.Store) -> None:
    other = GenerationCache(mstore)

    class Racy:  # another writer lands between the scan and the deletes
        def __init__(self, s: filemem.Store) -> None:
            self.s = s

        def __getattr__(self, n: str) -> Any:
            return getattr(self.s, n)

        def items(self, ns: Any) -> Any:
            got = self.s.items(ns)
            other.put("m", "Price of tea?", "$4 (fresh)")
            assert other.invalidate(prefix="Price of milk") == 1  # another invalidator got there first
            return got

    c = GenerationCache(mstore)
    c.put("m", "Price of tea?", "$3", tags=["prices"])
    c.put("m", "Price of milk?", "$1", tags=["prices"])
    c.put("m", "Price of jam?", "$2", tags=["prices"])
    assert GenerationCache(Racy(mstore)).invalidate(tag="prices") == 1  # type: ignore[arg-type]
    assert c.get("m", "Price of tea?") == "$4 (fresh)"
    assert c.get("m", "Price of jam?") is None


def test_normalise_url_keeps_ipv6_brackets() -> None:
    assert normalise_url("http://[::1]:8080/a") == ("http://[::1]:8080/a", "::1")
    assert normalise_url("HTTPS://[FE80::1]:443") == ("https://[fe80::1]/", "fe80::1")
    url, _ = normalise_url("http://[::1]:8080/a")
    assert normalise_url(url)[0] == url


def test_extractive_summary_keeps_first_and_last_openings() -> None:
    first = "Started the export of the quarterly report for finance."
    last = "Finished: export uploaded to the shared drive after retries."
    out = extractive_summary([first, "middle step.", last], max_chars=80)
    assert len(out) <= 80
    assert out.startswith(first[:20]) and last[:20] in out
    out = extractive_summary(["Opened the page.", "x y z.", "\nLogged in at last."], max_chars=40)
    assert "Logged in at last." in out
