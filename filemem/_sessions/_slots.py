"""Session limits across processes: slots, and a waiting room served by priority (layer L4).

**Limits** (``max_sessions`` for the whole store, or for a namespace and
everything under it) are a persisted setting, ``sessions/limits.json``, so
every process enforces the same numbers. A session needs one slot in every
scope whose limit covers its namespace (the store's, and each limited prefix
of its namespace).

**Slots.** A scope with limit N has slot files ``0.slot`` .. ``N-1.slot``.
Holding slot i's exclusive lock *is* holding a slot, and the kernel frees the
slot of a process that dies, SIGKILL included, at once. A session is admitted
only while fewer than N slot files of the scope (any number: a lowered limit
leaves running sessions on higher ones) are held; counting and taking happen
under the scope's gate lock. A session takes its slots all at once
or not at all (it releases what it took and waits), so two sessions needing
two scopes can never deadlock each other.

**The waiting room.** Before it takes a slot, a session puts a ticket
``<priority>_<arrival ns>_<id>.ticket`` in each of its scopes' queue
directories, and it takes slots only when no *live* ticket ranks before its own
(higher priority first, then earlier arrival, then id). Liveness of a ticket is
its session's liveness (see _registry), so the ticket of a waiter that died
is ignored, and removed by whoever meets it. A waiter polls with capped,
jittered back-off (flock has no wake-up), so a freed slot is taken within about
``_MAX_SLEEP_S``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from typing import Final

from .. import _fs, _locks
from .._digest import blake2b
from .._errors import InvalidValueError, SessionLimitError, StoreClosedError
from .._names import escape_segment
from ._api import Releasable
from ._record import LIMITS_FILE, LIMITS_LOCK, QUEUE_DIR, SLOT_GATE, SLOT_SUFFIX, SLOTS_DIR, TICKET_SUFFIX

__all__ = ["Slots", "limit_error", "scope_name"]

_FIRST_SLEEP_S: Final = 0.0005
_MAX_SLEEP_S: Final = 0.01
_LIMITS_FORMAT: Final = 1
#: Largest max_sessions accepted (each slot is a file a waiter may try).
MAX_LIMIT: Final = 4096
_SCOPE_NAME_MAX: Final = 200

Scope = tuple[str, ...]
#: Ranks tickets: higher priority first, then earlier arrival, then id.
_Rank = tuple[int, int, str]


def scope_name(scope: Scope) -> str:
    """The directory name of a scope: ``store``, or ``ns.<escaped segments joined by '.'>``.

    Escaped segments never contain ``.``, so the join is unambiguous.
    """
    if not scope:
        return "store"
    name = "ns." + ".".join(escape_segment(s) for s in scope)
    if len(name) > _SCOPE_NAME_MAX:
        name = "nsh." + blake2b("/".join(scope).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return name


def parse_ticket(name: str) -> tuple[_Rank, str] | None:
    """(rank, session id) of a ticket file name, or None if it is not one."""
    if not name.endswith(TICKET_SUFFIX):
        return None
    parts = name[: -len(TICKET_SUFFIX)].split("_")
    if len(parts) != 3:
        return None
    try:
        priority, arrival = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return (-priority, arrival, parts[2]), parts[2]


def check_limit(max_sessions: object) -> int | None:
    """None (no limit) or an int in 1..MAX_LIMIT, else InvalidValueError."""
    if max_sessions is None:
        return None
    if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or not 1 <= max_sessions <= MAX_LIMIT:
        raise InvalidValueError(f"max_sessions must be an int from 1 to {MAX_LIMIT}, or None, not {max_sessions!r}")
    return max_sessions


def limit_error(blocked: tuple[tuple[str, ...], int], *, waited_s: float, wait: bool) -> SessionLimitError:
    """The error of a session start that found no free slot in ``blocked`` (scope, limit); every backend raises it."""
    scope, limit = blocked
    where = "the store" if not scope else f"namespace {'/'.join(scope)!r}"
    return SessionLimitError(
        f"no session slot free in {where} (max_sessions={limit})"
        + (f" after waiting {waited_s:.3f}s" if wait else "; not waiting (wait=False)"),
        scope=scope,
        limit=limit,
        waited_s=waited_s,
    )


class Slots:
    """Limits, slots and the waiting room of one store's ``sessions/`` directory."""

    def __init__(self, directory: str, *, sync: bool, lock_timeout_s: float) -> None:
        self.dir = directory
        self.sync = sync
        self.lock_timeout_s = lock_timeout_s
        self._made: set[str] = set()
        self._limits_cache: tuple[tuple[int, int, int, int], dict[Scope, int]] | None = None

    # ------------------------------------------------------------------ limits

    def limits(self) -> dict[Scope, int]:
        """Every configured limit: scope (``()`` = the whole store) -> max_sessions.

        Cached by the file's stat (it is replaced by rename, so a change moves
        its inode), so waiters can re-read it on every pass for one ``stat``.
        """
        path = os.path.join(self.dir, LIMITS_FILE)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {}
        except OSError:
            st = None
        key = None if st is None else (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        cached = self._limits_cache
        if key is not None and cached is not None and cached[0] == key:
            return dict(cached[1])
        got = _fs.read_file(path)
        if got is None:
            return {}
        try:
            obj = json.loads(got[0])
            limits = {tuple(str(s) for s in scope): int(n) for scope, n in obj["limits"]}
        except (ValueError, KeyError, TypeError):
            # A damaged settings file must not stop sessions; check() reports it.
            limits = {}
        if key is not None:
            self._limits_cache = (key, limits)
        return dict(limits)

    def set_limit(self, scope: Scope, max_sessions: int | None) -> None:
        """Set (or with None remove) the limit of a scope, read-modify-write under a lock."""
        _fs.ensure_dir(self.dir)
        with _locks.exclusive(os.path.join(self.dir, LIMITS_LOCK), self.lock_timeout_s):
            limits = self.limits()
            if max_sessions is None:
                limits.pop(scope, None)
            else:
                limits[scope] = max_sessions
            body = {"format": _LIMITS_FORMAT, "limits": [[list(s), n] for s, n in sorted(limits.items())]}
            _fs.atomic_write(os.path.join(self.dir, LIMITS_FILE), json.dumps(body).encode() + b"\n", sync=self.sync)

    def scopes_for(self, namespace: Scope | None) -> list[tuple[Scope, int]]:
        """The limited scopes a session in ``namespace`` needs a slot in (store first, then prefixes)."""
        limits = self.limits()
        if not limits:
            return []
        ns = namespace or ()
        return [(ns[:i], limits[ns[:i]]) for i in range(len(ns) + 1) if ns[:i] in limits]

    # ------------------------------------------------------------------ slots

    def _dir(self, kind: str, scope: Scope) -> str:
        path = os.path.join(self.dir, kind, scope_name(scope))
        if path not in self._made:
            _fs.ensure_dir(path)
            self._made.add(path)
        return path

    def _take_slot(self, scope: Scope, limit: int) -> _locks.Held | None:
        """Take a slot if fewer than ``limit`` slots of the scope are held, else None.

        Every held slot counts, also one numbered ``limit`` or above: it was
        taken under an older, higher limit by a session still running, and a
        lowered limit admits nobody until the live count is under it. The
        count and the take happen under the scope's gate, so two admissions
        never count the same free place; releasing a slot needs no gate.
        """
        slot_dir = self._dir(SLOTS_DIR, scope)
        with _locks.exclusive(os.path.join(slot_dir, SLOT_GATE), self.lock_timeout_s):
            held_count = 0
            for name in _fs.listdir(slot_dir):
                if not name.endswith(SLOT_SUFFIX):
                    continue
                # A shared probe: it fails only while a session holds the slot.
                probe = _locks.try_shared_existing(os.path.join(slot_dir, name))
                if probe is None:
                    held_count += 1
                    if held_count >= limit:
                        return None
                elif not isinstance(probe, bool):
                    probe.release()
            # Slots that were never created are free too. Start at a random
            # one: N waiters that all try 0, 1, 2... in order would collide.
            first = random.randrange(limit)  # noqa: S311 - not crypto
            for i in range(limit):
                held = _locks.try_exclusive(os.path.join(slot_dir, f"{(first + i) % limit}{SLOT_SUFFIX}"))
                if held is not None:
                    return held
            return None

    def _ahead(self, queue_dir: str, mine: _Rank, alive: Callable[[str], bool]) -> bool:
        """Whether a live ticket in ``queue_dir`` ranks before ``mine`` (dead ones are removed)."""
        for name in _fs.listdir(queue_dir):
            parsed = parse_ticket(name)
            if parsed is None or parsed[0] >= mine:
                continue
            if alive(parsed[1]):
                return True
            _fs.remove_quietly(os.path.join(queue_dir, name))  # its waiter died or left
        return False

    def acquire(
        self,
        session_id: str,
        priority: int,
        namespace: Scope | None,
        *,
        wait: bool,
        timeout: float | None,
        alive: Callable[[str], bool],
        is_closed: Callable[[], bool] = lambda: False,
    ) -> tuple[list[Releasable], float]:
        """Take one slot in every limited scope of ``namespace``, in turn by priority.

        Returns the slot handles and the time they were had. The limits are
        re-read on every pass (one ``stat``), so a waiter sees a limit raised,
        lowered, added or removed: a scope whose limit is gone no longer holds
        it back (its ticket goes), a scope newly limited gets its ticket.
        Raises SessionLimitError at once (``wait=False``) or after ``timeout``
        seconds (None: wait for ever), and StoreClosedError once ``is_closed()``.
        """
        arrival = time.time_ns()
        mine: _Rank = (-priority, arrival, session_id)
        tickets: dict[Scope, str] = {}
        started = time.monotonic()
        deadline = math.inf if timeout is None else started + timeout
        try:
            sleep = _FIRST_SLEEP_S
            while True:
                if is_closed():
                    raise StoreClosedError("the store was closed while this session waited for a slot")
                scopes = self.scopes_for(namespace)
                if not scopes:
                    return [], time.time()
                self._sync_tickets(tickets, scopes, f"{priority}_{arrival}_{session_id}{TICKET_SUFFIX}")
                blocked: tuple[Scope, int] | None = None
                for scope, limit in scopes:
                    if self._ahead(self._dir(QUEUE_DIR, scope), mine, alive):
                        blocked = (scope, limit)
                        break
                if blocked is None:
                    held: list[Releasable] = []
                    for scope, limit in scopes:
                        h = self._take_slot(scope, limit)
                        if h is None:
                            blocked = (scope, limit)
                            break
                        held.append(h)
                    if blocked is None:
                        # The time is taken before our tickets go, so a waiter
                        # behind us always starts later than this.
                        return held, time.time()
                    for taken in held:
                        taken.release()
                now = time.monotonic()
                if not wait or now >= deadline:
                    raise limit_error(blocked, waited_s=now - started, wait=wait)
                # A cancelled async caller aborts the wait here, holding nothing
                # (its tickets and registry record go in the cleanup below).
                _locks.check_abort(self.dir)
                time.sleep(min(sleep * (0.5 + random.random()), max(deadline - now, 0.0)))  # noqa: S311
                sleep = min(sleep * 2, _MAX_SLEEP_S)
        finally:
            for ticket in tickets.values():
                _fs.remove_quietly(ticket)

    def _sync_tickets(self, tickets: dict[Scope, str], scopes: list[tuple[Scope, int]], name: str) -> None:
        """One ticket in each limited scope: add those of newly limited scopes, drop those no longer limited."""
        wanted = {scope for scope, _limit in scopes}
        for scope in [s for s in tickets if s not in wanted]:
            _fs.remove_quietly(tickets.pop(scope))
        for scope in wanted:
            if scope not in tickets:
                ticket = os.path.join(self._dir(QUEUE_DIR, scope), name)
                # No fsync: a ticket means nothing after a power cut (its waiter is gone).
                _fs.write_new_file(ticket, b"", sync=False)
                tickets[scope] = ticket
