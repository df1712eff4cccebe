"""The store marker and the store's layout: format versions, the root's names (layer L2).

On-disk layout (docs/format.md has the byte-level description)::

    <root>/filemem.json            store marker: format version, codec
    <root>/ns/<seg>/<seg>/         one directory per namespace (segments escaped)
        s<bits>.shard              records whose key hash starts with <bits>
        s<bits>.lock               that shard's lock file, never replaced
        turnstile.lock             writer-preference gate for the namespace
    <root>/wal/                    the write-ahead log (format 2; see filemem._wal)
    <root>/batches/<id>.batch      intent of a multi-shard batch being committed
    <root>/quarantine/             corrupt files moved aside by check(fix=True)

Invariant: the marker is created once, atomically (``link`` of a synced temp:
the first creator wins, every racer reads the winner's), and only ever
replaced whole. A store whose format is newer than this filemem reads is
refused, never guessed at; every name filemem may create at the root is in
:data:`ROOT_ENTRIES`, so ``check`` can call anything else foreign.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Final

from .. import _fs
from .._errors import CorruptShardError, FileMemError, InvalidValueError, UnsupportedFormatError
from .._wal import WAL_DIR
from ..codecs import Codec, get_codec
from ._handle import Handle

MARKER: Final = "filemem.json"
#: Version of the store as a whole (the marker's ``filemem``): 2 puts the
#: write-ahead log in ``wal/`` in front of the shards. Shard files keep their
#: own version (``FORMAT_VERSION`` in _shard, still 1).
STORE_FORMAT_VERSION: Final = 2
#: The format new stores are created with, and that a read-write open
#: upgrades older stores to: 2, the write-ahead log (issue 13). A process
#: started with ``FILEMEM_STORE_FORMAT=1`` creates version 1 stores and leaves
#: version 1 stores as they are (CI runs a subset of the suite that way, so
#: format 1 stays correct for stores not yet upgraded and for read-only
#: opens). A format-2 store is always opened as one.
NEW_STORE_FORMAT = 1 if os.environ.get("FILEMEM_STORE_FORMAT", "") == "1" else STORE_FORMAT_VERSION
NS_DIR: Final = "ns"
BATCH_DIR: Final = "batches"
QUARANTINE_DIR: Final = "quarantine"
#: Collector journals (one per collecting process) live here.
JOURNAL_DIR: Final = "journals"
#: Session registry files and slot locks live here.
SESSION_DIR: Final = "sessions"
#: Search indexes, one per namespace, live here.
INDEX_DIR: Final = "index"
#: Store-internal records (e.g. what a journal replay has applied) live in
#: namespaces under this directory, apart from users' ``ns/`` so that
#: ``list_namespaces`` never shows them.
INTERNAL_DIR: Final = "internal"
#: First segment of a store-internal namespace. No user namespace can start
#: with it (segments may not contain NUL), and :meth:`Engine.ns_dir` maps such
#: a namespace under :data:`INTERNAL_DIR` instead of ``ns/``.
INTERNAL_NS: Final = "\x00internal"
#: Every name filemem may create at the store root; ``check`` reports anything
#: else as a foreign file.
ROOT_ENTRIES: Final = frozenset(
    {MARKER, NS_DIR, BATCH_DIR, QUARANTINE_DIR, JOURNAL_DIR, SESSION_DIR, INDEX_DIR, INTERNAL_DIR, WAL_DIR}
)
BATCH_SUFFIX: Final = ".batch"


class Marker(Handle):
    """Opening the store: read (or create) the marker, pick the codec."""

    def _open_marker(self, codec: str | Codec | None, *, create: bool) -> Codec:
        marker = os.path.join(self.root, MARKER)
        got = _read_marker(marker)
        if got is None:
            if self.readonly or not create:
                raise FileMemError(f"no filemem store at {self.root} (missing {MARKER})")
            names = _fs.listdir(self.root)
            # Another process may be creating the store at this very moment:
            # its temp marker is no foreign file, and once its marker exists
            # (it may already be writing namespaces) the store is simply there.
            if MARKER in names:
                got = _read_marker(marker)
            elif any(not n.startswith(MARKER + _fs.TEMP_MARK) for n in names):
                raise FileMemError(f"{self.root} is not empty and is not a filemem store; refusing to write into it")
        if got is None:
            chosen = get_codec(codec if codec is not None else "json")
            body = json.dumps({"filemem": NEW_STORE_FORMAT, "codec": chosen.name, "created_at": time.time()})
            _fs.ensure_dir(self.root)
            tmp = _fs.temp_path(marker)
            _fs.write_new_file(tmp, body.encode() + b"\n", sync=True)
            try:
                # link() fails if another process created the marker first:
                # create-if-absent, atomically, and the first creator wins.
                os.link(tmp, marker)
            except FileExistsError:
                pass
            except OSError as exc:
                raise _fs.storage_error(exc, "create", marker) from exc
            finally:
                _fs.remove_quietly(tmp)
            _fs.fsync_dir(self.root)
            got = _read_marker(marker)
            assert got is not None
        version = got.get("filemem")
        if not isinstance(version, int) or version > STORE_FORMAT_VERSION:
            raise UnsupportedFormatError(
                f"store {self.root} has format version {version!r}; this filemem reads up to "
                f"{STORE_FORMAT_VERSION}. Upgrade filemem to open it.",
                path=marker,
            )
        self.store_version = version
        name = got.get("codec")
        if not isinstance(name, str):
            raise CorruptShardError(f"store marker {marker} names no codec", path=marker)
        if codec is not None:
            wanted = get_codec(codec)
            if wanted.name != name:
                raise InvalidValueError(
                    f"store {self.root} uses codec {name!r}, not {wanted.name!r}; "
                    "open it without codec= or convert it (filemem convert)"
                )
            return wanted
        return get_codec(name)

    def _follow_marker_codec(self) -> None:
        """Adopt the store marker's codec if it changed since we opened the store.

        Called only when a shard we are about to rewrite was written with
        another codec than ours, which happens when ``filemem convert`` runs:
        a long-lived process then switches to the new codec at its next write
        instead of writing the old one until it reopens the store. One small
        file read, and only on a mismatch; the marker is replaced atomically.
        """
        try:
            got = _read_marker(os.path.join(self.root, MARKER))
        except FileMemError:
            return  # keep writing what we write: every reader decodes either codec
        name = got.get("codec") if got is not None else None
        if isinstance(name, str) and name != self.codec.name and name in self._codecs:
            self.codec = self._codecs[name]


def _read_marker(path: str) -> dict[str, Any] | None:
    got = _fs.read_file(path)  # never follows a link, never waits on a FIFO
    if got is None:
        return None
    raw = got[0]
    try:
        got = json.loads(raw)
    except ValueError:
        raise CorruptShardError(f"store marker {path} is not valid JSON", path=path) from None
    if not isinstance(got, dict):
        raise CorruptShardError(f"store marker {path} is not a JSON object", path=path)
    return got
