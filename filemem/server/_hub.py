"""The server's change hub: the store's change feed, numbered and retained for WebSocket clients (layer L7).

Invariants:

* Every message gets a cursor ``<epoch>-<seq>``: ``seq`` grows by one per
  message, in the order the store's change feed delivered the changes;
  ``epoch`` is new each time the server starts. Messages live in one ring of
  the last ``retain`` messages, shared by every client.
* A client is a position in that ring, never a queue: writers and the feed
  never wait for a client, and a slow client costs only its own task. A
  client whose position fell out of the ring (too slow, or resuming from too
  old a cursor, or from another epoch) receives an explicit ``missed``
  message naming the cursors between which it lost messages, never a silent
  gap.
* The feed's own ``missed`` (events lost by the watcher, or the hub's
  subscription overflowing) becomes a ``missed`` message in the ring.

On a format-2 store the feed hands over each commit's records
(``Change.items``, read from the log): the hub announces exactly what each
commit wrote, once, with no read of the store. On a format-1 store the feed
says which shard changed and which keys a write touched; the hub reads each
touched key (``consistency="strict"``) to say ``put`` (with its version) or
``delete``, and skips a version it already announced. A failure turning a
change into messages, whatever it is, becomes a ``missed`` message. A write that touched more keys than the shard header
names arrives with ``key: null`` and ``op: "write"``: re-read the namespace.
Threads: the feed's delivery threads resolve changes and queue finished
messages under the seq lock (so they stay in seq order); the loop drains that
queue into the ring, woken by one ``call_soon_threadsafe`` per burst rather
than one per message (each one is a write to the loop's self-pipe). The ring
is only touched on the loop.

Fan-out cost is per frame, not per message (a socket write per client per
frame), so readers are woken at most once per wake interval, which grows with
the number of connected clients (:func:`wake_interval_s`): under load each
wake-up carries several messages, sent to a client as one frame.

Followers (:class:`Follower`, the WebSocket clients of ``filemem serve``) are
written to by the hub itself at each wake-up, in one pass on the loop: the
same list of texts, the same encoded frame bytes (:meth:`ChangeHub.encoded`)
for every whole-store follower in step, one ``transport.write`` each, and no
task woken per client. A follower the hub cannot write to (its buffer full,
a ``missed`` due) is handed back to its own task, which sends through the
ordinary ASGI path and then parks again; so a slow client still costs only
itself.
"""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from .. import Change, FileMemError, SessionInfo, Store, Subscription
from ..admin import to_json_value
from ._auth import Principal
from ._wsframes import text_frame

__all__ = ["ChangeHub", "Cursor", "Follower", "session_json", "wake_interval_s"]

#: The feed subscription's own queue: past it the feed reports ``missed``.
_FEED_QUEUE: Final = 100_000
#: Values up to this many bytes of JSON ride along in change messages.
_VALUE_INLINE_BYTES: Final = 1024
#: A body's already-encoded ``value`` rides under this name until the message is encoded.
_RAW_VALUE: Final = "\x00raw-value"
#: The dedupe table (last version announced per key) starts over past this.
_LAST_SENT_MAX: Final = 200_000
#: Readers are woken at most once per this interval: under load each wake-up
#: then carries many messages (one frame per client) instead of one each.
_WAKE_INTERVAL_S: Final = 0.005
#: ... plus this much per connected client: a wake-up costs one socket write
#: per client, so with 200 clients the loop is woken at most every 10 ms.
_WAKE_PER_CLIENT_S: Final = 0.00005
#: ... and never less often than this (it is added to every delivery's latency).
_WAKE_INTERVAL_MAX_S: Final = 0.02
#: Encoded WebSocket frames kept for readers still to be sent them: followers in step share one
#: frame per wake-up, so a few suffice, and a frame can be hundreds of KiB (500 messages).
_ENCODED_MAX: Final = 32


def _dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (orjson; the json module for what orjson refuses, e.g. huge ints)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def wake_interval_s(clients: int) -> float:
    """The least time between two wake-ups of the readers with ``clients`` connected."""
    return min(_WAKE_INTERVAL_MAX_S, max(_WAKE_INTERVAL_S, clients * _WAKE_PER_CLIENT_S))


