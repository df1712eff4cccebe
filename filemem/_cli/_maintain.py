"""``filemem maintain``, and the health findings that ``filemem stats`` prints (issue 15)."""

from __future__ import annotations

import argparse
import contextlib
import os

from .. import HealthFinding
from ._base import EXIT_OK, EXIT_PROBLEMS, Output, command, open_for

__all__ = ["show_findings"]

#: How much a maintenance process lowers its own CPU priority (os.nice), so agents come first.
_NICE = 10


def show_findings(out: Output, findings: list[HealthFinding]) -> None:
    """Findings as a table, each followed by its recommended action (for people)."""
    if not findings:
        out.line("health: nothing to do")
        return
    out.line(f"health: {len(findings)} finding(s)")
    for f in findings:
        out.line(f"  {f.severity:<7}  {f.code}: {f.message}")
        out.line(f"  {'':<7}  -> {f.action}")


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _maintain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="change nothing: show what would be done (opens read-only)")
    p.add_argument(
        "--budget",
        type=_budget,
        default=30.0,
        metavar="SECONDS",
        help="take no new step after this long (default 30); run again to continue",
    )


@command(
    "maintain",
    help="carry out what the health findings recommend, at low priority",
    description="Run store.maintain(): sweep expired records, finish interrupted splits, split oversize shards, "
    "merge tiny sibling shards, mark dead sessions crashed and remove their leftovers, replay journals of dead "
    "collectors, rebuild damaged or stale search indexes. Busy shards are skipped (never waited for), each shard "
    "is one small step under its writers' lock, and this process lowers its CPU priority, so running agents come "
    "first. Damaged shards, dead letters, long-held locks and collector backlogs are reported, never acted on. "
    "Exit 1 if a warning or error finding remains (with --dry-run: if there is one).",
    example="filemem maintain ./memories --dry-run",
    store="write",
    arguments=_maintain_args,
)
def _maintain(args: argparse.Namespace, out: Output) -> int:
    if not args.dry_run:
        with contextlib.suppress(AttributeError, OSError):  # no os.nice on Windows; a limit may forbid it
            os.nice(_NICE)
    with open_for(args, write=not args.dry_run) as store:
        report = store.maintain(budget_s=args.budget, dry_run=args.dry_run)
    serious = any(f.severity in ("warning", "error") for f in report.remaining)
    if out.json:
        out.emit(report.as_dict())
        return EXIT_PROBLEMS if serious else EXIT_OK
    show_findings(out, list(report.findings))
    if report.steps:
        out.line()
        out.table(
            ["OUTCOME", "CODE", "TARGET", "DETAIL"],
            [[s.outcome, s.code, s.target, s.detail] for s in report.steps],
        )
    out.line()
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.counts.items() if v) or "nothing changed"
    out.line(f"{'dry run' if report.dry_run else 'done'} in {report.duration_s:.2f} s: {counts}")
    if report.out_of_budget:
        out.line(f"stopped at the {args.budget:g} s budget with work left: run filemem maintain again")
    if report.remaining and not report.dry_run:
        out.line("left for you: " + ", ".join(sorted({f.code for f in report.remaining})))
    return EXIT_PROBLEMS if serious else EXIT_OK
