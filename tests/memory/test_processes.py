"""Each kind from several real processes at once: exact counts, no duplicate facts, no lost episodes."""

from __future__ import annotations

import os
import time
from typing import Any

import filemem
from filemem.memory import Episodic, Semantic, Sites, Skills, Worklog
from tests.concurrency._workers import read_result
from tests.memory import _workers as mw
from tests.memory.conftest import results, run_children


def test_episodes_from_four_processes_none_lost_ids_sort_by_time(location: str, tmp_path: Any, spawn_ctx: Any) -> None:
    n, m = 4, 60
    filemem.Store(location).close()
    res = results(str(tmp_path), n)
    t0 = time.time()
    run_children(spawn_ctx, mw.episodes_child, [(location, i, m, res[i]) for i in range(n)])
    t1 = time.time()
    recorded = [read_result(r)["ids"] for r in res]
    with filemem.Store(location) as store:
        eps = Episodic(store, ("team", "episodes"))
        streamed = [e.id for e in eps.stream()]
        assert len(streamed) == n * m == len(set(streamed)) == len(eps)
        assert set(streamed) == {i for ids in recorded for i in ids}
        assert streamed == sorted(streamed)  # stream is oldest first
        for ids in recorded:  # each process's ids increase in the order it recorded them
            assert ids == sorted(ids)
        assert all(t0 <= e.at <= t1 for e in eps.stream())
        newest = eps.recent(10)
        assert [e.id for e in newest] == sorted(streamed, reverse=True)[:10]
        found = eps.search("task", filter={"metadata.worker": 2}, k=1000)
        assert len(found) == m and {e.metadata["worker"] for e in found} == {2}
        assert store.check() == []


def test_facts_learned_by_four_processes_are_merged_not_duplicated(
    location: str, tmp_path: Any, spawn_ctx: Any
) -> None:
    n, rounds = 4, 5
    facts = ["the staging db is read-only", "login needs a captcha", "deploys happen at noon"]
    filemem.Store(location).close()
    res = results(str(tmp_path), n)
    run_children(spawn_ctx, mw.facts_child, [(location, i, facts, rounds, res[i]) for i in range(n)])
    with filemem.Store(location) as store:
        sem = Semantic(store, ("team", "facts"))
        got = sem.all()
        assert len(got) == len(facts)  # every spelling merged into one record per fact
        for f in got:
            assert f.evidence == n * rounds  # no lost merge
            assert sorted(f.sources) == [f"worker-{i}" for i in range(n)]
            assert abs(f.confidence - (1 - 0.9 ** (n * rounds))) < 1e-9  # noisy-OR of 20 x 0.1
        assert store.check() == []


def test_skill_uses_from_eight_processes_are_exact(location: str, tmp_path: Any, spawn_ctx: Any) -> None:
    n, m = 8, 40
    filemem.Store(location).close()
    with filemem.Store(location) as s:
        Skills(s, ("team", "skills")).add("login", ["open", "submit"])
    res = results(str(tmp_path), n)
    run_children(spawn_ctx, mw.skills_child, [(location, i, m, res[i]) for i in range(n)])
    ok = sum(read_result(r)["ok"] for r in res)
    with filemem.Store(location) as store:
        skills = Skills(store, ("team", "skills"))
        login = skills.get("login")
        assert login is not None and login.steps == ["open", "submit"]  # the definition survived the uses
        assert login.uses == n * m and login.successes == ok == n * m // 2
        assert login.success_rate == 0.5 and abs(login.total_duration_s - 0.5 * n * m) < 1e-6
        cat = skills.get("search the catalogue")
        assert cat is not None and cat.uses == n * m and cat.success_rate == 1.0
        assert store.check() == []


