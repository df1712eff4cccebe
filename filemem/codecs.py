"""Codecs: how values become bytes in a shard (layer L1; public extension point).

A codec is any object with the :class:`Codec` shape. Its ``name`` is written
into every shard header, so a store stays readable when its default codec
changes (``filemem convert``). Two ship with filemem:

* :class:`JsonCodec` (``"json"``): JSON types only; shards stay readable in
  any text editor, one record per line. It runs on orjson when that is
  installed (a dependency of filemem) and on the standard library's ``json``
  otherwise; both give the same values, the same refusals and the same errors
  (see :class:`JsonCodec`).
* :class:`MsgpackCodec` (``"msgpack"``): JSON types plus ``bytes`` and
  non-string map keys; smaller and faster.

Neither ever executes code from data (no pickle, no object hooks). Encoding
errors become :class:`filemem.InvalidValueError` here, decoding errors
:class:`filemem.CorruptShardError`, and nowhere else.

Example::

    from filemem.codecs import get_codec
    codec = get_codec("msgpack")
    assert codec.decode(codec.encode({"a": b"\\x00"})) == {"a": b"\\x00"}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Final, Protocol, runtime_checkable

import msgpack

try:  # the fast path of JsonCodec; without it (an exotic platform) the stdlib path serves alone
    import orjson as _orjson_module

    _ORJSON: ModuleType | None = _orjson_module
except ImportError:  # pragma: no cover - orjson ships wheels for the platforms CI runs on
    _ORJSON = None

from ._errors import CorruptShardError, InvalidValueError

__all__ = ["Codec", "JsonCodec", "MsgpackCodec", "available_codecs", "get_codec"]


@runtime_checkable
class Codec(Protocol):
    """What the shard layer needs from a codec.

    ``encode_pair``/``join_map`` let the engine re-encode only the record a
    write changed: a shard body is the map joined from per-record pairs, and
    ``decode`` of that body must give back the whole map.
    ``split_map`` may return the raw pairs of a body it can cut cheaply (in
    the order ``decode`` yields keys), or ``None``.
    """

    name: str

    def encode(self, obj: Any) -> bytes:
        """Encode one value; raise InvalidValueError if it cannot be encoded."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes made by :meth:`encode` or :meth:`join_map`."""
        ...

    def encode_pair(self, key: str, value: Any) -> bytes:
        """Encode one map entry, ready for :meth:`join_map`."""
        ...

    def join_map(self, pairs: Sequence[bytes]) -> bytes:
        """Join encoded entries into the encoding of one map."""
        ...

    def split_map(self, body: bytes, count: int) -> list[bytes] | None:
        """The encoded entries of a map body, or None when not cheaply known."""
        ...


def _check_map_keys(obj: Any, allowed: tuple[type, ...], complaint: str) -> None:
    """Raise InvalidValueError for the first map key, at any depth, that is not of an ``allowed`` type."""
    stack = [obj]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            for k, v in cur.items():
                if not isinstance(k, allowed):
                    raise InvalidValueError(complaint.format(kind=type(k).__name__, key=k))
                if isinstance(v, (dict, list, tuple)):
                    stack.append(v)
        elif isinstance(cur, (list, tuple)):
            stack.extend(v for v in cur if isinstance(v, (dict, list, tuple)))


def _check_json_keys(obj: Any) -> None:
    # json.dumps silently turns int/float/None keys into strings, so the value
    # read back would differ from the value written. Refuse instead.
    _check_map_keys(obj, (str,), "JSON objects need str keys; got {kind} key {key!r} (use codec='msgpack')")


_MSGPACK_KEY_TYPES = (str, bytes, int, float, bool, type(None))


def _check_msgpack_keys(obj: Any) -> None:
    # msgpack packs a tuple key as an array, which decodes as a list: an
    # unhashable key, so the whole shard would fail to load for everyone.
    # Refuse such keys before a byte is written.
    _check_map_keys(
        obj,
        _MSGPACK_KEY_TYPES,
        "msgpack map keys must be str, bytes, int, float, bool or None; got {kind} key {key!r} "
        "(it would not read back as the same key)",
    )


