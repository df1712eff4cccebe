"""The demo (the README's main job) runs its agents through the memory kinds and loses nothing."""

from __future__ import annotations

from filemem._demo import run_demo


def test_demo_planner_and_workers_lose_nothing(tmp_path: object) -> None:
    lines: list[str] = []
    report = run_demo(str(tmp_path) + "/demo", workers=3, rounds=25, durability="flush", echo=lines.append)
    assert report.ok, report.problems
    assert report.counted_episodes == report.stored_episodes == report.site_visits == report.worklog_entries == 75
    assert report.facts == 4  # three shared facts merged across workers, one from the planner
    assert report.summaries == 4  # the planner's and each worker's
    assert report.failed_sources == {} and "[facts]" in report.context
    assert any(line.startswith("result") and "OK" in line for line in lines)