def test_site_visits_from_eight_processes_are_exact(location: str, tmp_path: Any, spawn_ctx: Any) -> None:
    n, m = 8, 40
    filemem.Store(location).close()
    res = results(str(tmp_path), n)
    run_children(spawn_ctx, mw.sites_child, [(location, i, m, res[i]) for i in range(n)])
    with filemem.Store(location) as store:
        sites = Sites(store, ("team", "sites"))
        login = sites.site("https://example.com/login")
        assert login is not None
        assert login.visits == n * m  # two spellings, one URL
        assert login.successes == n * (m - m // 4)
        assert abs(login.mean_duration_s - 0.25) < 1e-9 and login.last_duration_s == 0.25
        assert len(login.notes) == 5
        search = sites.site("https://example.com/search?q=x")
        assert search is not None and search.visits == n * (m // 5)
        dom = sites.domain("example.com")
        assert dom is not None and dom.visits == login.visits + search.visits
        assert dom.successes == login.successes + search.successes
        top = sites.top_sites(1)
        assert top[0].url == "https://example.com/login"
        assert store.check() == []


def test_summaries_are_made_while_writers_keep_appending(location: str, tmp_path: Any, spawn_ctx: Any) -> None:
    """Four processes append (triggering background summaries themselves) while the parent summarises too."""
    n, m = 4, 60
    filemem.Store(location).close()
    res = results(str(tmp_path), n)
    made: list[filemem.memory.Summary] = []
    with filemem.Store(location) as store, Worklog(store, ("team", "worklog")) as log:
        import threading

        stop = threading.Event()

        def summarise_meanwhile() -> None:
            while not stop.is_set():
                if log.count("shared"):
                    made.append(log.summarize("shared").result(30))
                time.sleep(0.02)

        t = threading.Thread(target=summarise_meanwhile)
        t.start()
        try:
            started = time.monotonic()
            run_children(spawn_ctx, mw.worklog_child, [(location, i, m, res[i]) for i in range(n)])
            append_window = time.monotonic() - started
        finally:
            stop.set()
            t.join(30)
        assert log.count("shared") == n * m
        entries = log.entries("shared")
        assert len(entries) == n * m
        assert {e.id for e in entries} == {i for r in res for i in read_result(r)["ids"]}
        # Summaries were made during the appends, of a log that kept growing.
        partial = [s for s in made if 0 < s.entries < n * m]
        assert partial, f"no summary while appending ({len(made)} made in {append_window:.2f}s)"
        assert [s.entries for s in made] == sorted(s.entries for s in made)  # stored summaries never go back
        final = log.summarize("shared").result(30)
        assert final.entries == n * m and final.upto == entries[-1].id
        assert final.text and len(final.text) <= 600
        assert log.summary("shared") == final
        assert store.check() == []


def test_generation_cache_shared_by_four_processes_has_one_entry_per_prompt(
    location: str, tmp_path: Any, spawn_ctx: Any
) -> None:
    n = 4
    prompts = [f"prompt {i}" for i in range(12)]
    filemem.Store(location).close()
    res = results(str(tmp_path), n)
    run_children(spawn_ctx, mw.gencache_child, [(location, i, prompts, res[i]) for i in range(n)])
    outs = [read_result(r) for r in res]
    for o in outs:  # every process got the right answer for every prompt, generated or cached
        assert o["out"] == {p: {"answer": p.upper()} for p in prompts}
    assert len(prompts) <= sum(o["made"] for o in outs) < n * len(prompts)  # most answers came from the cache
    with filemem.Store(location) as store:
        from filemem.memory import GenerationCache

        assert sum(len(store.keys(ns)) for ns in store.list_namespaces(("team", "gen"))) == len(prompts)
        assert GenerationCache(store, ("team", "gen")).invalidate(prefix="prompt 1") == 3  # 1, 10, 11
        assert store.check() == []


def test_sigkill_mid_work_leaves_url_and_domain_counts_equal_and_no_acked_write_lost(
    location: str, tmp_path: Any, spawn_ctx: Any
) -> None:
    """A visit updates URL and domain in one batch, an append writes entry and count in one batch:
    killed at any instant, the pairs still agree, and every acknowledged call is there."""
    from tests.concurrency import _workers as cw
    from tests.helpers import reap

    filemem.Store(location).close()
    tmp = str(tmp_path)
    for round_ in range(3):
        acks, ready = os.path.join(tmp, f"acks{round_}"), os.path.join(tmp, f"ready{round_}")
        p = cw.start(spawn_ctx, mw.crash_child, (location, acks, ready))
        try:
            cw.wait_for(ready, p)
            time.sleep(0.3 + 0.1 * round_)
            cw.sigkill(p)
        finally:
            reap([p], timeout=0)
    acked = [a for r in range(3) for a in cw.read_acks(os.path.join(tmp, f"acks{r}"))]
    visits_acked = sum(1 for a in acked if a[0] == "visit")
    appends_acked = sum(1 for a in acked if a[0] == "append")
    assert visits_acked > 0 and appends_acked > 0
    with filemem.Store(location) as store:  # opening rolls forward any committed batch a dead writer left
        sites = Sites(store, ("crash", "sites"))
        url, dom = sites.site("https://a.example/x"), sites.domain("a.example")
        assert url is not None and dom is not None
        assert url.visits == dom.visits and url.successes == dom.successes  # one batch: both or neither
        assert visits_acked <= url.visits <= visits_acked + 3  # at most one unacked visit per kill
        log = Worklog(store, ("crash", "worklog"))
        count, entries = log.count("s"), len(log.entries("s"))
        assert count == entries and appends_acked <= entries <= appends_acked + 3
        log.close()
        findings = store.check(fix=True)
        assert all(f.fixed or f.severity != "error" for f in findings), findings
        assert store.check() == []
