"""The fire-and-forget collector with a durable journal (layer L4; docs/collector.md).

One mechanism per module:

* ``_config``     CollectorConfig: defaults, TOML file, environment variables
* ``_journal``    the journal file: framing, the owner's writer, the reader
* ``_applied``    the marker of applied journal ids (exactly-once replay)
* ``_replay``     replaying dead collectors' journals; check() findings
* ``_breaker``    retry backoff and the circuit breaker
* ``_deadletter`` dead-letter files: append, list, replay
* ``_writer``     Collector: collect, the queue, the journal thread, flush/close, stats
* ``_apply``      the apply thread: batches, retries, breaker, dead letters, truncation
"""

from __future__ import annotations

from .._check import register_check
from ._config import CollectorConfig as CollectorConfig
from ._deadletter import DeadLetter as DeadLetter
from ._deadletter import list_dead_letters as list_dead_letters
from ._deadletter import replay_dead_letters as replay_dead_letters
from ._replay import check_journals as check_journals
from ._replay import recover_journals as recover_journals
from ._writer import PRIORITIES as PRIORITIES
from ._writer import Collector as Collector

__all__ = [
    "PRIORITIES",
    "Collector",
    "CollectorConfig",
    "DeadLetter",
    "check_journals",
    "list_dead_letters",
    "recover_journals",
    "replay_dead_letters",
]

# store.check() reports journals of dead collectors and torn journal tails.
register_check(check_journals)
