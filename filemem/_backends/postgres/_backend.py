"""The PostgreSQL backend: the Store's data API on a server (issue 16).

Invariant: this object holds no data of its own. Every read asks the server
(reads are always fresh: ``consistency`` is accepted and means ``"strict"``),
every write is one transaction (``_writes``), a snapshot is one read-only
transaction (``_snapshot``), the change feed rides on the outbox (``_feed``).
Several processes and machines may open the same URL at once; the server is
what they share.

Sessions live in tables (``_session_*``); ``health()``/``maintain()``
have a server form (``upkeep``, feature ``"server-health"``). Search ranks
from postings kept in each write's transaction (``_index``, ``_rank``); the
collector journals to a local directory and marks applied ids in the
server's tables (``_collector``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import psycopg

from ..._engine import Op
from ..._errors import InvalidQueryError, InvalidValueError, StoreClosedError, UnsupportedFeatureError
from ..._feed import Change, Subscription
from ..._search import Embed, SearchHit
from ..._search._text import parse_fields
from ..._sessions import SessionHub
from ..._shard import Record
from ..._snapshot import item_of
from ..._types import Consistency, Durability, Finding, Item, NamespaceLike
from ...codecs import Codec, get_codec
from .._api import Unsupported
from ._aio import AsyncReads
from ._collector import ServerJournalEngine
from ._connect import Connections, RetryableError, translate
from ._describe import namespace_figures, one_namespace, store_figures
from ._feed import ServerFeed
from ._index import INDEX_LOCK, SWEEP_SQL, ensure_index, index_findings, index_rows, index_writes
from ._names import INTERNAL_TEXT, decode_ns, encode_ns, prefix_range
from ._pgvector import VectorSupport
from ._pgvector import detect as detect_pgvector
from ._pgvector import ensure_column as ensure_vector_column
from ._put_fn import ensure_put_function
from ._rank import Ranker
from ._schema import ensure_schema
from ._search import search
from ._session_hub import server_session_hub
from ._snapshot import ServerSnapshot
from ._upkeep import server_check, upkeep_figures
from ._writes import NOW_SQL, Writer, check_size, record_of

__all__ = ["PostgresBackend"]

if TYPE_CHECKING:
    from ..._engine import EngineAPI

    def _implements_engine_api(backend: PostgresBackend) -> EngineAPI:
        return backend  # mypy checks PostgresBackend against the engine interface here


#: The TTL sweeper runs after a commit at most this often (per store object).
SWEEP_INTERVAL_S: Final = 60.0
#: Rows one sweep deletes at most (it runs again next interval).
SWEEP_ROWS: Final = 1000
#: Outbox rows older than this are pruned by the sweeper; a listener away longer gets ``missed``.
OUTBOX_KEEP_S: Final = 3600.0
_LIVE: Final = f"(expires_at IS NULL OR expires_at > {NOW_SQL})"


class PostgresBackend:
    """A filemem store in one schema of a PostgreSQL database (see docs/scale-out.md)."""

    name: Final = "postgres"
    features: frozenset[str] = frozenset({"search", "collector", "sessions", "server-health"})

    def __init__(
        self,
        url: str,
        *,
        codec: str | Codec | None,
        durability: Durability,
        lock_timeout_s: float,
        max_value_bytes: int,
        readonly: bool,
        create: bool,
        normalize: Callable[[Any], tuple[str, ...]],
        pool_size: int = 8,
        index_fields: Sequence[str] | None = None,
        embed: Embed | None = None,
        embed_id: str | None = None,
    ) -> None:
        if embed is not None and not callable(embed):
            raise InvalidQueryError("embed must be a callable: text -> sequence of floats")
        fields = parse_fields(index_fields)
        if durability not in ("fsync", "flush"):
            raise InvalidValueError(f"durability must be 'fsync' or 'flush', not {durability!r}")
        self.durability: Durability = durability
        self.readonly = readonly
        self.lock_timeout_s = lock_timeout_s
        self.max_value_bytes = max_value_bytes
        self._normalize = normalize
        self.closed = False
        self._conns = Connections(
            url, durability=durability, lock_timeout_s=lock_timeout_s, readonly=readonly, max_size=pool_size
        )
        try:
            with self._conns.conn() as conn:
                try:
                    codec_name = ensure_schema(conn, _codec_name(codec), create=create)
                    if not readonly:
                        ensure_index(conn, get_codec(codec_name))
                        ensure_put_function(conn)
                    got = conn.execute("SELECT to_regclass('filemem_postings') IS NOT NULL").fetchone()
                    self._indexed = bool(got and got[0])
                    vectors = detect_pgvector(conn, may_create=not readonly, lock=INDEX_LOCK)
                    if vectors.schema is not None and self._indexed and not readonly:
                        ensure_vector_column(conn, vectors, lock=INDEX_LOCK)
                    row = conn.execute("SELECT current_schema(), current_database()").fetchone()
                except psycopg.Error as exc:
                    raise translate(exc, "opening the store") from exc
            assert row is not None
            schema, database = row
            if schema is None:
                raise StoreClosedError("the connection's search_path names no existing schema")
            self.codec: Codec = get_codec(codec_name)
            self.location = f"{_redacted(url)} (schema {schema})"
            salt = f"{database}.{schema}"
            channel = "filemem_" + hashlib.blake2b(salt.encode(), digest_size=12).hexdigest()
            self._writer = Writer(
                self._conns,
                self.codec,
                salt=salt,
                channel=channel,
                max_value_bytes=max_value_bytes,
                readonly=readonly,
                location=self.location,
            )
            self._writer.after_commit = self._maybe_sweep
            if self._indexed:
                self._writer.index = index_writes
                self._writer.index_rows = index_rows
            self._writer.one_call = not readonly
            if embed is not None and embed_id is None:
                embed_id = f"{getattr(embed, '__module__', '?')}.{getattr(embed, '__qualname__', type(embed).__name__)}"
            self.ranker = Ranker(
                self._conns.conn,
                self.codec,
                index_fields=fields,
                embed=embed,
                embed_id=embed_id if embed is not None else None,
                readonly=readonly,
            )
            # A read-only store embeds in memory at each search (it may not store vectors): pgvector is unused.
            self.ranker.vectors = vectors if not readonly else VectorSupport(None, None, "read-only: embeds in memory")
            self.collector_engine = ServerJournalEngine(self)
            self.feed = ServerFeed(self._conns, channel)
            self.salt = salt
        except BaseException:
            self._conns.close()
            raise
        self._last_sweep = time.monotonic()
        self._sweep_lock = threading.Lock()
        self.counters: dict[str, int] = {"reads": 0, "swept": 0}
        #: EngineAPI's name for where the store lives: the redacted URL and schema.
        self.root = self.location
        #: EngineAPI: called with the ops of every committed apply (must not raise).
        self.after_apply: Callable[[list[Op]], None] | None = None
        self.engine = Unsupported(self.name)
        self.fresh = Unsupported(self.name)
        self.searcher = Unsupported(self.name)

    # ------------------------------------------------------------------ basics

    def check_open(self) -> None:
        if self.closed:
            raise StoreClosedError(f"store {self.location} is closed")

    def warm(self) -> None:
        """Nothing starts lazily but the feed listener, which the first subscription starts."""

    def check_value(self, value: Any, key: str | None = None) -> None:
        check_size(self.codec, value, self.max_value_bytes)

    def session_hub(self) -> SessionHub:
        """Sessions in tables, alive while their own connection holds an advisory lock (``_session_hub``)."""
        return server_session_hub(
            self._conns,
            salt=self.salt,
            location=self.location,
            readonly=self.readonly,
            lock_timeout_s=self.lock_timeout_s,
            is_closed=lambda: self.closed,
        )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.feed.close()
        finally:
            self._conns.close()

    def _query(self, what: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        self.check_open()
        try:
            return self._conns.fetch(sql, params)
        except psycopg.Error as exc:
            err = translate(exc, what, timeout_s=self.lock_timeout_s)
            raise (StoreClosedError(str(err)) if isinstance(err, RetryableError) else err) from exc

    # ------------------------------------------------------------------ reads

    def get(self, namespace: NamespaceLike, key: str, default: Any, consistency: Consistency | None) -> Any:
        rec = self.read(self._normalize(namespace), key)
        return default if rec is None else rec["value"]

    def get_hot(self, namespace: NamespaceLike, key: str, missing: Any) -> Any:
        """No value is ever answered from memory here: always ``missing``."""
        return missing

    def read_record(self, ns: tuple[str, ...], key: str, consistency: Consistency | None) -> Record | None:
        return self.read(ns, key)

    def read(self, namespace: tuple[str, ...], key: str, *, fresh_ok: bool = False) -> Record | None:
        """The live record (EngineAPI); every read asks the server, ``fresh_ok`` or not."""
        ns = namespace
        self.counters["reads"] += 1
        rows = self._query(
            "read",
            "SELECT value, version, created_at, updated_at, expires_at FROM filemem_records"
            f" WHERE ns = %s AND key = %s AND {_LIVE}",
            (encode_ns(ns), key),
        )
        return record_of(rows[0], self.codec) if rows else None

    def live(self, ns: tuple[str, ...]) -> dict[str, Record]:
        rows = self._query(
            "listing",
            "SELECT key, value, version, created_at, updated_at, expires_at FROM filemem_records"
            f" WHERE ns = %s AND {_LIVE} ORDER BY key",
            (encode_ns(ns),),
        )
        return {r[0]: record_of(r[1:], self.codec) for r in rows}

    def keys(self, ns: tuple[str, ...]) -> list[str]:
        rows = self._query(
            "listing", f"SELECT key FROM filemem_records WHERE ns = %s AND {_LIVE} ORDER BY key", (encode_ns(ns),)
        )
        return [r[0] for r in rows]

    def list_namespaces(self, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        rng = prefix_range(prefix)
        if rng is None:
            rows = self._query("listing", f"SELECT DISTINCT ns FROM filemem_records WHERE {_LIVE} ORDER BY ns", ())
        else:
            rows = self._query(
                "listing",
                "SELECT DISTINCT ns FROM filemem_records WHERE (ns = %s OR (ns >= %s AND ns < %s))"
                f" AND {_LIVE} ORDER BY ns",
                rng,
            )
        out = []
        for (text,) in rows:
            if text.startswith(INTERNAL_TEXT):
                continue
            ns = decode_ns(text)
            if ns is not None:
                out.append(ns)
        return sorted(out)

    def snapshot(self) -> ServerSnapshot:
        self.check_open()
        return ServerSnapshot(self._conns, self.codec, self._normalize)

    def scan(self, ns: tuple[str, ...], batch_size: int) -> Generator[list[Item], None, None]:
        """Keyset pages in key order (``key > last``): bounded memory, no record twice; not a snapshot."""
        self.check_open()
        return self._scan(encode_ns(ns), ns, batch_size)

    def _scan(self, text: str, ns: tuple[str, ...], batch_size: int) -> Generator[list[Item], None, None]:
        last = ""
        while True:
            rows = self._query(
                "scan",
                "SELECT key, value, version, created_at, updated_at, expires_at FROM filemem_records"
                f" WHERE ns = %s AND key > %s AND {_LIVE} ORDER BY key LIMIT %s",
                (text, last, batch_size),
            )
            if not rows:
                return
            yield [item_of(ns, r[0], record_of(r[1:], self.codec)) for r in rows]
            if len(rows) < batch_size:
                return
            last = rows[-1][0]

    def search(
        self,
        prefix: tuple[str, ...],
        query: str | None,
        filter: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        vector: Sequence[float] | str | None,
    ) -> list[SearchHit]:
        """Filters (``_search``), BM25 and vectors (``_rank``), as the file store ranks."""
        if (query is not None or vector is not None) and not self._indexed:
            raise UnsupportedFeatureError(
                f"store {self.location} has no search index yet: open it read-write once with this filemem to build it",
                feature="search",
                backend=self.name,
            )
        try:
            return self._search(prefix, query, filter, limit, offset, vector)
        except psycopg.Error as exc:
            err = translate(exc, "search", timeout_s=self.lock_timeout_s)
            raise (StoreClosedError(str(err)) if isinstance(err, RetryableError) else err) from exc

    def _search(
        self,
        prefix: tuple[str, ...],
        query: str | None,
        filter: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        vector: Sequence[float] | str | None,
    ) -> list[SearchHit]:
        self.check_open()
        return search(
            lambda sql, params: self._query("search", sql, params),
            self.codec,
            prefix,
            query,
            filter,
            limit,
            offset,
            vector,
            self.ranker,
        )

    # ------------------------------------------------------------------ writes

    def apply(self, ops: list[Op]) -> list[Any]:
        self.check_open()
        results = self._writer.apply(ops)
        if self.after_apply is not None:
            self.after_apply(ops)
        return results

    # ------------------------------------------------------------------ the rest of EngineAPI

    def namespace_exists(self, namespace: tuple[str, ...]) -> bool:
        """EngineAPI: True (a namespace needs no directory here; a read answers the rest)."""
        return True

    def changed(self) -> bool:
        """EngineAPI: always True: this process caches nothing, so any read may be stale otherwise."""
        return True

    def prepare_update(self, op: Op) -> None:
        """Nothing to prepare: a namespace needs no directory here."""

    # ------------------------------------------------------------------ change feed

    def subscribe(self, callback: Callable[[Change], object], prefix: tuple[str, ...], max_queue: int) -> Subscription:
        self.check_open()
        return self.feed.subscribe(callback, prefix, max_queue)

    def subscribe_async(self, prefix: tuple[str, ...], max_queue: int) -> Subscription:
        self.check_open()
        return self.feed.subscribe_async(prefix, max_queue)

    # ------------------------------------------------------------------ upkeep

    def _maybe_sweep(self) -> None:
        if time.monotonic() - self._last_sweep < SWEEP_INTERVAL_S or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._last_sweep = time.monotonic()
            self.sweep()
        finally:
            self._sweep_lock.release()

    def sweep(self, *, outbox_keep_s: float = OUTBOX_KEEP_S) -> dict[str, int]:
        """Delete up to SWEEP_ROWS expired records (skipping rows a writer holds) and prune the outbox."""
        self.check_open()
        if self.readonly:
            return {"expired": 0, "outbox": 0}
        with self._conns.conn() as conn:
            try:
                with conn.transaction():
                    if self._indexed:  # the records and their index rows go together
                        row = conn.execute(SWEEP_SQL, (SWEEP_ROWS,)).fetchone()
                        expired = int(row[0]) if row else 0
                    else:
                        expired = conn.execute(
                            "DELETE FROM filemem_records WHERE ctid IN (SELECT ctid FROM filemem_records"
                            f" WHERE expires_at <= {NOW_SQL} LIMIT %s FOR UPDATE SKIP LOCKED)",
                            (SWEEP_ROWS,),
                        ).rowcount
                with conn.transaction():
                    # Pruned ids are noted first, so a reconnecting listener that
                    # needed them learns it missed changes.
                    top = conn.execute(
                        f"SELECT max(id) FROM filemem_outbox WHERE at < {NOW_SQL} - %s", (outbox_keep_s,)
                    ).fetchone()
                    pruned = 0
                    if top is not None and top[0] is not None:
                        conn.execute(
                            "UPDATE filemem_meta SET value = greatest(value::bigint, %s)::text"
                            " WHERE key = 'outbox_pruned_below'",
                            (int(top[0]) + 1,),
                        )
                        pruned = conn.execute("DELETE FROM filemem_outbox WHERE id <= %s", (top[0],)).rowcount
            except psycopg.Error as exc:
                err = translate(exc, "sweep", timeout_s=self.lock_timeout_s)
                raise (StoreClosedError(str(err)) if isinstance(err, RetryableError) else err) from exc
        self.counters["swept"] += max(expired, 0)
        return {"expired": max(expired, 0), "outbox": max(pruned, 0)}

    def compact(self) -> dict[str, int]:
        """The server's upkeep (the file store's compact drops expired records too)."""
        got = self.sweep()
        return {"expired_dropped": got["expired"], "outbox_pruned": got["outbox"]}

    def upkeep_figures(self, lock_probe_s: float) -> dict[str, Any]:
        """For ``health()``: expired rows, stale outbox rows, long-held key locks (``_upkeep``)."""
        return upkeep_figures(lambda sql, params: self._query("health", sql, params), lock_probe_s, OUTBOX_KEEP_S)

    def check(self, fix: bool) -> list[Finding]:
        """What applies on a server: the schema version, orphaned outbox rows, expired rows not yet swept.

        (The Store adds the session tables' findings.)
        """
        fix = fix and not self.readonly
        findings = server_check(lambda sql, params: self._query("check", sql, params), self.location, fix=fix)
        rows = self._query(
            "check",
            f"SELECT count(*) FROM filemem_records WHERE expires_at <= {NOW_SQL}",
            (),
        )
        expired = rows[0][0]
        findings += self._check_index(fix)
        if expired:
            fixed = False
            if fix and not self.readonly:
                self.sweep()
                fixed = True
            findings.append(
                Finding(
                    "expired-pending",
                    self.location,
                    f"{expired} expired records not yet swept (never served)",
                    severity="info",
                    fixed=fixed,
                    action="swept" if fixed else "",
                    details={"rows": expired},
                )
            )
        return findings

    def _check_index(self, fix: bool) -> list[Finding]:
        if not self._indexed:
            return []
        with self._conns.conn() as conn:
            try:
                return index_findings(conn, self.location, fix=fix and not self.readonly)
            except psycopg.Error as exc:
                raise translate(exc, "check", timeout_s=self.lock_timeout_s) from exc

    def async_reads(self, max_size: int) -> AsyncReads:
        """Reads over an async pool for ``AsyncStore`` (``_aio``): same statements, on the event loop."""
        return AsyncReads(
            self._conns.url, self._conns._settings, self.codec, lock_timeout_s=self.lock_timeout_s, max_size=max_size
        )

    def describe(self, namespace: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Figures for ``filemem info/stats/ls`` (``_describe``): the store's, or one namespace's."""
        q = lambda sql, params: self._query("describe", sql, params)  # noqa: E731
        if namespace is not None:
            return one_namespace(q, namespace)
        return {**store_figures(q), "namespaces": namespace_figures(q, None)}

    def stats(self) -> dict[str, Any]:
        self.check_open()
        return {
            "path": self.location,
            "backend": self.name,
            "codec": self.codec.name,
            "durability": self.durability,
            "consistency": "strict",
            "vectors": self.ranker.vectors.label(),
            **self._writer.counters,
            **self.counters,
            **self.ranker.counters,
            "feed": {
                "subscribers": len(self.feed._subs),
                "published": self.feed.published,
                "last_id": self.feed.last_id,
                "reconnects": self.feed.reconnects,
            },
        }


def _codec_name(codec: str | Codec | None) -> str | None:
    if codec is None or isinstance(codec, str):
        return codec
    return codec.name


def _redacted(url: str) -> str:
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://?"
    return f"postgresql://{info.get('user', '')}@{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"
