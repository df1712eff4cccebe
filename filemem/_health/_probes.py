"""Health of what lives beside the shards: sessions, collector journals, dead letters, search indexes (layer L5).

Every probe only reads (and, for liveness, takes a lock for an instant
without waiting), so it is safe on a live store and on a read-only one. Each
returns :class:`HealthFinding` objects; the thresholds are the ``Final``
constants below (docs/health.md lists them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .. import _fs, _locks
from .._collector import Collector, list_dead_letters
from .._collector._applied import read_marker
from .._collector._deadletter import PREFIX as DL_PREFIX
from .._collector._deadletter import SUFFIX as DL_SUFFIX
from .._collector._journal import JOURNAL_SUFFIX, read_journal
from .._engine import INDEX_DIR, JOURNAL_DIR, Engine
from .._errors import FileMemError, StorageError
from .._names import escape_segment
from .._search._indexfile import parse_index_name, read_index
from .._sessions import check_sessions
from .._sessions._registry import Registry
from ._types import HealthFinding

__all__ = [
    "IndexState",
    "collector_findings",
    "dead_letter_findings",
    "index_findings",
    "index_states",
    "session_findings",
]

#: Dead letters written within this many seconds make the file "growing" (a warning).
DEADLETTER_RECENT_S: Final = 3600.0
#: A collector journal owes the store too much when it holds this many unapplied
#: records, or its oldest unapplied record is this old.
BACKLOG_WARN_RECORDS: Final = 10_000
BACKLOG_WARN_AGE_S: Final = 60.0
#: A namespace's search index is worth rebuilding when at least this share of
#: its shards have no current segment in the index files.
INDEX_STALE_FRACTION: Final = 0.5
_TOP: Final = 20

_SESSION_DEAD: Final = frozenset({"dead-session"})
_SESSION_LEFTOVER: Final = frozenset({"orphan-session-lock", "stale-stop-request", "stale-ticket", "temp-file"})
_SESSION_DAMAGED: Final = frozenset({"corrupt-session", "corrupt-limits"})


def _ns(namespace: tuple[str, ...]) -> str:
    return "/".join(namespace)


# ---------------------------------------------------------------------- sessions


def session_findings(registry: Registry) -> list[HealthFinding]:
    """Dead sessions nobody has marked crashed yet, their leftovers, damaged session files."""
    found = check_sessions(registry, fix=False)
    out: list[HealthFinding] = []
    dead = [f for f in found if f.code in _SESSION_DEAD]
    if dead:
        ids = [os.path.basename(f.path).rsplit(".", 1)[0] for f in dead]
        out.append(
            HealthFinding(
                "dead-sessions",
                "warning",
                f"{len(dead)} session(s) say waiting/running but their process is gone (crashed): they still "
                "count against session limits until someone marks them",
                "clean up: store.maintain() or `filemem maintain PATH` marks them crashed (so does any "
                "store.sessions() call that looks at them)",
                {"sessions": ids[:_TOP], "count": len(dead)},
            )
        )
    left = [f for f in found if f.code in _SESSION_LEFTOVER]
    if left:
        out.append(
            HealthFinding(
                "session-leftovers",
                "info",
                f"{len(left)} file(s) left by sessions that ended or crashed (locks, stop requests, tickets, temps)",
                "remove them: store.maintain() or `filemem maintain PATH`",
                {"count": len(left), "paths": [f.path for f in left][:_TOP]},
            )
        )
    damaged = [f for f in found if f.code in _SESSION_DAMAGED]
    if damaged:
        out.append(
            HealthFinding(
                "damaged-session-file",
                "error",
                f"{len(damaged)} session file(s) do not parse: " + "; ".join(f.message for f in damaged[:3]),
                "run `filemem check PATH --fix` (a damaged limits.json is never touched: rewrite it with "
                "store.limit_sessions())",
                {"paths": [f.path for f in damaged][:_TOP]},
            )
        )
    return out


# ---------------------------------------------------------------------- dead letters


def dead_letter_findings(engine: Engine, now: float) -> list[HealthFinding]:
    """Dead letters waiting for a decision; a warning while the files keep growing."""
    directory = os.path.join(engine.root, JOURNAL_DIR)
    files = [
        os.path.join(directory, n)
        for n in _fs.listdir(directory)
        if n.startswith(DL_PREFIX) and n.endswith(DL_SUFFIX) and _fs.TEMP_MARK not in n
    ]
    if not files:
        return []
    size = 0
    for p in files:
        try:
            size += os.path.getsize(p)
        except FileNotFoundError:
            continue
    letters = list_dead_letters(engine)
    if not letters:
        return []
    recent = sum(1 for d in letters if d.failed_at >= now - DEADLETTER_RECENT_S)
    newest = max(d.failed_at for d in letters)
    reasons: dict[str, int] = {}
    for d in letters:
        reasons[d.reason] = reasons.get(d.reason, 0) + 1
    growing = recent > 0
    return [
        HealthFinding(
            "dead-letters",
            "warning" if growing else "info",
            f"{len(letters)} dead letter(s) ({size} bytes in {len(files)} file(s)): records collectors could not "
            f"apply" + (f"; {recent} added in the last hour (growing)" if growing else ""),
            "look at them with `filemem deadletters PATH` (the error says why), fix the cause, then replay with "
            "`filemem deadletters PATH --replay` or store.replay_dead_letters(); maintain() leaves this decision "
            "to you",
            {
                "letters": len(letters),
                "bytes": size,
                "files": len(files),
                "recent": recent,
                "newest_failed_at": newest,
                "reasons": reasons,
            },
        )
    ]


# ---------------------------------------------------------------------- collectors


def _journals(engine: Engine) -> list[tuple[str, str]]:
    directory = os.path.join(engine.root, JOURNAL_DIR)
    return [
        (n[: -len(JOURNAL_SUFFIX)], os.path.join(directory, n))
        for n in sorted(_fs.listdir(directory))
        if n.endswith(JOURNAL_SUFFIX) and _fs.TEMP_MARK not in n
    ]


def _owner_alive(path: str) -> bool | None:
    """True: a live collector holds the journal; False: its owner is gone; None: retired meanwhile."""
    got = _locks.try_shared_existing(path)
    if got is None:
        return True
    if isinstance(got, _locks.Held):
        got.release()
        return False
    return None


def collector_findings(engine: Engine, collectors: Sequence[Collector], now: float) -> list[HealthFinding]:
    """Journals of dead collectors, backlogs of live ones (any process), breakers open in this process."""
    out: list[HealthFinding] = []
    dead: dict[str, int] = {}
    behind: dict[str, dict[str, Any]] = {}
    for jid, path in _journals(engine):
        alive = _owner_alive(path)
        if alive is None:
            continue
        try:
            # Lock-free: frames are only appended, and fsynced before they
            # count; a read racing an append or a truncation sees a torn tail,
            # which read_journal ignores.
            records, _end, _torn = read_journal(path)
            applied, _at = read_marker(engine, jid)
        except FileMemError:
            continue
        owed = [r for r in records if r.seq not in applied]
        if not alive:
            dead[jid] = len(owed)
            continue
        if owed:
            oldest = min(r.collected_at for r in owed)
            if len(owed) >= BACKLOG_WARN_RECORDS or now - oldest >= BACKLOG_WARN_AGE_S:
                behind[jid] = {"records": len(owed), "oldest_age_s": round(now - oldest, 3)}
    if dead:
        n = sum(dead.values())
        out.append(
            HealthFinding(
                "unreplayed-journal",
                "warning",
                f"{len(dead)} journal(s) of collectors that died still owe the store {n} record(s)",
                "replay them: store.maintain() or `filemem maintain PATH` (opening the store read-write does too)",
                {"journals": dict(sorted(dead.items())[:_TOP]), "records": n},
            )
        )
    for c in collectors:
        if c.closed:
            continue
        st = c.stats()
        if st.get("breaker") != "closed":
            out.append(
                HealthFinding(
                    "collector-breaker-open",
                    "warning",
                    f"a collector of this process stopped applying after repeated failures (breaker "
                    f"{st.get('breaker')}): {st.get('last_error') or 'no error recorded'}",
                    "fix the cause named in the error; the collector retries by itself and its journal keeps "
                    "what it accepted",
                    {"queue_depth": st.get("queue_depth", 0), "last_error": st.get("last_error")},
                )
            )
    if behind:
        n = sum(int(b["records"]) for b in behind.values())
        age = max(float(b["oldest_age_s"]) for b in behind.values())
        out.append(
            HealthFinding(
                "collector-backlog",
                "warning",
                f"{len(behind)} live collector(s) owe the store {n} record(s), the oldest collected {age:.0f} s ago "
                f"(thresholds: {BACKLOG_WARN_RECORDS} records or {BACKLOG_WARN_AGE_S:g} s)",
                "look at the collecting process: its apply thread is slower than collect() (raise batch_size, "
                "lower the rate) or failing (see its stats()['last_error']); nothing is lost, the journal holds it",
                {"journals": behind, "records": n, "oldest_age_s": age},
            )
        )
    return out


# ---------------------------------------------------------------------- search indexes


@dataclass(slots=True)
class IndexState:
    """One namespace's index files for one configuration, against its shards."""

    namespace: tuple[str, ...]
    config: str
    shards: int = 0
    stale: int = 0
    damaged: list[str] = field(default_factory=list)