#: Types whose JSON text orjson and the stdlib agree on (exact types: subclasses go the stdlib way).
#: A float may still be NaN or infinite, which orjson writes as ``null``: encode() looks for that.
_PLAIN_LEAVES: Final = frozenset({str, int, float, bool, type(None)})
_PLAIN_NODES: Final = _PLAIN_LEAVES | {dict, list, tuple}
#: Deeper than this, the plain-value walk gives up and the stdlib path decides (it finds cycles, too).
_PLAIN_MAX_DEPTH: Final = 64
#: A run of this many digits may be an integer beyond 64 bits, which orjson would read as a float.
_BIG_INT_DIGITS: Final = b"0" * 19
_DIGITS_ONLY: Final = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))


def _plain(obj: Any, depth: int = 0) -> bool:
    """Is ``obj`` made only of exact dict/list/tuple/str/int/float/bool/None?

    For such a value orjson and the stdlib encoder agree on what they accept
    and on the value read back, but for what orjson refuses (non-str keys,
    ints beyond 64 bits, lone surrogates) and NaN/Infinity (which it writes as
    null): encode() sends those to the stdlib too. Anything else (a subclass,
    a UUID, an Enum, a datetime, a cycle) goes to the stdlib path, which
    refuses or accepts exactly as before. Flat containers are checked at C
    speed (one ``issuperset`` over their value types).
    """
    t = type(obj)
    if t is dict:
        values: Any = obj.values()
    elif t is list or t is tuple:
        values = obj
    else:
        return t in _PLAIN_LEAVES
    if _PLAIN_LEAVES.issuperset(map(type, values)):
        return True
    if depth >= _PLAIN_MAX_DEPTH or not _PLAIN_NODES.issuperset(map(type, values)):
        return False
    for v in values:  # noqa: SIM110 - a plain loop: all() over a generator costs more on this hot path
        if type(v) not in _PLAIN_LEAVES and not _plain(v, depth + 1):
            return False
    return True


