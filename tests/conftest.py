"""Shared fixtures: a fresh store per test, and leak checks.

Every test fails if it leaves a thread running or a child process alive:
multi-process tests must clean up whatever happens (use ``spawn_ctx`` and
``reap``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import filemem
from filemem import _engine
from tests import pgserver


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    threads_before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        extra = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        children = mp.active_children()
        if not extra and not children:
            return
        if time.monotonic() > deadline:
            for c in children:
                c.kill()
                c.join(5)
            pytest.fail(f"test leaked threads {extra} or child processes {children}")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _store_format(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``@pytest.mark.store_format(1)``: stores the test creates (here and in its children) have that format.

    For tests about one format's internals (format 1's shard files written by
    each put, say); every other test runs on the default format, and CI runs
    a subset again with ``FILEMEM_STORE_FORMAT=1``.
    """
    marker = request.node.get_closest_marker("store_format")
    if marker is not None:
        version = int(marker.args[0])
        monkeypatch.setattr(_engine._marker, "NEW_STORE_FORMAT", version)
        monkeypatch.setenv("FILEMEM_STORE_FORMAT", str(version))  # spawned children read it at import


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    """A path for a new store (not yet created)."""
    return str(tmp_path / "store")


@pytest.fixture(params=["json", "msgpack"])
def codec(request: pytest.FixtureRequest) -> str:
    """Both shipped codecs."""
    return str(request.param)


@pytest.fixture
def store(store_path: str, codec: str) -> Iterator[filemem.Store]:
    """A fresh store in each codec, closed after the test."""
    s = filemem.Store(store_path, codec=codec)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def spawn_ctx() -> mp.context.SpawnContext:
    """The spawn context: children start clean (no inherited locks or threads)."""
    return mp.get_context("spawn")


# ---------------------------------------------------------------- PostgreSQL (issue 16)
#
# ``FILEMEM_PG_URL`` (or ``FILEMEM_TEST_PG_DSN``, the name) points the
# tests at an existing server; else a throwaway cluster is started once per
# test process (per xdist worker) from the PostgreSQL binaries on this machine.
# With none, postgres-parametrized tests skip, unless ``FILEMEM_REQUIRE_PG=1``
# (CI sets it) makes that an error. Each test gets a fresh schema.


def _pg_required() -> bool:
    return os.environ.get("FILEMEM_REQUIRE_PG", "") == "1"


def _pg_unavailable(reason: str) -> None:
    if _pg_required():
        pytest.fail(f"FILEMEM_REQUIRE_PG=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def _pg() -> Iterator[tuple[str, pgserver.Server | None]]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _pg_unavailable("psycopg is not installed (pip install 'filemem[postgres]')")
    given = os.environ.get("FILEMEM_PG_URL") or os.environ.get("FILEMEM_TEST_PG_DSN")
    if given:
        yield given, None
        return
    bindir = pgserver.find_bindir()
    if bindir is None:
        _pg_unavailable("no PostgreSQL server binaries (initdb) here; set FILEMEM_PG_URL or install postgresql")
        return
    server = pgserver.start(bindir)
    try:
        yield server.url, server
    finally:
        server.stop()  # whatever happened in the session


@pytest.fixture(scope="session")
def pg_server_url(_pg: tuple[str, pgserver.Server | None]) -> str:
    """The URL of a PostgreSQL server for this test process (started here unless FILEMEM_PG_URL gives one)."""
    return _pg[0]


@pytest.fixture(scope="session")
def pg_server(_pg: tuple[str, pgserver.Server | None]) -> pgserver.Server:
    """The throwaway server itself, for tests that stop or restart it (skipped on a given server)."""
    if _pg[1] is None:
        pytest.skip("FILEMEM_PG_URL names an existing server; this test restarts its own")
    return _pg[1]


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema (dropped after the test)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_server_url else "?"
    url = f"{pg_server_url}{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        yield url
    finally:
        try:
            with psycopg.connect(pg_server_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        except psycopg.Error:
            pass  # the server-restart tests may leave it down; the cluster goes anyway


@pytest.fixture(
    params=[
        pytest.param("file", marks=pytest.mark.file_backend),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend the conformance suite runs on: ``"file"`` and ``"postgres"``."""
    return str(request.param)


@pytest.fixture
def location(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh store of ``backend`` lives: a directory or a ``postgresql://`` URL."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "store")


@pytest.fixture
def any_store(location: str) -> Iterator[filemem.Store]:
    """A fresh store on each backend, closed after the test."""
    s = filemem.Store(location)
    try:
        yield s
    finally:
        s.close()