def index_states(engine: Engine) -> list[IndexState]:
    """Every (namespace, index configuration) that has index files, with how far behind they are."""
    out: list[IndexState] = []
    for _directory, namespace in list(engine.namespace_dirs()):
        if not namespace:
            continue
        idx_dir = os.path.join(engine.root, INDEX_DIR, *(escape_segment(s) for s in namespace))
        by_config: dict[str, list[str]] = {}
        for name in _fs.listdir(idx_dir):
            got = parse_index_name(name)
            if got is not None:
                by_config.setdefault(got[0], []).append(os.path.join(idx_dir, name))
        if not by_config:
            continue
        view = engine.view(namespace)
        view.refresh()
        keys: dict[str, _fs.StatKey] = {}
        for prefix in view.existing:
            try:
                keys[prefix] = _fs.stat_key(os.stat(view.shard_path(prefix)))
            except OSError:
                continue
        for config, paths in sorted(by_config.items()):
            st = IndexState(namespace, config, shards=len(keys))
            fresh: set[str] = set()
            for path in paths:
                try:
                    got_index = read_index(path, config)
                except (ValueError, StorageError):
                    st.damaged.append(path)
                    continue
                if got_index is None:
                    continue
                for prefix, (key, _blob) in got_index[0].items():
                    if keys.get(prefix) == key:
                        fresh.add(prefix)
            st.stale = len(keys) - len(fresh)
            out.append(st)
    return out


