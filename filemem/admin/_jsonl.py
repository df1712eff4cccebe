"""Export and import of records as JSON Lines (part of :mod:`filemem.admin`).

One line per record, after one header line::

    {"filemem_export": 1, "codec": "msgpack", "exported_at": 1795458108.0, "store": "/srv/memories"}
    {"namespace": ["agent-1", "facts"], "key": "sky", "value": "blue", "version": 3,
     "created_at": 1795458101.2, "updated_at": 1795458101.2}

JSON cannot hold everything msgpack can, so values are tagged where needed
(and only there): bytes become ``{"$bytes": "<base64>"}``, a map with a
non-string key becomes ``{"$map": [[key, value], ...]}``, and a genuine
one-entry dict whose key starts with ``$`` is wrapped as ``{"$dict": {...}}``
so it can never be mistaken for a tag. Import reverses the tagging exactly.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

from .._errors import FileMemError, InvalidValueError
from .._store import Store

__all__ = ["EXPORT_VERSION", "ImportReport", "export_records", "from_json_value", "import_records", "to_json_value"]

#: Version of the export format (the header line's ``filemem_export``).
EXPORT_VERSION: Final = 1
_TAGS: Final = frozenset({"$bytes", "$map", "$dict"})

ProgressFn = Callable[[int, int], None]


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON data, with bytes and non-string map keys tagged.

    >>> to_json_value({"raw": b"hi", 1: "one"})
    {'$map': [['raw', {'$bytes': 'aGk='}], [1, 'one']]}
    >>> to_json_value({"$ref": 1})
    {'$dict': {'$ref': 1}}
    """
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return {"$map": [[to_json_value(k), to_json_value(v)] for k, v in value.items()]}
        plain = {k: to_json_value(v) for k, v in value.items()}
        if len(plain) == 1 and next(iter(plain)).startswith("$"):
            return {"$dict": plain}
        return plain
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def from_json_value(data: Any) -> Any:
    """Undo :func:`to_json_value`.

    >>> from_json_value({"$map": [["raw", {"$bytes": "aGk="}], [1, "one"]]})
    {'raw': b'hi', 1: 'one'}
    """
    if isinstance(data, list):
        return [from_json_value(v) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1:
        ((tag, inner),) = data.items()
        if tag == "$bytes":
            if not isinstance(inner, str):
                raise InvalidValueError("$bytes must hold a base64 string")
            try:
                return base64.b64decode(inner, validate=True)
            except ValueError as exc:
                raise InvalidValueError(f"$bytes is not valid base64: {exc}") from None
        if tag == "$map":
            if not isinstance(inner, list) or not all(isinstance(p, list) and len(p) == 2 for p in inner):
                raise InvalidValueError("$map must hold a list of [key, value] pairs")
            out: dict[Any, Any] = {}
            for k, v in inner:
                key = from_json_value(k)
                try:
                    out[key] = from_json_value(v)
                except TypeError:
                    raise InvalidValueError(f"$map key {k!r} cannot be a map key") from None
            return out
        if tag == "$dict":
            if not isinstance(inner, dict):
                raise InvalidValueError("$dict must hold an object")
            return {k: from_json_value(v) for k, v in inner.items()}
    return {k: from_json_value(v) for k, v in data.items()}


def _export_lines(store: Store, namespaces: list[tuple[str, ...]]) -> Iterator[tuple[int, list[str]]]:
    for i, ns in enumerate(namespaces):
        lines = []
        for item in store.items(ns):
            row: dict[str, Any] = {
                "namespace": list(item.namespace),
                "key": item.key,
                "value": to_json_value(item.value),
                "version": item.version,
                "created_at": item.created_at,
                "updated_at": item.updated_at,
            }
            if item.expires_at is not None:
                row["expires_at"] = item.expires_at
            lines.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
        yield i, lines


def export_records(
    store: Store,
    out: IO[str],
    namespace_prefix: tuple[str, ...] | str | None = None,
    *,
    header: bool = True,
    progress: ProgressFn | None = None,
) -> int:
    """Write every live record under ``namespace_prefix`` to ``out`` as JSON Lines; return the record count.

    Lock-free, namespace by namespace (each namespace is read shard by shard,
    like :meth:`Store.items`): safe on a live store and never blocks a writer.
    Records written while the export runs may or may not be included.

    Example::

        with filemem.Store("./memories", readonly=True) as store, open("dump.jsonl", "w") as fh:
            n = filemem.admin.export_records(store, fh)
    """
    namespaces = store.list_namespaces(prefix=namespace_prefix)
    if header:
        head = {"filemem_export": EXPORT_VERSION, "codec": store.codec, "exported_at": time.time(), "store": store.path}
        out.write(json.dumps(head) + "\n")
    count = 0
    for i, lines in _export_lines(store, namespaces):
        for line in lines:
            out.write(line + "\n")
        count += len(lines)
        if progress is not None:
            progress(i + 1, len(namespaces))
    return count


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What :func:`import_records` did (or, with ``dry_run``, would do).

    ``imported``: records written (or that would be); ``expired_skipped``:
    records whose ``expires_at`` had already passed; ``batches``: commits
    made (each all or nothing); ``namespaces``: distinct namespaces seen.
    """

    imported: int
    expired_skipped: int
    batches: int
    namespaces: int
    dry_run: bool


@dataclass(frozen=True, slots=True)
class _Row:
    namespace: tuple[str, ...]
    key: str
    value: Any
    expires_at: float | None


def _parse(lines: Iterable[str]) -> Iterator[tuple[int, _Row]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InvalidValueError(f"line {number}: not valid JSON ({exc})") from None
        except RecursionError:
            # The store would refuse it anyway (values nest at most MAX_DEPTH levels).
            raise InvalidValueError(f"line {number}: nested too deeply to read") from None
        if not isinstance(obj, dict):
            raise InvalidValueError(f"line {number}: expected a JSON object")
        if "filemem_export" in obj and not obj.keys() & {"namespace", "key", "value"}:
            version = obj["filemem_export"]
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise InvalidValueError(f"line {number}: export format {version!r} is not a valid format version")
            if version > EXPORT_VERSION:
                raise InvalidValueError(f"line {number}: export format {version!r} is newer than this filemem reads")
            continue
        ns, key = obj.get("namespace"), obj.get("key")
        if isinstance(ns, str):
            ns = ns.split("/")
        if not isinstance(ns, list) or not ns or not all(isinstance(s, str) for s in ns):
            raise InvalidValueError(f"line {number}: 'namespace' must be a list of strings or a 'a/b' string")
        if not isinstance(key, str):
            raise InvalidValueError(f"line {number}: 'key' must be a string")
        if "value" not in obj:
            raise InvalidValueError(f"line {number}: no 'value'")
        expires = obj.get("expires_at")
        if expires is not None and (
            isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires)
        ):
            raise InvalidValueError(f"line {number}: 'expires_at' must be a finite number of seconds since the epoch")
        try:
            value = from_json_value(obj["value"])
        except InvalidValueError as exc:
            raise InvalidValueError(f"line {number}: {exc.message}") from None
        yield number, _Row(tuple(ns), key, value, None if expires is None else float(expires))


def import_records(
    store: Store,
    lines: Iterable[str],
    *,
    batch_size: int = 200,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Write records from JSON Lines (as :func:`export_records` writes them) into ``store``.

    Every line is parsed and validated first (namespace, key, value encodable
    by the store's codec and within its size limit); one bad line raises
    ``InvalidValueError``/``InvalidKeyError`` naming the line, and nothing is
    written. Then records are committed ``batch_size`` at a time, each batch
    all or nothing; an existing key is overwritten. ``dry_run`` stops after
    validation (it works on a read-only store).

    Preserved: namespace, key, value (exactly, bytes and non-string map keys
    included) and expiry (``expires_at`` becomes a TTL from now, so it lands
    within milliseconds of the original; records already expired are
    skipped). Not preserved: ``version``, ``created_at`` and ``updated_at``,
    which the store assigns afresh (versions are shard revisions of the
    target store; importing them could make a version repeat).

    Example::

        with filemem.Store("./copy") as store, open("dump.jsonl") as fh:
            report = filemem.admin.import_records(store, fh, dry_run=True)
    """
    if batch_size < 1:
        raise InvalidValueError("batch_size must be at least 1")
    rows: list[_Row] = []
    expired = 0
    checker = store.batch()  # never committed: queueing a put validates it
    now = time.time()
    for number, row in _parse(lines):
        if row.expires_at is not None and row.expires_at <= now:
            expired += 1
            continue
        try:
            checker.put(row.namespace, row.key, row.value, ttl=_ttl(row, now))
        except FileMemError as exc:
            raise type(exc)(f"line {number}: {exc.message}") from None
        rows.append(row)
    namespaces = len({r.namespace for r in rows})
    batches = (len(rows) + batch_size - 1) // batch_size
    if dry_run:
        return ImportReport(len(rows), expired, batches, namespaces, True)
    done = 0
    committed = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        now = time.time()
        try:
            with store.batch() as b:
                for row in chunk:
                    b.put(row.namespace, row.key, row.value, ttl=_ttl(row, now))
        except FileMemError as exc:
            exc.add_note(f"{done} of {len(rows)} records were imported in {committed} batches before this one")
            raise
        done += len(chunk)
        committed += 1
        if progress is not None:
            progress(done, len(rows))
    return ImportReport(done, expired, committed, namespaces, False)


def _ttl(row: _Row, now: float) -> float | None:
    if row.expires_at is None:
        return None
    # A record that expired while we worked gets a TTL too short to be seen.
    return max(row.expires_at - now, 1e-6)
