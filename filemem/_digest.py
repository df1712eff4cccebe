"""BLAKE2b and SHA-256 from CPython's builtin modules, without importing ``hashlib`` (layer L0).

Invariant: the functions here return exactly the bytes ``hashlib.blake2b`` and
``hashlib.sha256`` return (names of shards, index files and lock ids are built
from them and are part of the on-disk format); only the import differs.
``import hashlib`` loads OpenSSL's ``_hashlib`` as well, 3.6 MB of RSS in
every agent process, which the store never needs. A Python built without its
builtin hashes falls back to ``hashlib``.

>>> blake2b(b"key", digest_size=8).hexdigest() == __import__("hashlib").blake2b(b"key", digest_size=8).hexdigest()
True
"""

from __future__ import annotations

__all__ = ["blake2b", "sha256"]

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the builtin modules have no stubs; their functions are hashlib's
    from hashlib import blake2b, sha256
else:
    try:
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - a CPython built without its builtin hashes
        from hashlib import blake2b

    try:
        from _sha2 import sha256  # CPython 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # CPython 3.11
        except ImportError:  # pragma: no cover - a CPython built without its builtin hashes
            from hashlib import sha256
