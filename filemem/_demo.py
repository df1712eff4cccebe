"""The main job: a planner and several worker agents, as real processes, sharing one store (layer L5).

``filemem demo`` starts a planner and N workers through the memory kinds
(``filemem.memory``). The planner defines skills, learns the ground rules as
facts and writes its plan to a worklog; then, while the workers run, it keeps
summarising their worklogs in the background. Each worker, every round, picks
a task, uses a skill (exact shared counts), visits a site (exact per-URL and
per-domain figures), records an episode, appends to its worklog and, now and
then, learns a fact that other workers learn too (merged, never duplicated).

The parent then checks that nothing was lost: skill uses and site visits add
up to exactly workers x rounds, every episode is there, each shared fact is
one record whose evidence counts every learner; it prints the assembled
context an agent would get for a question, and checks that the store is clean.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._backends import is_server_url
from ._store import Store
from .memory import Episodic, Semantic, Sites, Skills, Worklog, recall_context

__all__ = ["DemoReport", "run_demo"]

DEFAULT_DIR = "filemem-demo"

_SKILLS = {
    "fetch a page": ["open the URL", "wait for load", "save the HTML"],
    "fill a form": ["find the form", "fill the fields", "submit", "check the confirmation"],
    "parse a table": ["locate the table", "read the header", "read every row"],
}
_SITES = [
    "https://shop.example/cart",
    "https://shop.example/search",
    "https://docs.example/api",
    "https://news.example/",
]
_FACTS = [
    "The shop search page needs a session cookie.",
    "docs.example rate-limits to 10 requests a second.",
    "Forms on shop.example reject empty postcodes.",
]


def _ns(run: str) -> dict[str, tuple[str, ...]]:
    base = ("demo", run)
    return {k: (*base, k) for k in ("episodes", "facts", "skills", "sites", "worklog")}


def _planner(path: str, run: str, workers: int, rounds: int, durability: str) -> None:
    ns = _ns(run)
    with Store(path, durability=durability) as store, Worklog(store, ns["worklog"], summarize_every=None) as log:  # type: ignore[arg-type]
        skills, facts = Skills(store, ns["skills"]), Semantic(store, ns["facts"])
        for name, steps in _SKILLS.items():
            skills.add(name, steps, preconditions=["a browser session"])
        facts.learn("Every worker reports to its own worklog.", 1.0, source="planner")
        log.append("planner", f"Plan: {workers} workers x {rounds} rounds over {len(_SITES)} sites.")
        log.append("planner", "Assigned tasks round-robin; skills defined: " + ", ".join(_SKILLS) + ".")
        # Summarise the workers' logs while they keep appending: the writers never wait for it.
        expected = workers * rounds
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = sum(s.uses for s in skills.all())
            for w in range(workers):
                if log.count(f"worker-{w}"):
                    log.summarize(f"worker-{w}")
            if done >= expected:
                break
            time.sleep(0.05)
        log.append("planner", "All workers finished; summaries refreshed.")
        for w in range(workers):
            log.summarize(f"worker-{w}")
        log.summarize("planner")


def _worker(path: str, run: str, worker: int, rounds: int, durability: str) -> None:
    ns = _ns(run)
    with Store(path, durability=durability) as store, Worklog(store, ns["worklog"], summarize_every=25) as log:  # type: ignore[arg-type]
        episodes, facts = Episodic(store, ns["episodes"]), Semantic(store, ns["facts"])
        skills, sites = Skills(store, ns["skills"]), Sites(store, ns["sites"])
        names = list(_SKILLS)
        for i in range(rounds):
            skill = names[(worker + i) % len(names)]
            url = _SITES[(worker * 7 + i) % len(_SITES)]
            ok = (worker + i) % 7 != 0
            t0 = time.perf_counter()
            sites.record_visit(
                url, 0.05 + (i % 5) * 0.01, success=ok, notes=None if ok else f"worker {worker}: timeout"
            )
            skills.record_use(skill, ok, time.perf_counter() - t0)
            episodes.record(
                f"{skill} on {url}",
                _SKILLS[skill],
                "done" if ok else "timed out",
                ok,
                tags=[skill.split()[0]],
                metadata={"worker": worker, "round": i},
            )
            log.append(f"worker-{worker}", f"Round {i}: {skill} on {url} {'succeeded' if ok else 'timed out'}.")
            if i % 10 == 0:
                fact = _FACTS[(i // 10) % len(_FACTS)]
                facts.learn(fact if worker % 2 else fact.lower(), 0.3, source=f"worker-{worker}")


@dataclass
class DemoReport:
    """What a demo run found (also printed by ``filemem demo``).

    ``counted_episodes`` is the sum of the shared skill-use counters (one use
    per round), ``stored_episodes`` the episodes streamed back; both must equal
    ``expected_episodes``.
    """

    path: str
    run: str
    workers: int
    rounds: int
    seconds: float
    expected_episodes: int
    counted_episodes: int
    stored_episodes: int
    facts: int
    namespaces: int
    shards: int
    problems: list[str]
    site_visits: int = 0
    worklog_entries: int = 0
    summaries: int = 0
    context: str = ""
    failed_sources: dict[str, str] = field(default_factory=dict)

    @property
    def lost_updates(self) -> int:
        """Increments that did not survive (must be 0)."""
        return self.expected_episodes - self.counted_episodes

    @property
    def ok(self) -> bool:
        """True when nothing was lost and the store checks clean."""
        return self.lost_updates == 0 and self.stored_episodes == self.expected_episodes and not self.problems


def _shard_files(store: Store, namespaces: list[tuple[str, ...]]) -> int:
    """Shard files under the demo's namespaces (0 on a server: its rows live in tables)."""
    if store.backend != "file":
        return 0
    return sum(1 for n in namespaces for name in os.listdir(store._engine.ns_dir(n)) if name.endswith(".shard"))


