"""Codecs: how values become bytes in a shard (layer L1; public extension point).

A codec is any object with the :class:`Codec` shape. Its ``name`` is written
into every shard header, so a store stays readable when its default codec
changes (``filemem convert``). Two ship with filemem:

* :class:`JsonCodec` (``"json"``): JSON types only; shards stay readable in
  any text editor, one record per line.
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
from typing import Any, Final, Protocol, runtime_checkable

import msgpack

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


class JsonCodec:
    """JSON, UTF-8, compact, NaN and Infinity refused (they are not JSON).

    Tuples become lists, as with every JSON library.
    """

    name: str = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder()

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj`` as compact UTF-8 JSON.

        >>> JsonCodec().encode({"a": [1, 2]})
        b'{"a":[1,2]}'
        """
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
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CorruptShardError(f"invalid JSON: {exc}") from exc

    def encode_pair(self, key: str, value: Any) -> bytes:
        """``"key":value`` with no newline inside (json escapes them), one per line on disk."""
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
