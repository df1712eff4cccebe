"""The PostgreSQL backend (issue 16): the Store's data API on a server; needs the ``postgres`` extra."""

from ._backend import PostgresBackend as PostgresBackend

__all__ = ["PostgresBackend"]