class _Entry(NamedTuple):
    # A tuple of strings and ints: the collector stops tracking it after one pass, so a ring of
    # many thousand entries adds nothing to the server's full collections (each pauses the loop).
    seq: int
    kind: str  # "change" | "session" | "missed"
    namespace: tuple[str, ...] | None
    text: str


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the hub's stream: ``epoch`` of the server run, ``seq`` of the message."""

    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.seq}"

    @staticmethod
    def parse(text: str) -> Cursor | None:
        """The cursor in ``text``, or None if it is not one."""
        epoch, sep, seq = text.rpartition("-")
        if not sep or not epoch or not seq.isdigit() or len(seq) > 18:
            return None
        return Cursor(epoch, int(seq))


class Follower:
    """A reader the hub writes to itself, at each wake-up, while its task is parked.

    ``pos`` is the next seq to send. While ``parked`` (its task waits on
    ``wake``) the hub writes each frame due straight to the connection with
    ``write`` (see ``_wsframes``), in one pass over every follower: no task
    is woken per client per wake-up. When ``write`` refuses (the client's
    buffer is full, the connection is closing) or a ``missed`` is due, the
    hub sets ``parked`` False and ``wake``: the task sends through the
    ordinary, waiting path until it has caught up, then parks again. Only
    the loop's thread touches a follower.
    """

    __slots__ = ("arrays", "everything", "parked", "pos", "prefix", "principal", "wake", "write")

    def __init__(
        self, principal: Principal, prefix: tuple[str, ...], pos: int, write: Callable[[bytes], bool], arrays: bool
    ) -> None:
        self.principal = principal
        self.prefix = prefix
        self.everything = principal.unrestricted and not prefix
        self.pos = pos
        self.write = write
        self.arrays = arrays  # every frame an array (batch=1); else one message alone, several as an array
        self.parked = False
        self.wake = asyncio.Event()


def session_json(info: SessionInfo) -> dict[str, Any]:
    """A SessionInfo as JSON (namespaces in their ``a/b`` form)."""
    return {
        "id": info.id,
        "agent": info.agent,
        "pid": info.pid,
        "host": info.host,
        "registered_at": info.registered_at,
        "started_at": info.started_at,
        "state": info.state,
        "status": info.status,
        "progress": info.progress,
        "priority": info.priority,
        "metadata": to_json_value(info.metadata),
        "namespace": "/".join(info.namespace) if info.namespace is not None else None,
        "shared": ["/".join(s) for s in info.shared],
        "operations": info.operations,
        "bytes_written": info.bytes_written,
        "heartbeat_at": info.heartbeat_at,
        "ended_at": info.ended_at,
        "stop_requested": info.stop_requested,
        "alive": info.alive,
    }


