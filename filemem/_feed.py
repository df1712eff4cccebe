"""The live change feed (layer L3): who changed what, from any process.

Fed by the same file-system events that keep caches fresh: on a format-1
store, the shard files the watcher reports (:meth:`ChangeFeed.publish`); on a
format-2 store, the commits of the write-ahead log, read when the watcher
reports a commit (:meth:`ChangeFeed.publish_logged`, see filemem._freshness).
The watcher's
thread only appends to bounded queues; each callback subscriber has its own
delivery thread, and each async subscriber its own ``asyncio.Queue``, so a
slow subscriber never slows writers, the watcher, or other subscribers. A
subscriber whose queue is full loses changes and is told so: the next thing
it receives is a ``Change`` of kind ``"missed"``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from ._names import escape_segment, unescape_segment
from ._types import Item

if TYPE_CHECKING:
    import asyncio  # loaded by the first async subscriber (a plain put/get never needs it)

__all__ = ["Change", "ChangeFeed", "Subscription"]

ChangeKind = Literal["write", "delete", "missed", "session-started", "session-changed", "session-ended"]
_HEADER_MAX_BYTES: Final = 64 * 1024
#: Shard paths whose last published generation the feed remembers before it starts over.
_GENERATIONS_MAX: Final = 100_000
#: Most hidden writes of one shard announced one by one (a merge can jump a
#: generation far ahead); past it, the trailing keys=None says the rest.
_HIDDEN_MAX: Final = 1000


@dataclass(frozen=True, slots=True)
class Change:
    """One change seen in the store.

    ``kind``: ``"write"`` (a put, update, delete of a key, or batch
    committed), ``"delete"`` (format-1 stores only: a shard file went away,
    e.g. after a split), or ``"missed"`` (this subscriber fell behind or events
    were lost: re-read what you care about). ``keys``: the keys the write
    touched (None: unknown or many). On a format-2 store (the default) each
    commit is one change per namespace it touched, in commit order, with every
    key, and ``shard`` and ``path`` are ``""`` (the write is in the log; the
    shard files get it at the fold, which is no change). On a format-1 store
    each rewritten shard file is one change, ``shard`` its prefix, ``keys``
    from its header (also splits and compactions).
    ``items`` (format 2 only, else None): for each of ``keys``, the record
    this commit left (None: deleted), read from the log, so a subscriber that
    wants values and versions need not read them back (a read back may see a
    later write). The values are shared by every subscriber: do not mutate them.
    Session subscriptions (``Store.subscribe_sessions``) receive the kinds
    ``"session-started"``, ``"session-changed"`` and ``"session-ended"``, with
    the session id as the one key and the session's namespace (or ``()``).

    Example::

        def on_change(change: filemem.Change) -> None:
            print(change.namespace, change.kind, change.keys)
        store.subscribe(on_change, namespace_prefix=("agent-1",))
    """

    namespace: tuple[str, ...]
    shard: str
    kind: ChangeKind
    time: float
    keys: tuple[str, ...] | None = None
    path: str = ""
    items: tuple[Item | None, ...] | None = None


def _header_of(path: str) -> tuple[int | None, tuple[str, ...] | None]:
    """The ``generation`` and ``touched`` list of a shard's header (cheap: the first line only)."""
    try:
        with open(path, "rb") as fh:
            line = fh.readline(_HEADER_MAX_BYTES)
        header = json.loads(line)
    except (OSError, ValueError):
        return None, None
    if not isinstance(header, dict):
        return None, None
    generation = header.get("generation")
    touched = header.get("touched")
    keys = tuple(touched) if isinstance(touched, list) and all(isinstance(k, str) for k in touched) else None
    return (generation if isinstance(generation, int) else None), keys


