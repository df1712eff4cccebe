"""A second throwaway cluster, with pgvector: the ``pgserver`` wheel's PostgreSQL 16 (issue 16).

Debian's server has no pgvector, so the pgvector path is tested on the
server bundled in the ``pgserver`` wheel (the ``test`` extra), started from
its binaries exactly as tests/conftest.py starts Debian's (``tests.pgserver``:
private port and socket directory, ``initdb`` as ``postgres`` when root),
once per test process, stopped on exit. Missing wheel: the tests skip, or
fail under ``FILEMEM_REQUIRE_PG=1``.

``vec_url`` runs a test on both servers: ``debian`` (no pgvector: the
``real[]`` fallback) and ``pgvector``. When ``FILEMEM_PG_BINDIR`` already
points the whole suite at the pgvector server, ``debian`` is that server too
(the fallback is then proven by the run without it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests import pgserver


@pytest.fixture(scope="session")
def pgvector_server_url() -> Iterator[str]:
    """The URL of a pgvector-capable cluster started for this test process."""
    bindir = pgserver.pgvector_bindir()
    if bindir is None:
        from tests.conftest import _pg_unavailable

        _pg_unavailable("the pgserver wheel (PostgreSQL with pgvector) is not installed: pip install -e '.[test]'")
        return
    server = pgserver.start(bindir)
    try:
        yield server.url
    finally:
        server.stop()


def fresh_schema_url(server_url: str) -> Iterator[str]:
    """A URL whose connections use a new schema of ``server_url`` (dropped afterwards), as ``pg_url``."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in server_url else "?"
    try:
        yield f"{server_url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        try:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        except psycopg.Error:
            pass


@pytest.fixture
def pgvector_url(pgvector_server_url: str) -> Iterator[str]:
    """A fresh schema on the pgvector cluster."""
    yield from fresh_schema_url(pgvector_server_url)


@pytest.fixture(params=["debian", "pgvector"])
def vec_url(request: pytest.FixtureRequest) -> str:
    """A fresh schema on each server: without pgvector (``pg_url``) and with it (``pgvector_url``)."""
    return str(request.getfixturevalue("pg_url" if request.param == "debian" else "pgvector_url"))