def index_findings(states: list[IndexState], own_config: str) -> list[HealthFinding]:
    """Damaged index files, and indexes far enough behind their shards to be worth rebuilding."""
    out: list[HealthFinding] = []
    damaged = [p for s in states for p in s.damaged]
    if damaged:
        out.append(
            HealthFinding(
                "damaged-search-index",
                "warning",
                f"{len(damaged)} search index file(s) are unreadable; searches rebuild what they need, slowly",
                "rebuild: store.maintain() or `filemem maintain PATH` (also `filemem check PATH --fix` deletes them)",
                {"paths": damaged[:_TOP], "count": len(damaged)},
            )
        )
    stale = [s for s in states if s.shards and s.stale and s.stale / s.shards >= INDEX_STALE_FRACTION]
    if stale:
        n = sum(s.stale for s in stale)
        others = sorted({s.config for s in stale if s.config != own_config})
        out.append(
            HealthFinding(
                "stale-search-index",
                "info",
                f"the search index of {len(stale)} namespace(s) lacks current segments for {n} shard(s): the next "
                "search there re-reads and re-indexes those shards",
                "rebuild: store.maintain() or `filemem maintain PATH` (for an index of another configuration "
                "(index_fields, embed): a process opened with that configuration rebuilds it as it searches)",
                {
                    "namespaces": {_ns(s.namespace): s.stale for s in stale[:_TOP]},
                    "segments": n,
                    "other_configs": others,
                },
            )
        )
    return out
