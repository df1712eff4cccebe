"""Crash states from a recorded workload: what a power cut at each instant could leave on disk.

The model (POSIX's minimum, deliberately stricter than ext4):

* **File data** is durable only as of the last ``fsync``/``fdatasync`` of that
  inode (its whole content at that moment). A file whose entry survives but
  whose data was never synced comes back empty (variant "empty") or as an
  arbitrary prefix of what it held when its directory was synced (variant
  "torn"), as ext4's delayed allocation can leave it.
* **Directory entries** (create, rename, link, unlink, mkdir, rmdir) are
  durable only as of the last ``fsync`` of *their* directory: the entries a
  directory had at its last fsync are exactly the ones that come back. A
  rename between two directories is durable in each only once each is synced
  (so the model may even keep both names, which ext4 would not).
* **syncfs** makes every entry and all data under the store durable.

ext4 (``data=ordered``) guarantees more: its journal commits metadata in order,
so any fsync also commits every earlier rename in any directory, and a rename
over a file flushes the new file's data first (``auto_da_alloc``). A store
that is correct under this model is therefore correct on ext4, XFS and btrfs;
the converse would not hold, which is why the model is the stricter one.

The durable state only changes at a sync, so the crash instants worth trying
are "just before each sync event" and "at the end": for each, the state is
built from the syncs before it, and a write counts as acknowledged if its call
returned before that instant.

**Journal-order variants.** A real file system also persists changes nobody
synced yet. ext4 commits directory changes in the order they happened, so
besides the minimal state, each instant can be tried with a *cut*: every
directory change made before the cut is durable too (each directory is then
at the later of its last fsync and its state at the cut). Data stays as
strict as above. These are the states ext4 produces, and more (ext4 never
cuts before its own last fsync).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

from ._shim import Event

SYNC_KINDS = frozenset({"fsync-dir", "fsync-file", "syncfs"})


@dataclass
class Durable:
    """Directory entries and file data that survive a crash at one instant."""

    dirs: dict[str, dict[str, Any]]
    data: dict[tuple[int, int], bytes]


def initial_state(root: str) -> Durable:
    """Everything present before the workload (the harness syncs it) is durable."""
    dirs: dict[str, dict[str, Any]] = {}
    data: dict[tuple[int, int], bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.normpath(os.path.relpath(dirpath, root))
        entries: dict[str, Any] = {d: ("dir",) for d in dirnames}
        for f in filenames:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            with open(p, "rb") as fh:
                content = fh.read()
            ident = (st.st_ino, 0)  # generation 0: the shim bumps it for every file created later
            entries[f] = ("file", ident, content)
            data[ident] = content
        dirs[rel] = entries
    return Durable(dirs, data)


def crash_instants(events: list[Event]) -> list[int]:
    """Event positions a crash is tried just before (each sync) and the end."""
    return [e.index for e in events if e.kind in SYNC_KINDS] + [len(events)]


def durable_at(initial: Durable, events: list[Event], instant: int, cut: int = 0) -> Durable:
    """The durable state of a crash just before ``events[instant]``, directory changes before ``cut`` kept."""
    dirs = dict(initial.dirs)
    data = dict(initial.data)
    for e in events[:instant]:
        if (e.kind == "meta" and e.index < cut) or e.kind == "fsync-dir":
            dirs[os.path.normpath(e.path)] = e.payload
        elif e.kind == "fsync-file":
            ident, content = e.payload
            data[ident] = content
        elif e.kind == "syncfs":
            for rel, entries in e.payload.items():
                dirs[os.path.normpath(rel)] = entries
                for entry in entries.values():
                    if entry[0] == "file":
                        data[entry[1]] = entry[2]
    return Durable(dirs, data)


def cuts_before(events: list[Event], instant: int, n: int, rng: random.Random) -> list[int]:
    """Up to ``n`` distinct journal-order cuts for ``instant``: right after some directory change before it."""
    metas = [e.index + 1 for e in events[:instant] if e.kind == "meta"]
    return sorted(rng.sample(metas, min(n, len(metas))))


def has_unsynced_data(state: Durable) -> bool:
    """Whether some surviving entry's data was never synced (then "torn" differs from "empty")."""
    return any(e[0] == "file" and e[1] not in state.data and e[2] for d in state.dirs.values() for e in d.values())


def materialise(state: Durable, dest: str, *, torn: random.Random | None = None) -> None:
    """Write ``state`` out as a real directory tree at ``dest``."""

    def build(rel: str, target: str) -> None:
        os.makedirs(target, mode=0o700, exist_ok=True)
        for name, entry in state.dirs.get(rel, {}).items():
            path = os.path.join(target, name)
            if entry[0] == "dir":
                build(os.path.normpath(os.path.join(rel, name)), path)
                continue
            content = state.data.get(entry[1])
            if content is None:
                content = b"" if torn is None else entry[2][: torn.randint(0, len(entry[2]))]
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, content)
            finally:
                os.close(fd)

    build(".", dest)
