"""Keys and namespaces: validation, escaping to directory names, key hashing (layer L1).

Two different namespaces must never map to the same directory, whatever
characters they contain, and a namespace must never name a path outside the
store. Each segment is therefore *escaped*, not just joined: every byte of its
UTF-8 form outside ``[a-z0-9_-]`` becomes ``%XX`` (upper-case hex). Upper-case
letters are escaped too, so ``"Acme"`` and ``"acme"`` stay apart on
case-insensitive file systems (macOS, Windows). The escaped form never
contains ``.``, so it can never be ``.`` or ``..`` and never collides with a
file filemem writes (all of which contain a dot).

Prefix matching works on whole segments because each segment is one directory:
the children of ``("tenant", "acme")`` live under ``ns/tenant/acme/``, and
``("tenant", "acme-corp")`` is the sibling directory ``ns/tenant/acme-corp/``.
"""

from __future__ import annotations

import functools
from typing import Final

from ._digest import blake2b
from ._errors import InvalidKeyError

__all__ = [
    "DEVICE_NAMES",
    "KEY_MAX_CHARS",
    "escape_segment",
    "hash_bits",
    "legacy_segment",
    "normalize_namespace",
    "unescape_segment",
    "validate_key",
]

#: Longest key accepted, in characters. Keys live inside shard files, not in
#: file names, so this only guards against accidental megabyte keys.
KEY_MAX_CHARS: Final = 1024
#: Escaped segments become directory names; most file systems stop at 255 bytes.
_SEGMENT_MAX_BYTES: Final = 240
_NAMESPACE_MAX_DEPTH: Final = 32
_SAFE: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
#: Names Windows reserves for devices in every directory (whatever the case or
#: extension; escaped names are lower-case and dot-free, so these forms are
#: the only ones that can occur). A segment with one of these names gets its
#: first letter escaped (``con`` -> ``%63on``), so a store's files can be
#: copied to and opened on Windows.
DEVICE_NAMES: Final = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}
)
_HEX: Final = "0123456789ABCDEF"