class ChangeHub:
    """Numbers the store's changes and session events and serves them to WebSocket readers.

    Example (inside the server's event loop)::

        hub = ChangeHub(store, retain=10_000)
        hub.start(asyncio.get_running_loop())
        async for batch in hub.read(principal, prefix=(), after=None):
            ...  # lists of JSON texts, in cursor order
    """

    def __init__(self, store: Store, *, retain: int = 10_000) -> None:
        self.store = store
        self.retain = max(1, retain)
        # Unique per server run: a cursor from an earlier run is recognised as such.
        self.epoch = f"{int(time.time()):x}{secrets.token_hex(3)}"
        self._ring: collections.deque[_Entry] = collections.deque()
        self._seq = 0  # last seq handed out (hub threads, under _seq_lock)
        self._last = 0  # last seq in the ring (loop only)
        self._seq_lock = threading.Lock()
        # Entries made by the feed threads, not yet in the ring (under _seq_lock).
        self._incoming: list[_Entry] = []
        self._drain_pending = False  # a _drain is scheduled on the loop (under _seq_lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._notify_pending = False
        self._last_wake = 0.0
        # The last range every whole-store reader was sent, and its batch frame:
        # readers in step share one list and one encoded frame.
        self._memo: tuple[int, int, list[str]] | None = None
        self._memo_frame: tuple[list[str], str] | None = None
        # Frame text -> its WebSocket frame bytes, for the direct writer (cleared past _ENCODED_MAX).
        self._encoded: dict[str, bytes] = {}
        self._subs: list[Subscription] = []
        # Readers the hub writes to itself at each wake-up (see Follower), by id.
        self._followers: dict[int, Follower] = {}
        self._last_sent: dict[tuple[tuple[str, ...], str], int] = {}
        self.closed = False
        # figures for /metrics
        self.clients = 0
        self.messages = 0
        self.missed_sent = 0
        self.clients_closed_slow = 0
        self.resolve_errors = 0
        self.frames_direct = 0  # frames written as encoded bytes (see _wsframes)
        self.frames_ordinary = 0  # frames sent through the ASGI send
        self.delivery_lag_s: collections.deque[float] = collections.deque(maxlen=4096)

    # ------------------------------------------------------------------ life cycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Subscribe to the store's change feed and session events (call on the loop)."""
        self._loop = loop
        self._wake = asyncio.Event()
        self._subs.append(self.store.subscribe(self._on_change, max_queue=_FEED_QUEUE))
        self._subs.append(self.store.subscribe_sessions(self._on_session, max_queue=_FEED_QUEUE))

    def close(self) -> None:
        """End the subscriptions and wake every reader so it can leave."""
        self.closed = True
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        if self._wake is not None:
            self._wake.set()
        for follower in self._followers.values():
            follower.parked = False
            follower.wake.set()

    @property
    def cursor(self) -> Cursor:
        """The cursor of the newest message (seq 0: none yet)."""
        return Cursor(self.epoch, self._last)

    @property
    def last_seq(self) -> int:
        """The newest message's seq (0: none yet)."""
        return self._last

    @property
    def first_seq(self) -> int:
        """The oldest seq still retained (``last + 1`` when the ring is empty)."""
        return self._ring[0].seq if self._ring else self._last + 1

    # ------------------------------------------------------------------ producers (feed threads)

    def _emit(self, kind: str, namespace: tuple[str, ...] | None, body: dict[str, Any]) -> None:
        self._emit_many([(kind, namespace, body)])

    def _emit_many(self, messages: list[tuple[str, tuple[str, ...] | None, dict[str, Any]]]) -> None:
        """Number and queue ``messages`` together: the keys of one write reach readers in one wake-up."""
        loop = self._loop
        if loop is None or self.closed or not messages:
            return
        with self._seq_lock:
            for kind, namespace, body in messages:
                self._seq += 1
                seq = self._seq
                body["cursor"] = f"{self.epoch}-{seq}"
                if kind == "missed":
                    body["from"] = f"{self.epoch}-{seq - 1}"
                    body["to"] = body["cursor"]
                # Encoded once here: every client is sent this very string. A value
                # already encoded (to measure it) is spliced in, not encoded again.
                raw = body.pop(_RAW_VALUE, None)
                text = _dumps(body)
                if raw is not None:
                    text = f'{text[:-1]},"value":{raw}}}'
                # Under the lock: the loop receives entries in seq order.
                self._incoming.append(_Entry(seq, kind, namespace, text))
            if self._drain_pending:
                return  # the drain already scheduled takes these entries too
            self._drain_pending = True
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the server is going away
                self.closed = True

    def _on_change(self, change: Change) -> None:
        try:
            self._resolve(change)
        except Exception:  # whatever failed, readers must hear of the gap
            # The store could not be read just now (or anything else went wrong resolving
            # the change): say so rather than guess. Swallowed, the feed would drop the
            # change silently (it counts a failing callback and goes on).
            self.resolve_errors += 1
            self._emit("missed", None, {"type": "missed", "reason": "unreadable"})

    def _resolve(self, change: Change) -> None:
        ns = change.namespace
        ns_text = "/".join(ns)
        if change.kind == "missed":
            self._emit("missed", None, {"type": "missed", "reason": "feed"})
            return
        if change.kind != "write":
            return  # a shard file went away (split, merge): its records live on elsewhere
        if change.keys is None:
            self._emit(
                "change",
                ns,
                {"type": "change", "namespace": ns_text, "key": None, "op": "write", "time": change.time},
            )
            return
        if len(self._last_sent) > _LAST_SENT_MAX:
            self._last_sent.clear()
        out: list[tuple[str, tuple[str, ...] | None, dict[str, Any]]] = []
        items = change.items
        for n, key in enumerate(change.keys):
            if items is not None:
                # Format 2: the commit's own records, from the log, each commit once (no read, no dedupe).
                item = items[n]
            else:
                item = self.store.get_item(ns, key, consistency="strict")
                version = item.version if item is not None else -1
                if self._last_sent.get((ns, key)) == version:
                    continue  # the feed read this header after a later write: announced already
                self._last_sent[(ns, key)] = version
            body: dict[str, Any] = {"type": "change", "namespace": ns_text, "key": key, "time": change.time}
            if item is None:
                body["op"] = "delete"
            else:
                body.update(
                    op="put",
                    version=item.version,
                    created_at=item.created_at,
                    updated_at=item.updated_at,
                    expires_at=item.expires_at,
                )
                value = _dumps(to_json_value(item.value))
                if len(value) <= _VALUE_INLINE_BYTES:
                    body[_RAW_VALUE] = value
                else:
                    body["value_omitted"] = True
            out.append(("change", ns, body))
        self._emit_many(out)

    def _on_session(self, change: Change) -> None:
        if change.kind == "missed":
            self._emit("missed", None, {"type": "missed", "reason": "sessions"})
            return
        if not change.keys:
            return
        try:
            info = self.store.session_info(change.keys[0])
        except FileMemError:
            self.resolve_errors += 1
            return
        if info is None:
            return
        event = {"session-started": "started", "session-changed": "changed", "session-ended": "ended"}.get(
            change.kind, "changed"
        )
        if info.state == "crashed":
            event = "crashed"
        namespace = info.namespace if info.namespace is not None else None
        self._emit("session", namespace, {"type": "session", "event": event, "session": session_json(info)})

    # ------------------------------------------------------------------ the ring (loop only)

    def _drain(self) -> None:
        with self._seq_lock:
            entries, self._incoming = self._incoming, []
            self._drain_pending = False
        if not entries:
            return
        ring = self._ring
        ring.extend(entries)
        self._last = entries[-1].seq
        self.messages += len(entries)
        while len(ring) > self.retain:
            ring.popleft()
        if not self._notify_pending:
            # One wake-up per interval however many entries arrived in it.
            self._notify_pending = True
            loop = asyncio.get_running_loop()
            delay = self._last_wake + wake_interval_s(self.clients) - loop.time()
            if delay > 0:
                loop.call_later(delay, self._notify)
            else:
                loop.call_soon(self._notify)

    def _notify(self) -> None:
        self._notify_pending = False
        self._last_wake = asyncio.get_running_loop().time()
        wake, self._wake = self._wake, asyncio.Event()
        if wake is not None:
            wake.set()
        self._push_all()

    # ------------------------------------------------------------------ readers

    def start_position(self, after: str | None) -> tuple[int, list[str]]:
        """Where a reader starts (the next seq to send) and the messages it gets first.

        No cursor: from now on. A cursor of this run still retained: right
        after it. Anything else (another run, too old, not a cursor): a
        ``missed`` message, then from the oldest retained (same run) or now.
        """
        now = self._last
        if after is None:
            return now + 1, []
        cur = Cursor.parse(after)
        if cur is not None and cur.epoch == self.epoch and cur.seq <= now:
            if cur.seq + 1 >= self.first_seq:
                return cur.seq + 1, []
            return self.first_seq, [self._missed_text(after, self.first_seq - 1, "retention")]
        return now + 1, [self._missed_text(after, now, "epoch" if cur is not None else "bad-cursor")]

    def _missed_text(self, from_text: str, to_seq: int, reason: str) -> str:
        self.missed_sent += 1
        to = f"{self.epoch}-{to_seq}"
        return json.dumps({"type": "missed", "from": from_text, "to": to, "cursor": to, "reason": reason})

    def batch_frame(self, texts: list[str]) -> str:
        """``texts`` as one JSON array (encoded once for readers that share the list)."""
        memo = self._memo_frame
        if memo is not None and memo[0] is texts:
            return memo[1]
        frame = "[" + ",".join(texts) + "]"
        self._memo_frame = (texts, frame)
        return frame

    def encoded(self, frame: str) -> bytes:
        """``frame`` as one WebSocket text frame, built once for every reader sent this very text."""
        cache = self._encoded
        data = cache.get(frame)
        if data is None:
            if len(cache) >= _ENCODED_MAX:
                cache.clear()
            data = cache[frame] = text_frame(frame)
        return data

    @staticmethod
    def visible(entry: _Entry, principal: Principal, prefix: tuple[str, ...]) -> bool:
        """Whether a reader with ``principal`` and ``prefix`` may see ``entry``."""
        if entry.kind == "missed":
            return True
        ns = entry.namespace
        if ns is None:  # a session with no namespace: whole-store readers only
            return principal.unrestricted and not prefix
        return ns[: len(prefix)] == prefix and principal.covers(ns)

    def take(
        self, pos: int, principal: Principal, prefix: tuple[str, ...], everything: bool, max_batch: int = 500
    ) -> tuple[list[str], int]:
        """The texts due to a reader at ``pos`` (at most ``max_batch`` seqs) and its next position.

        ``pos`` must not be past the newest message. A reader the ring moved
        past gets a ``missed`` message first. Whole-store readers
        (``everything``) at the same position share one list (and so one
        encoded frame).
        """
        out: list[str] = []
        first_seq = self.first_seq
        if pos < first_seq:
            out.append(self._missed_text(f"{self.epoch}-{pos - 1}", first_seq - 1, "slow"))
            pos = first_seq
        end = min(self._last, pos + max_batch - 1)
        shareable = everything and not out  # no missed of this reader's own in front
        memo = self._memo
        if shareable and memo is not None and memo[0] == pos and memo[1] == end:
            return memo[2], end + 1  # another whole-store reader built this very list
        ring = self._ring
        start = pos - first_seq
        for i in range(start, start + end - pos + 1):
            entry = ring[i]
            if everything or self.visible(entry, principal, prefix):
                out.append(entry.text)
        if shareable:
            self._memo = (pos, end, out)
        return out, end + 1

    # ------------------------------------------------------------------ direct followers

    def follow(
        self, principal: Principal, prefix: tuple[str, ...], pos: int, write: Callable[[bytes], bool], *, arrays: bool
    ) -> Follower:
        """Register a reader the hub writes to itself at each wake-up (see :class:`Follower`)."""
        follower = Follower(principal, prefix, pos, write, arrays)
        self._followers[id(follower)] = follower
        return follower

    def unfollow(self, follower: Follower) -> None:
        """Stop writing to ``follower`` (its connection is ending)."""
        self._followers.pop(id(follower), None)

    def _push_all(self) -> None:
        """Write what is due to each parked follower, in one pass; wake the task of any the hub cannot serve."""
        for follower in list(self._followers.values()):
            if not follower.parked:
                continue
            try:
                pushed = self._push(follower)
            except Exception:  # never leave a follower parked on a failure: its task takes over
                pushed = False
            if not pushed:
                follower.parked = False
                follower.wake.set()

    def _push(self, f: Follower) -> bool:
        """Write every frame due to ``f`` directly; False: its task must take over (buffer full, a missed due)."""
        while f.pos <= self._last:
            if f.pos < self.first_seq:
                return False  # the task sends the missed message
            texts, nxt = self.take(f.pos, f.principal, f.prefix, f.everything)
            if texts:
                frame = self.batch_frame(texts) if f.arrays or len(texts) > 1 else texts[0]
                try:
                    written = f.write(self.encoded(frame))
                except Exception:  # a connection going away: its task finds out and ends
                    written = False
                if not written:
                    return False
                self.frames_direct += 1
            f.pos = nxt
        return True

    async def read(
        self, principal: Principal, prefix: tuple[str, ...], after: str | None, *, max_batch: int = 500
    ) -> AsyncGenerator[list[str], None]:
        """Lists of message texts for one reader, in cursor order, until the hub closes.

        The reader's position is its own; when the ring has moved past it the
        next list starts with a ``missed`` message.
        """
        pos, first = self.start_position(after)
        if first:
            yield first
        everything = principal.unrestricted and not prefix
        while not self.closed:
            wake = self._wake
            assert wake is not None
            if pos > self._last:
                await wake.wait()
                continue
            out, pos = self.take(pos, principal, prefix, everything, max_batch)
            if out:
                yield out
            else:
                await asyncio.sleep(0)  # nothing visible: let others run before looking again