class Subscription:
    """A live subscription; ``close()`` ends it (also a context manager)."""

    def __init__(
        self,
        feed: ChangeFeed,
        prefix: tuple[str, ...],
        max_queue: int,
        callback: Callable[[Change], object] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._feed = feed
        self.prefix = prefix
        self.max_queue = max_queue
        self._callback = callback
        self._loop = loop
        self._queue: collections.deque[Change] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._missed = False
        self.delivered = 0
        self.missed = 0
        self.errors = 0
        if loop is not None:
            import asyncio  # noqa: PLC0415 - already loaded: a loop is running
        self._async_queue: asyncio.Queue[Change | None] | None = (
            asyncio.Queue(maxsize=max_queue) if loop is not None else None
        )
        self._thread: threading.Thread | None = None
        if callback is not None:
            self._thread = threading.Thread(target=self._deliver_loop, name="filemem-subscriber", daemon=True)
            self._thread.start()

    def matches(self, namespace: tuple[str, ...]) -> bool:
        """Whether ``namespace`` is at or under this subscription's prefix (whole segments)."""
        return namespace[: len(self.prefix)] == self.prefix

    # --- producer side (the watcher's thread): never blocks ---

    def offer(self, change: Change) -> None:
        """Queue ``change``, or note that this subscriber missed it."""
        if self._closed:
            return
        if self._async_queue is not None and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._async_put, change)
            except RuntimeError:  # the loop is closed
                self.close()
            return
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self._missed = True
                self.missed += 1
                return
            self._queue.append(change)
            self._cond.notify()

    def _async_put(self, change: Change) -> None:
        q = self._async_queue
        assert q is not None
        if self._missed and q.qsize() < q.maxsize:
            self._missed = False
            q.put_nowait(Change(change.namespace, "", "missed", time.time()))
        import asyncio  # noqa: PLC0415 - already loaded: the queue's loop runs

        try:
            q.put_nowait(change)
        except asyncio.QueueFull:
            self._missed = True
            self.missed += 1

    # --- consumer side ---

    def _deliver_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed and not self._missed:
                    self._cond.wait()
                if self._closed:
                    return
                missed, self._missed = self._missed, False
                change = self._queue.popleft() if self._queue else None
            assert self._callback is not None
            for item in (
                [Change(change.namespace if change else self.prefix, "", "missed", time.time())] if missed else []
            ) + ([change] if change is not None else []):
                try:
                    self._callback(item)
                    self.delivered += 1
                except Exception:
                    # A failing callback must not kill delivery to it or others.
                    self.errors += 1

    async def __anext__(self) -> Change:
        q = self._async_queue
        if q is None:
            raise TypeError("not an async subscription")
        if q.empty():
            if self._missed:
                # Drained what was queued before the overflow: say what was
                # lost now, not when (if ever) another change arrives.
                self._missed = False
                return Change(self.prefix, "", "missed", time.time())
            if self._closed:
                raise StopAsyncIteration
        change = await q.get()
        if change is None:
            raise StopAsyncIteration
        return change

    def __aiter__(self) -> Subscription:
        return self

    def close(self) -> None:
        """Stop delivery and join the delivery thread."""
        if self._closed:
            return
        self._closed = True
        self._feed._remove(self)
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        if self._async_queue is not None and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._async_end)

    def _async_end(self) -> None:
        """On the loop: wake a consumer waiting on an empty queue (a busy one sees ``_closed``)."""
        q = self._async_queue
        assert q is not None
        if not q.full():
            q.put_nowait(None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChangeFeed:
    """Fans change events out to subscriptions. Thread-safe.

    ``versions(path)``: ``{key: (version, updated_at)}`` of a shard file's
    records (None if unreadable); with it, the keys of writes whose header was
    replaced before the watcher read it are recovered from the record versions.
    """

    def __init__(
        self, ns_root: str, versions: Callable[[str], dict[str, tuple[int, float]] | None] | None = None
    ) -> None:
        self.ns_root = ns_root
        self._versions = versions
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self.published = 0
        # The generation last published per shard path (watcher thread only):
        # events are read after the fact, so two quick writes can both be
        # read as the second; the generations tell (see publish).
        self._generations: dict[str, int] = {}
        #: Since when someone listens (generations are only tracked meanwhile).
        self._since = time.time()
        #: Changes come from the log (format 2): shard files are not followed.
        self.from_log = False
        #: Told True when the first subscriber comes, False when the last one leaves.
        self.on_listening: Callable[[bool], None] | None = None

    @property
    def active(self) -> bool:
        """Whether anyone listens (the watcher skips work otherwise)."""
        return bool(self._subs)

    def namespace_of(self, directory: str) -> tuple[str, ...] | None:
        """The namespace stored in ``directory`` (None: not a namespace directory)."""
        rel = os.path.relpath(directory, self.ns_root)
        if rel == "." or rel.startswith(".."):
            return None
        segments = []
        for part in rel.split(os.sep):
            seg = unescape_segment(part)
            if seg is None:
                return None
            segments.append(seg)
        return tuple(segments)

    def publish(self, directory: str, name: str, kind: Literal["write", "delete"]) -> None:
        """Called on the watcher's thread for each changed shard file."""
        subs = self._subs
        if not subs:
            return
        namespace = self.namespace_of(directory)
        if namespace is None:
            return
        path = os.path.join(directory, name)
        shard = name[1 : -len(".shard")]
        if kind != "write":
            self._generations.pop(path, None)
            self._fan_out(Change(namespace, shard, kind, time.time(), None, path))
            return
        # Read the header now, on the watcher's thread (one short read, and
        # only while someone listens): read later, a lagging subscriber would
        # see a later write's keys.
        generation, keys = _header_of(path)
        last = self._generations.get(path)
        if generation is not None:
            if len(self._generations) > _GENERATIONS_MAX:
                self._generations.clear()
            self._generations[path] = generation
            if last is not None and generation == last:
                # This header was already published: the event of an earlier
                # write was read after this one landed.
                return
            if last is None and generation > 1:
                # First sight of this shard since we listen: writes before this
                # one but after we started listening may be hidden by it.
                self._publish_hidden(namespace, shard, path, None, generation)
            elif last is not None and generation > last + 1:
                # Writes between were replaced before we read them.
                self._publish_hidden(namespace, shard, path, last, generation)
        self._fan_out(Change(namespace, shard, kind, time.time(), keys, path))

    def _publish_hidden(self, namespace: tuple[str, ...], shard: str, path: str, last: int | None, now: int) -> None:
        """Announce writes of a shard made after ``last`` and before ``now`` whose headers nobody read.

        A record's version is the generation of the write that last set it, so
        the records now holding such a version name (some of) that write's
        keys. With ``last`` unknown (first sight of the shard), writes count
        only if made since we listen (their records' ``updated_at``). After
        a known gap, each hidden write is one change (its keys, or None when
        no record holds its version any more), then one ``keys=None`` change
        (a hidden write may also have deleted keys): re-read the namespace.
        Never silent for a gap we can see.
        """
        t = time.time()
        versions = self._versions(path) if self._versions is not None else None
        by_version: dict[int, list[str]] = {}
        if versions is not None:
            for key, (version, updated_at) in versions.items():
                if version < now and (version > last if last is not None else updated_at >= self._since):
                    by_version.setdefault(version, []).append(key)
            if last is None:
                for version in sorted(by_version):
                    self._fan_out(Change(namespace, shard, "write", t, tuple(sorted(by_version[version])), path))
                return
        if last is None:
            return
        # One change per hidden write (its keys, or None when no record holds its
        # version any more), then one None: a hidden write may also have deleted keys.
        for version in range(max(last + 1, now - _HIDDEN_MAX), now):
            keys = by_version.get(version) if versions is not None else None
            self._fan_out(Change(namespace, shard, "write", t, tuple(sorted(keys)) if keys else None, path))
        self._fan_out(Change(namespace, shard, "write", t, None, path))

    def publish_logged(
        self,
        namespace: tuple[str, ...],
        keys: tuple[str, ...],
        when: float,
        items: tuple[Item | None, ...] | None = None,
    ) -> None:
        """One commit's writes to one namespace, read from the log (format 2), in commit order."""
        if self._subs:
            self._fan_out(Change(namespace, "", "write", when, keys, "", items))

    def _fan_out(self, change: Change) -> None:
        self.published += 1
        for sub in self._subs:
            if sub.matches(change.namespace):
                sub.offer(change)

    def publish_missed(self) -> None:
        """Events were lost: every subscriber is told."""
        for sub in self._subs:
            sub.offer(Change(sub.prefix, "", "missed", time.time()))

    def subscribe(self, callback: Callable[[Change], object], prefix: tuple[str, ...], max_queue: int) -> Subscription:
        """A callback subscription with its own delivery thread."""
        sub = Subscription(self, prefix, max_queue, callback=callback)
        self._add(sub)
        return sub

    def subscribe_async(self, prefix: tuple[str, ...], max_queue: int) -> Subscription:
        """An async-iterator subscription bound to the running loop."""
        import asyncio  # noqa: PLC0415 - already loaded: called from a coroutine

        sub = Subscription(self, prefix, max_queue, loop=asyncio.get_running_loop())
        self._add(sub)
        return sub

    def _add(self, sub: Subscription) -> None:
        with self._lock:
            if not self._subs:
                # Nothing was tracked while nobody listened: forget old generations,
                # or writes made meanwhile would look like hidden ones.
                self._generations.clear()
                self._since = time.time()
                if self.on_listening is not None:
                    self.on_listening(True)  # before the subscriber is in: it hears every later commit
            if not self.from_log:
                self._note_generations(sub.prefix)
            self._subs = [*self._subs, sub]

    def _note_generations(self, prefix: tuple[str, ...]) -> None:
        """Note the generation of each shard under ``prefix`` not tracked yet, before the subscriber listens.

        Without it the first write the watcher sees of a shard has no known
        predecessor: writes made since the subscriber listens that this one
        hid (the watcher read the header late, under load) could be recovered
        only from keys still holding their version, and a key written again
        holds only its last. With it such writes are a known gap, announced
        one by one (see _publish_hidden). ``setdefault``: the watcher may have
        noted a newer generation meanwhile.
        """
        top = os.path.join(self.ns_root, *(escape_segment(s) for s in prefix))
        for directory, _dirs, files in os.walk(top):
            for name in files:
                if name.startswith("s") and name.endswith(".shard"):
                    path = os.path.join(directory, name)
                    generation, _ = _header_of(path)
                    if generation is not None:
                        self._generations.setdefault(path, generation)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            had = bool(self._subs)
            self._subs = [s for s in self._subs if s is not sub]
            if had and not self._subs and self.on_listening is not None:
                self.on_listening(False)

    def close(self) -> None:
        """End every subscription."""
        for sub in list(self._subs):
            sub.close()
