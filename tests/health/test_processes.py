"""maintain() running over and over while four agent processes write: nothing lost, nobody held up (issue 15)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import filemem
from tests.helpers import reap

from ._workers import agent_child

AGENTS = 4
ROUNDS = 150


def _expected_churn(agent: int) -> set[str]:
    live: set[str] = set()
    for i in range(ROUNDS):
        live.add(f"k{agent}-{i % 40}")
        live.discard(f"k{agent}-{(i + 20) % 40}")
    return live


def test_maintain_while_four_agents_write(store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext) -> None:
    filemem.Store(store_path, shard_max_bytes=2048).close()
    results = [str(tmp_path / f"result-{a}") for a in range(AGENTS)]
    procs = [spawn_ctx.Process(target=agent_child, args=(store_path, a, ROUNDS, results[a])) for a in range(AGENTS)]
    totals: dict[str, int] = {}
    runs = 0
    try:
        for p in procs:
            p.start()
        with filemem.Store(store_path, shard_max_bytes=2048, durability="flush") as store:
            while any(p.is_alive() for p in procs) or runs == 0:
                report = store.maintain(budget_s=1.0, lock_probe_s=0.05)
                runs += 1
                for k, v in report.counts.items():
                    totals[k] = totals.get(k, 0) + v
        for p in procs:
            p.join(60)
            assert p.exitcode == 0, f"agent {p.name} failed (exit {p.exitcode})"
    finally:
        reap(procs)
    outcomes = []
    for path in results:
        with open(path, encoding="utf-8") as fh:
            outcomes.append(json.load(fh))
    assert [o["timeouts"] for o in outcomes] == [0] * AGENTS, outcomes
    # Maintenance had real work while the agents ran (short-lived records expire all the time).
    assert runs >= 2 and totals["expired_dropped"] > 0, (runs, totals)
    with filemem.Store(store_path, shard_max_bytes=2048, consistency="strict") as store:
        assert sum(store.get("counters", f"c{i}") for i in range(4)) == AGENTS * ROUNDS
        counters = [store.get("counters", f"c{i}") for i in range(4)]
        assert counters == [AGENTS * len(range(i, ROUNDS, 4)) for i in range(4)]
        churn = set(store.keys("churn"))
        assert churn == set().union(*(_expected_churn(a) for a in range(AGENTS)))
        for key in churn:
            assert store.get("churn", key)["pad"] == "y" * 60
        final = store.maintain()
        assert final.remaining == ()
        assert store.health() == [] and store.check() == []
    assert not [n for n in os.listdir(store_path) if ".tmp" in n]
