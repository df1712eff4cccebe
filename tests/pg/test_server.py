"""The throwaway PostgreSQL cluster the postgres half of the suite runs on (issue 16)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.postgres


def test_fresh_schema_per_test_on_a_durable_server(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        schema, fsync = conn.execute("SELECT current_schema(), current_setting('fsync')").fetchone()  # type: ignore[misc]
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()
    assert schema.startswith("t_")
    assert tables == (0,)
    assert fsync == "on" or not pg_url.startswith("postgresql://postgres@127.0.0.1")
