"""Proactive health and self-maintenance (layer L5; docs/health.md).

One mechanism per module:

* ``_types``     HealthFinding, MaintenanceStep, MaintenanceReport
* ``_shards``    every shard read once: expired records, tiny siblings, splits, oversize, damage
* ``_locks``     shard locks that cannot be had within a short window (the honest probe)
* ``_probes``    sessions, collector journals, dead letters, search indexes
* ``_diagnose``  ``Store.health()``: all of the above, most severe first
* ``_run``       ``Store.maintain()``: each finding handed to the code that already does that job
* ``_facet``     the Store facet
"""

from __future__ import annotations

from ._facet import HealthFacet
from ._locks import LOCK_WINDOW_S
from ._types import HealthFinding, MaintenanceReport, MaintenanceStep

__all__ = ["LOCK_WINDOW_S", "HealthFacet", "HealthFinding", "MaintenanceReport", "MaintenanceStep"]
