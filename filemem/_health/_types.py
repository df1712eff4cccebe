"""What ``Store.health()`` and ``Store.maintain()`` return: findings, steps, the report (layer L5).

Plain frozen data, JSON-friendly through ``as_dict()``, so the command line,
the server and the dashboard all show the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from .._types import Severity

__all__ = ["HealthFinding", "MaintenanceReport", "MaintenanceStep", "StepOutcome"]

#: ``"done"``: carried out; ``"planned"``: a dry run would have; ``"skipped"``:
#: left alone this time (busy, out of budget, or it needs an operator's decision).
StepOutcome: TypeAlias = Literal["done", "planned", "skipped"]


@dataclass(frozen=True, slots=True)
class HealthFinding:
    """One thing :meth:`filemem.Store.health` noticed, with what to do about it.

    ``code`` is stable and machine-readable (the codes are listed in
    docs/health.md); ``severity`` is ``"info"`` (worth doing when convenient),
    ``"warning"`` (act soon) or ``"error"`` (something is wrong now);
    ``message`` says what was seen, ``action`` what to do (and whether
    ``store.maintain()`` does it for you); ``details`` holds the figures.

    Example::

        for f in store.health():
            print(f.severity, f.code, f.message, "->", f.action)
    """

    code: str
    severity: Severity
    message: str
    action: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "action": self.action,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class MaintenanceStep:
    """One unit of work :meth:`filemem.Store.maintain` did, planned or skipped.

    ``code`` is the finding it answers; ``target`` what it worked on (a
    namespace, a shard, a journal, a session); ``detail`` says what happened.
    """

    code: str
    target: str
    outcome: StepOutcome
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON)."""
        return {"code": self.code, "target": self.target, "outcome": self.outcome, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What one :meth:`filemem.Store.maintain` run found and did.

    ``findings``: ``health()`` before the run. ``steps``: each unit of work
    with its outcome. ``counts``: totals (``expired_dropped``, ``splits``,
    ``merges``, ``sessions_cleaned``, ``journals_replayed``,
    ``records_replayed``, ``segments_indexed``, ``busy_skipped``).
    ``out_of_budget``: the run stopped at ``budget_s`` with work left (run it
    again). ``remaining``: findings that this run did not clear (needing an
    operator, skipped as busy, or past the budget).

    Example::

        report = store.maintain(budget_s=5.0)
        print(report.counts["expired_dropped"], [f.code for f in report.remaining])
    """

    dry_run: bool
    started_at: float
    duration_s: float
    findings: tuple[HealthFinding, ...]
    steps: tuple[MaintenanceStep, ...]
    counts: dict[str, int]
    out_of_budget: bool
    remaining: tuple[HealthFinding, ...]

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON)."""
        return {
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "findings": [f.as_dict() for f in self.findings],
            "steps": [s.as_dict() for s in self.steps],
            "counts": dict(self.counts),
            "out_of_budget": self.out_of_budget,
            "remaining": [f.as_dict() for f in self.remaining],
        }
