"""Storage backends under the Store: the file engine, or a PostgreSQL server (issue 16).

``open_backend(location, ...)`` is the one place the choice is made: a
``postgresql://`` or ``postgres://`` URL opens the server backend (imported
only then, so ``import filemem`` never needs psycopg), anything else is a
store directory. ``_api.py`` holds the protocol both implement.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .._errors import UnsupportedFeatureError
from ._api import ReadView, StoreBackend, Unsupported

__all__ = ["ReadView", "StoreBackend", "Unsupported", "is_server_url", "open_backend"]

_SCHEMES = ("postgresql://", "postgres://")


def is_server_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL server rather than a directory."""
    return isinstance(location, str) and location.lower().startswith(_SCHEMES)


def open_backend(
    location: str | os.PathLike[str], *, normalize: Callable[[Any], tuple[str, ...]], **options: Any
) -> StoreBackend:
    """The backend for ``location``, opened with the Store's options (see ``Store.__init__``)."""
    if is_server_url(location):
        assert isinstance(location, str)
        try:
            from .postgres import PostgresBackend  # noqa: PLC0415 - psycopg is an optional extra
        except ImportError as exc:
            raise UnsupportedFeatureError(
                f"a postgresql:// store needs psycopg: pip install 'filemem[postgres]' ({exc})",
                feature="postgres",
                backend="postgres",
            ) from exc
        return PostgresBackend(
            location,
            codec=options["codec"],
            durability=options["durability"],
            lock_timeout_s=options["lock_timeout_s"],
            max_value_bytes=options["max_value_bytes"],
            readonly=options["readonly"],
            create=options["create"],
            normalize=normalize,
            index_fields=options.get("index_fields"),
            embed=options.get("embed"),
            embed_id=options.get("embed_id"),
        )
    from .file import FileBackend  # noqa: PLC0415 - keeps the two backends' imports apart

    return FileBackend(location, normalize=normalize, **options)
