"""Child-process entry points for the memory-kind tests (spawn context: module level, picklable args).

Children report through result files written by rename (see tests/concurrency/_workers.py).
"""

from __future__ import annotations

import time
from typing import Any

from filemem import Store
from filemem.memory import Episodic, Semantic, Sites, Skills, Worklog
from tests.concurrency._workers import write_result

FAST: dict[str, Any] = {"durability": "flush"}


def episodes_child(path: str, wid: int, m: int, result_path: str, barrier: Any) -> None:
    """Record ``m`` episodes; report their ids in the order recorded."""
    with Store(path, **FAST) as store:
        eps = Episodic(store, ("team", "episodes"))
        barrier.wait(60)
        ids = [
            eps.record(f"task {wid}-{i}", [f"step {i}"], "done", i % 3 != 0, metadata={"worker": wid}) for i in range(m)
        ]
        write_result(result_path, {"ids": ids})


def facts_child(path: str, wid: int, facts: list[str], rounds: int, result_path: str, barrier: Any) -> None:
    """Learn every fact ``rounds`` times, spelled differently by each worker."""
    with Store(path, **FAST) as store:
        sem = Semantic(store, ("team", "facts"))
        barrier.wait(60)
        for r in range(rounds):
            for f in facts:
                text = f.upper() + "." if (wid + r) % 2 else f"  {f}  "
                sem.learn(text, 0.1, source=f"worker-{wid}")
        write_result(result_path, {"ok": True})


def skills_child(path: str, wid: int, m: int, result_path: str, barrier: Any) -> None:
    """Use two skills ``m`` times each; successes on even i; report what was counted."""
    with Store(path, **FAST) as store:
        skills = Skills(store, ("team", "skills"))
        barrier.wait(60)
        ok = 0
        for i in range(m):
            skills.record_use("login", i % 2 == 0, 0.5)
            skills.record_use("search the catalogue", True, 1.0)
            ok += i % 2 == 0
        write_result(result_path, {"ok": ok})


def sites_child(path: str, wid: int, m: int, result_path: str, barrier: Any) -> None:
    """Visit one URL ``m`` times (spelled two ways) and a second URL of the same domain once per 5."""
    with Store(path, **FAST) as store:
        sites = Sites(store, ("team", "sites"))
        barrier.wait(60)
        for i in range(m):
            url = "https://Example.com/login" if i % 2 else "https://example.com:443/login#form"
            sites.record_visit(url, 0.25, success=i % 4 != 0, notes=f"w{wid}-{i}")
            if i % 5 == 0:
                sites.record_visit("https://example.com/search?q=x", 1.0)
        write_result(result_path, {"ok": True})


def worklog_child(path: str, wid: int, m: int, result_path: str, barrier: Any) -> None:
    """Append ``m`` entries to one shared session (summaries triggered by growth run in the background)."""
    with Store(path, **FAST) as store, Worklog(store, ("team", "worklog"), summarize_every=10) as log:
        barrier.wait(60)
        ids = []
        for i in range(m):
            ids.append(log.append("shared", f"Worker {wid} finished step {i}. Result was fine."))
            if i % 10 == 0:
                time.sleep(0.001)
        write_result(result_path, {"ids": ids})


def crash_child(path: str, ack_path: str, ready_path: str) -> None:
    """Record visits and worklog appends, acking each after it returned; runs until SIGKILLed."""
    from tests.concurrency._workers import ack, open_ack, touch

    fd = open_ack(ack_path)
    with Store(path, **FAST) as store:
        sites = Sites(store, ("crash", "sites"))
        log = Worklog(store, ("crash", "worklog"), summarize_every=5)
        touch(ready_path)
        i = 0
        while True:
            sites.record_visit("https://a.example/x", 0.1, success=i % 2 == 0)
            ack(fd, "visit", i)
            log.append("s", f"entry {i}")
            ack(fd, "append", i)
            i += 1


def gencache_child(path: str, wid: int, prompts: list[str], result_path: str, barrier: Any) -> None:
    """get_or_generate every prompt (in a worker-specific order); count own generations."""
    from filemem.memory import GenerationCache

    with Store(path, **FAST) as store:
        cache = GenerationCache(store, ("team", "gen"), ttl_s=600)
        made = 0

        def gen(p: str) -> Any:
            nonlocal made
            made += 1
            return {"answer": p.upper()}

        barrier.wait(60)
        out = {}
        order = prompts[wid:] + prompts[:wid]
        for p in order:
            out[p] = cache.get_or_generate("m", p, lambda p=p: gen(p), params={"t": 0})
        write_result(result_path, {"made": made, "out": out})
