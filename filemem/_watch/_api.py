"""The change-watcher contract (layer L3): what a backend reports, and to whom."""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = ["ShardEventKind", "WatchSink", "Watcher"]

#: "written": a shard file was renamed into place (or rewritten);
#: "deleted": a shard file was unlinked or moved away.
ShardEventKind = Literal["written", "deleted"]


class WatchSink(Protocol):
    """Receives events from a watcher, on the watcher's thread: must return quickly."""

    def shard_changed(self, directory: str, name: str, kind: ShardEventKind) -> None:
        """A shard file ``name`` in ``directory`` changed."""
        ...

    def log_changed(self) -> None:
        """The store's commit signal file changed: a write may have committed to the log (format 2)."""
        ...

    def events_lost(self) -> None:
        """Events were dropped (queue overflow): treat everything as changed."""
        ...


class Watcher(Protocol):
    """A running source of shard events for one store directory."""

    #: "inotify" or "polling".
    backend: str

    def start(self) -> None:
        """Begin watching (starts one thread)."""
        ...

    def stop(self) -> None:
        """Stop watching and join the thread."""
        ...
