"""Copying a whole store to another, either way between directories and servers (part of :mod:`filemem.admin`).

Invariant: the copy is :func:`export_records` piped into
:func:`import_records`, so it keeps exactly what an export/import round
trip keeps (namespace, key, value byte for byte, expiry) and validates
every record against the destination (its codec, its size limit) before
writing one: a record the destination cannot hold raises and nothing is
written. Then batches commit all or nothing, in order. The source is read
namespace by namespace without blocking its writers (as ``export`` does):
records written meanwhile may or may not be included. The records are held
in memory between the two halves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .._errors import InvalidValueError
from .._store import Store
from ._jsonl import _export_lines, import_records

__all__ = ["CopyReport", "copy_store"]


@dataclass(slots=True)
class CopyReport:
    """What :func:`copy_store` did: records read and written, batches committed, expired ones skipped."""

    source: str
    destination: str
    read: int
    copied: int
    expired_skipped: int
    batches: int
    namespaces: int

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON)."""
        return asdict(self)


def copy_store(
    source: Store,
    destination: Store,
    *,
    prefix: tuple[str, ...] | str | None = None,
    batch_size: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> CopyReport:
    """Copy every live record of ``source`` (under ``prefix``) into ``destination``.

    Either may be a directory store or a server store: this is how a store
    moves to PostgreSQL and back (docs/scale-out.md). Existing keys in the
    destination are overwritten; versions and times are the destination's
    own. ``progress(done, total)`` is called as namespaces are read, then as
    batches commit.

    Example::

        with filemem.admin.open_store("./memories") as src, filemem.Store("postgresql://db/mem") as dst:
            report = filemem.admin.copy_store(src, dst)
    """
    if batch_size < 1:
        raise InvalidValueError("batch_size must be at least 1")
    if source is destination or source.path == destination.path:
        raise InvalidValueError(f"source and destination are the same store ({source.path})")
    namespaces = source.list_namespaces(prefix=prefix)
    lines: list[str] = []
    for i, chunk in _export_lines(source, namespaces):
        lines.extend(chunk)
        if progress is not None:
            progress(i + 1, len(namespaces))
    got = import_records(destination, lines, batch_size=batch_size, progress=progress)
    return CopyReport(
        source=source.path,
        destination=destination.path,
        read=len(lines),
        copied=got.imported,
        expired_skipped=got.expired_skipped,
        batches=got.batches,
        namespaces=got.namespaces,
    )