def _join(procs: Sequence[mp.process.BaseProcess]) -> None:
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()


def run_demo(
    path: str | None = None,
    *,
    workers: int = 4,
    rounds: int = 100,
    durability: str = "fsync",
    echo: Callable[[str], Any] = print,
) -> DemoReport:
    """Run the demo and return its report.

    >>> where = os.path.join(tempfile.mkdtemp(), "demo-store")  # doctest: +SKIP
    >>> report = run_demo(where, workers=2, rounds=20, echo=lambda s: None)  # doctest: +SKIP
    >>> report.lost_updates
    0
    """
    path = path or os.environ.get("FILEMEM_DEMO_DIR", DEFAULT_DIR)
    if not is_server_url(path):
        path = os.path.abspath(path)
    # else a postgresql:// URL: the agents share the server store (issue 16);
    # the memory kinds search by a scan until the server has a keyword index.
    run = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    where = path
    with Store(path) as store:  # create it once, before the agents race to
        where = store.path  # a URL without its password
    echo(f"filemem demo: a planner and {workers} worker processes x {rounds} rounds sharing {where} (run {run})")
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    procs = [ctx.Process(target=_planner, args=(path, run, workers, rounds, durability), name="planner")]
    procs += [
        ctx.Process(target=_worker, args=(path, run, w, rounds, durability), name=f"worker-{w}") for w in range(workers)
    ]
    for p in procs:
        p.start()
    _join(procs)
    seconds = time.perf_counter() - started
    problems = [f"{p.name} exited with code {p.exitcode}" for p in procs if p.exitcode != 0]
    ns = _ns(run)
    expected = workers * rounds
    with Store(path) as store, Worklog(store, ns["worklog"], summarize_every=None) as log:
        episodes, facts = Episodic(store, ns["episodes"]), Semantic(store, ns["facts"])
        skills, sites = Skills(store, ns["skills"]), Sites(store, ns["sites"])
        all_skills = skills.all()
        counted = sum(s.uses for s in all_skills)
        stored = sum(1 for _ in episodes.stream())
        all_facts = facts.all()
        visits = sum(d.visits for d in sites.top_domains(100))
        if visits != expected:
            problems.append(f"site visits: {visits}, expected {expected}")
        for s in all_skills:
            if s.name in _SKILLS and s.steps != _SKILLS[s.name]:
                problems.append(f"skill {s.name!r} lost its definition")
        learned = {f.text.casefold(): f for f in all_facts}
        for fact in _FACTS[: min(len(_FACTS), (rounds + 9) // 10)]:
            got = learned.get(fact.casefold())
            want = workers * len(range(_FACTS.index(fact) * 10, rounds, len(_FACTS) * 10))
            if got is None or got.evidence != want:
                problems.append(f"fact {fact!r}: evidence {got.evidence if got else 0}, expected {want}")
        entries = sum(log.count(f"worker-{w}") for w in range(workers))
        if entries != expected:
            problems.append(f"worklog entries: {entries}, expected {expected}")
        summaries = [sm for sid in log.sessions() if (sm := log.summary(sid)) is not None]
        context = recall_context(
            "search page timeout on shop.example", [facts, skills, episodes, sites, log], budget_chars=900, timeout_s=5
        )
        namespaces = store.list_namespaces(("demo", run))
        shards = _shard_files(store, namespaces)
        findings = store.check()
        problems.extend(f"check: {f.code} {f.path}" for f in findings)
        recent = episodes.recent(3)
        top = sites.top_sites(3)
        planner_summary = log.summary("planner")
    report = DemoReport(
        where,
        run,
        workers,
        rounds,
        seconds,
        expected,
        counted,
        stored,
        len(all_facts),
        len(namespaces),
        shards,
        problems,
        visits,
        entries,
        len(summaries),
        context.text,
        dict(context.failed),
    )
    echo("")
    echo("the three newest episodes:")
    for e in recent:
        echo(f"  {e.id}  worker {e.metadata['worker']}: {e.text()}")
    echo("facts (merged across workers):")
    for f in all_facts:
        echo(f"  {f.confidence:.2f} x{f.evidence:<3} {f.text}")
    echo("skills (exact shared counts):")
    for s in all_skills:
        echo(f"  {s.name:14} {s.uses:5} uses, {s.success_rate:.0%} success")
    echo("top sites:")
    for t in top:
        echo(f"  {t.url:28} {t.visits:5} visits, {t.success_rate:.0%} ok, mean {t.mean_duration_s:.3f}s")
    if planner_summary is not None:
        echo(f"planner's worklog summary: {planner_summary.text}")
    echo("context for 'search page timeout on shop.example':")
    for line in context.text.splitlines():
        echo(f"  {line}")
    echo("")
    echo(f"namespaces           {report.namespaces}")
    echo(f"shard files          {report.shards}")
    echo(f"episodes stored      {report.stored_episodes} (expected {report.expected_episodes})")
    echo(f"skill uses counted   {report.counted_episodes} (expected {report.expected_episodes})")
    echo(f"site visits          {report.site_visits} (expected {report.expected_episodes})")
    echo(f"lost updates         {report.lost_updates}")
    echo(f"facts (merged)       {report.facts}")
    echo(f"worklog summaries    {report.summaries}")
    echo(f"time                 {report.seconds:.2f}s")
    echo(f"store check          {'clean' if not findings else f'{len(findings)} finding(s)'}")
    echo(
        "result               "
        + ("OK: nothing lost, nothing torn" if report.ok else "PROBLEMS: " + "; ".join(problems))
    )
    return report