class JsonCodec:
    """JSON, UTF-8, compact, NaN and Infinity refused (they are not JSON).

    Tuples become lists, as with every JSON library.

    Two engines, one behaviour. orjson (10-50x faster on shard-sized data,
    see docs/benchmarks.md) encodes every value made only of exact JSON types
    with str keys and finite floats, and decodes every body that has no run
    of 19 digits; everything else goes through the standard library's
    ``json``, exactly as before orjson was adopted. So the refusals (NaN,
    Infinity, non-str keys, lone surrogates, unknown types such as UUID or
    datetime, which orjson alone would accept) and their error types are the
    stdlib's, integers beyond 64 bits round-trip exactly (orjson refuses to
    write them and would read them back as floats), and every body the
    stdlib reads, orjson-written or not, decodes to the same value. The bytes
    may differ only in how a float is spelled (``1e-05`` vs ``0.00001``):
    the same number either way.
    """

    name: str = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder()
        #: orjson, or None for the stdlib alone (tools/bench_codecs.py compares the two this way).
        self.fast: ModuleType | None = _ORJSON

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj`` as compact UTF-8 JSON.

        >>> JsonCodec().encode({"a": [1, 2]})
        b'{"a":[1,2]}'
        """
        fast = self.fast
        if fast is not None and _plain(obj):
            try:
                out: bytes = fast.dumps(obj)
            except TypeError:  # a non-str key, an int beyond 64 bits, a lone surrogate: json decides
                pass
            else:
                if b"null" not in out:  # else maybe a NaN or an infinity: json refuses those, or writes null
                    return out
        return self._encode_stdlib(obj)

    def _encode_stdlib(self, obj: Any) -> bytes:
        try:
            text = self._encoder.encode(obj)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidValueError(f"value cannot be encoded as JSON: {exc}") from exc
        if isinstance(obj, (dict, list, tuple)):
            _check_json_keys(obj)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:
            # A lone surrogate is a Python str but no Unicode text: it has no UTF-8 form.
            raise InvalidValueError(f"value cannot be encoded as JSON: {exc.reason} (lone surrogate?)") from exc

    def decode(self, data: bytes) -> Any:
        """Decode UTF-8 JSON."""
        fast = self.fast
        if fast is not None and _BIG_INT_DIGITS not in data.translate(_DIGITS_ONLY):
            try:
                return fast.loads(data)
            except fast.JSONDecodeError:  # NaN literals, a BOM, lone surrogates...: json decides, as before
                pass
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CorruptShardError(f"invalid JSON: {exc}") from exc

    def encode_pair(self, key: str, value: Any) -> bytes:
        """``"key":value`` with no newline inside (json escapes them), one per line on disk."""
        fast = self.fast
        if fast is not None and type(key) is str and _plain(value):
            try:
                out: bytes = fast.dumps({key: value})
            except TypeError:
                pass
            else:
                if b"null" not in out:
                    return out[1:-1]  # one call for both, without the braces
        return self.encode(key) + b":" + self.encode(value)

    def join_map(self, pairs: Sequence[bytes]) -> bytes:
        """``{`` newline, the pairs one per line, ``}``: valid JSON a person can read and diff."""
        if not pairs:
            return b"{}\n"
        return b"{\n" + b",\n".join(pairs) + b"\n}\n"

    def split_map(self, body: bytes, count: int) -> list[bytes] | None:
        """Cut a body made by :meth:`join_map` back into its pairs (None if it was not)."""
        if count == 0:
            return []
        lines = body.split(b"\n")
        # "{", count pair lines, "}", "" after the final newline.
        if len(lines) != count + 3 or lines[0] != b"{" or lines[-2] != b"}":
            return None
        pairs = lines[1:-2]
        for i in range(count - 1):
            if not pairs[i].endswith(b","):
                return None
            pairs[i] = pairs[i][:-1]
        return pairs


class MsgpackCodec:
    """MessagePack with the bin type for bytes; maps may have non-str keys."""

    name: str = "msgpack"

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, datetime=False, strict_types=False)

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj`` as MessagePack.

        >>> MsgpackCodec().encode([1, b"x"])
        b'\\x92\\x01\\xc4\\x01x'
        """
        if isinstance(obj, (dict, list, tuple)):
            _check_msgpack_keys(obj)
        try:
            return msgpack.packb(obj, use_bin_type=True, datetime=False)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise InvalidValueError(f"value cannot be encoded as msgpack: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        """Decode MessagePack; ext types and timestamps are refused, never interpreted."""
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            raise CorruptShardError(f"invalid msgpack: {exc}") from exc

    def encode_pair(self, key: str, value: Any) -> bytes:
        """The key then the value, each packed."""
        return self.encode(key) + self.encode(value)

    def join_map(self, pairs: Sequence[bytes]) -> bytes:
        """A map header for ``len(pairs)`` entries, then the entries."""
        header: bytes = msgpack.Packer().pack_map_header(len(pairs))
        return header + b"".join(pairs)

    def split_map(self, body: bytes, count: int) -> list[bytes] | None:
        """Not cheaply known for msgpack: the engine re-encodes on the next write."""
        return None


_CODECS: Final[dict[str, type[JsonCodec] | type[MsgpackCodec]]] = {"json": JsonCodec, "msgpack": MsgpackCodec}


def available_codecs() -> list[str]:
    """Names accepted by :func:`get_codec`, sorted."""
    return sorted(_CODECS)


def get_codec(codec: str | Codec) -> Codec:
    """Return the codec named ``codec`` (``"json"`` or ``"msgpack"``), or ``codec`` itself.

    >>> get_codec("json").name
    'json'
    """
    if not isinstance(codec, str):
        if isinstance(codec, Codec):
            return codec
        raise InvalidValueError(f"codec must be a name or a Codec, not {type(codec).__name__}")
    try:
        return _CODECS[codec]()
    except KeyError:
        raise InvalidValueError(f"unknown codec {codec!r}; choose one of {available_codecs()}") from None
