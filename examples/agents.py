"""A planner and several worker agents, each its own OS process, sharing memory through filemem.memory.

Run it::

    python examples/agents.py ./agents-store --workers 4 --rounds 20

The planner defines the skills and the ground rules, starts the workers as
separate programs (``python examples/agents.py STORE worker N``), and while
they run it keeps their worklog summaries fresh. Odd-numbered workers use the
async faces over ``filemem.AsyncStore``, even ones the sync faces over
``filemem.Store``: both see the same memories. At the end the planner checks
the shared figures and prints the context a new agent would get.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import filemem
from filemem.memory import (
    AsyncEpisodic,
    AsyncSemantic,
    AsyncSites,
    AsyncSkills,
    AsyncWorklog,
    Episodic,
    Semantic,
    Sites,
    Skills,
    Worklog,
    recall_context,
)

SKILLS = {
    "search the catalogue": ["open /search", "type the query", "read the results"],
    "check out": ["open /cart", "fill the address", "pay"],
}
URLS = ["https://shop.example/search", "https://shop.example/cart"]


def work(n: int, rounds: int) -> tuple[str, str, bool, float]:
    """What worker ``n`` does in round ``rounds``: (skill, url, success, seconds). A stand-in for real work."""
    skill = list(SKILLS)[(n + rounds) % len(SKILLS)]
    return skill, URLS[list(SKILLS).index(skill)], (n + rounds) % 5 != 0, 0.01 * (1 + rounds % 3)


def sync_worker(path: str, n: int, rounds: int) -> None:
    with filemem.Store(path) as store, Worklog(store, summarize_every=10) as log:
        episodes, facts, skills, sites = Episodic(store), Semantic(store), Skills(store), Sites(store)
        for i in range(rounds):
            skill, url, ok, secs = work(n, i)
            skills.record_use(skill, ok, secs)
            sites.record_visit(url, secs, success=ok)
            episodes.record(skill, SKILLS[skill], "ok" if ok else "payment page timed out", ok, metadata={"worker": n})
            log.append(f"worker-{n}", f"Round {i}: {skill} {'worked' if ok else 'failed'}.")
            if not ok:
                facts.learn("The payment page times out under load.", 0.4, source=f"worker-{n}")


async def async_worker(path: str, n: int, rounds: int) -> None:
    async with filemem.AsyncStore(path) as store, AsyncWorklog(store, summarize_every=10) as log:
        episodes, facts, skills, sites = (
            AsyncEpisodic(store),
            AsyncSemantic(store),
            AsyncSkills(store),
            AsyncSites(store),
        )
        for i in range(rounds):
            skill, url, ok, secs = work(n, i)
            await asyncio.gather(skills.record_use(skill, ok, secs), sites.record_visit(url, secs, success=ok))
            await episodes.record(
                skill, SKILLS[skill], "ok" if ok else "payment page timed out", ok, metadata={"worker": n}
            )
            await log.append(f"worker-{n}", f"Round {i}: {skill} {'worked' if ok else 'failed'}.")
            if not ok:
                await facts.learn("the payment page times out under load", 0.4, source=f"worker-{n}")


def planner(path: str, workers: int, rounds: int) -> int:
    with filemem.Store(path) as store, Worklog(store, summarize_every=None) as log:
        skills, facts = Skills(store), Semantic(store)
        for name, steps in SKILLS.items():
            skills.add(name, steps, preconditions=["logged in"])
        facts.learn("Always search before checking out.", 0.9, source="planner")
        log.append("planner", f"Started {workers} workers for {rounds} rounds each.")
        procs = [
            # This very script, with the current interpreter: no untrusted input reaches the command.
            subprocess.Popen([sys.executable, __file__, path, "worker", str(n), "--rounds", str(rounds)])  # noqa: S603
            for n in range(workers)
        ]
        try:
            while any(p.poll() is None for p in procs):
                for n in range(workers):  # background summaries while the workers append
                    if log.count(f"worker-{n}"):
                        log.summarize(f"worker-{n}")
                time.sleep(0.1)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
        failed = [n for n, p in enumerate(procs) if p.returncode != 0]
        for n in range(workers):
            log.summarize(f"worker-{n}").result()
        uses = sum(s.uses for s in skills.all())
        visits = sum(d.visits for d in Sites(store).top_domains())
        stored = sum(1 for _ in Episodic(store).stream())
        fact = facts.get("The payment page times out under load.")
        print(f"skill uses {uses}, site visits {visits}, episodes {stored} (expected {workers * rounds} each)")
        if fact is not None:
            print(f"merged fact: {fact.text!r} evidence {fact.evidence}, confidence {fact.confidence:.2f}")
        for n in range(workers):
            s = log.summary(f"worker-{n}")
            print(f"worker-{n} summary ({s.entries if s else 0} entries): {s.text if s else '-'}")
        ctx = recall_context("payment timed out", [facts, skills, Episodic(store), log], budget_chars=600)
        print("context for a new agent:")
        print(ctx.text)
        ok = not failed and uses == visits == stored == workers * rounds and store.check() == []
        print("OK" if ok else f"PROBLEMS (failed workers: {failed})")
        return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("role", nargs="?", default="planner", choices=["planner", "worker"])
    parser.add_argument("n", nargs="?", type=int, default=0, help="worker number")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.role == "planner":
        return planner(args.store, args.workers, args.rounds)
    if args.n % 2:
        asyncio.run(async_worker(args.store, args.n, args.rounds))
    else:
        sync_worker(args.store, args.n, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