def validate_key(key: object) -> str:
    """Return ``key`` if it is a usable key, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a str, not {type(key).__name__}", key=repr(key))
    if not key:
        raise InvalidKeyError("key must not be empty", key=key)
    if "/" in key or "\x00" in key or key in (".", ".."):
        raise InvalidKeyError(f"key {key!r} may not contain '/' or NUL, nor be '.' or '..'", key=key)
    if len(key) > KEY_MAX_CHARS:
        raise InvalidKeyError(f"key is {len(key)} characters long; the limit is {KEY_MAX_CHARS}", key=key[:64])
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidKeyError(f"key {key!r} is not valid Unicode (lone surrogate)", key=repr(key)) from None
    return key


def normalize_namespace(namespace: object) -> tuple[str, ...]:
    """Turn ``"a/b"``, ``("a", "b")`` or ``["a", "b"]`` into ``("a", "b")``, validated.

    A string is split on ``/``; a tuple's segments may not contain ``/``
    (as keys may not), so the two forms of the same text always name the same
    namespace, and every namespace ``list_namespaces`` returns can be passed
    back in either form.
    """
    if isinstance(namespace, str):
        segments = tuple(namespace.split("/")) if namespace else ()
    elif isinstance(namespace, (tuple, list)):
        segments = tuple(namespace)
    else:
        raise InvalidKeyError(
            f"namespace must be a tuple of str or a '/'-joined str, not {type(namespace).__name__}",
            namespace=repr(namespace),
        )
    if not segments:
        raise InvalidKeyError("namespace must have at least one segment", namespace=segments)
    if len(segments) > _NAMESPACE_MAX_DEPTH:
        raise InvalidKeyError(
            f"namespace has {len(segments)} segments; the limit is {_NAMESPACE_MAX_DEPTH}", namespace=segments
        )
    for segment in segments:
        if not isinstance(segment, str):
            raise InvalidKeyError(
                f"namespace segments must be str, not {type(segment).__name__}", namespace=repr(segments)
            )
        if not segment.isascii():
            try:
                segment.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidKeyError(
                    f"namespace segment {segment!r} is not valid Unicode (lone surrogate)", namespace=repr(segments)
                ) from None
        if not segment or segment in (".", "..") or "\x00" in segment or "/" in segment:
            raise InvalidKeyError(
                f"namespace segment {segment!r} is empty, '.', '..' or contains '/' or NUL", namespace=segments
            )
        if len(escape_segment(segment)) > _SEGMENT_MAX_BYTES:
            raise InvalidKeyError(f"namespace segment {segment[:32]!r}... is too long", namespace=segments)
    return segments


def escape_segment(segment: str) -> str:
    """Escape one namespace segment into a safe, unique directory name.

    >>> escape_segment("agent-1")
    'agent-1'
    >>> escape_segment("Acme Corp/..")
    '%41cme%20%43orp%2F%2E%2E'
    >>> escape_segment("nul")
    '%6Eul'
    """
    raw = segment.encode("utf-8")
    if all(b in _SAFE for b in raw):
        if segment in DEVICE_NAMES:
            return "%" + _HEX[raw[0] >> 4] + _HEX[raw[0] & 15] + segment[1:]
        return segment
    out: list[str] = []
    for b in raw:
        if b in _SAFE:
            out.append(chr(b))
        else:
            out.append("%" + _HEX[b >> 4] + _HEX[b & 15])
    return "".join(out)


def unescape_segment(name: str) -> str | None:
    """Invert :func:`escape_segment`; ``None`` if ``name`` is not an escaped segment."""
    out = bytearray()
    i = 0
    n = len(name)
    while i < n:
        c = name[i]
        if c == "%":
            hexpart = name[i + 1 : i + 3]
            if len(hexpart) != 2 or any(h not in _HEX for h in hexpart):
                return None
            out.append(int(hexpart, 16))
            i += 3
        elif ord(c) < 128 and ord(c) in _SAFE:
            out.append(ord(c))
            i += 1
        else:
            return None
    try:
        segment = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Only the canonical escaping is ours: "%61" for "a" is a foreign name.
    # A bare device name is the escaping of filemem before 0.2 (see
    # legacy_segment): still ours, so older stores stay readable.
    return segment if segment and (escape_segment(segment) == name or name in DEVICE_NAMES) else None


def legacy_segment(segment: str) -> str | None:
    """The directory name an older filemem gave ``segment``, when it differs from today's; else None.

    Only Windows device names (``con``, ``nul``, ...) changed: they used to be
    stored unescaped. The engine keeps using such a directory where one exists,
    so a store written before the change reads and writes as before.
    """
    return segment if segment in DEVICE_NAMES else None


@functools.lru_cache(maxsize=1 << 16)  # hot keys: a dict hit instead of a hash and a format
def hash_bits(key: str) -> str:
    """The 64-bit hash of ``key`` as a string of ``0``/``1``, most significant first.

    Shards are named by prefixes of this string; it must never change between
    versions (it is part of the on-disk format): BLAKE2b, 8-byte digest, of the
    key's UTF-8 bytes, big-endian.
    """
    return hash_bits_once(key)


def hash_bits_once(key: str) -> str:
    """:func:`hash_bits` without its cache, for keys a process meets once in bulk.

    The fold, a split and the forgetting of folded keys hash thousands of keys
    nobody in this process asked for: through the cache each one stayed, with
    its key and the cache's link, about 250 bytes (a whole store's keys in the
    folding process, up to 65,536 of them: 16 MB; issue 13), and pushed the
    keys this process does read out of it.
    """
    digest = blake2b(key.encode("utf-8"), digest_size=8).digest()
    return format(int.from_bytes(digest, "big"), "064b")
