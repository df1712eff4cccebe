"""Bearer tokens of ``filemem serve``: the token file, scopes and namespace prefixes (layer L7).

Invariant: a request is allowed only if its token's scope covers the action
and one of its prefixes covers the namespace *by whole segments*: a token
limited to ``tenant/acme`` never reaches ``tenant/acme-corp``. The token
file holds only SHA-256 digests of the tokens (so a leaked file reveals no
usable token), is created 0600, and is compared in constant time
(``hmac.compare_digest`` against every entry, no early exit). Tokens are
never logged; only their names are.

The file is JSON::

    {"tokens": [{"name": "admin", "sha256": "<hex>", "scopes": ["read", "write", "admin"], "prefixes": []}]}

``prefixes: []`` means the whole store. Standard library only: the command
line imports this module without the ``server`` extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from .. import InvalidValueError, StorageError

__all__ = ["SCOPES", "Principal", "TokenSet", "add_token", "ensure_token_file", "load_tokens"]

#: ``read``: records, keys, namespaces, search, sessions, the change feed.
#: ``write``: put, delete, batch. ``admin``: everything, including stopping
#: sessions, check, stats and health of the whole store.
SCOPES: Final = ("read", "write", "admin")
_TOKEN_BYTES: Final = 32


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _split(prefix: str) -> tuple[str, ...]:
    segments = tuple(s for s in prefix.split("/") if s)
    if not segments:
        raise InvalidValueError(f"a token prefix needs at least one segment, not {prefix!r}")
    return segments


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: a token's name, scopes and namespace prefixes (``()``: everywhere).

    Example::

        p = Principal("acme-reader", frozenset({"read"}), (("tenant", "acme"),))
        assert p.covers(("tenant", "acme", "facts")) and not p.covers(("tenant", "acme-corp"))
    """

    name: str
    scopes: frozenset[str]
    prefixes: tuple[tuple[str, ...], ...] = ()

    @property
    def unrestricted(self) -> bool:
        """Whether the token reaches the whole store."""
        return not self.prefixes

    def can(self, scope: str) -> bool:
        """Whether the token holds ``scope`` (``admin`` holds every scope)."""
        return scope in self.scopes or "admin" in self.scopes

    def covers(self, namespace: Sequence[str]) -> bool:
        """Whether ``namespace`` is at or under one of the token's prefixes (whole segments)."""
        if not self.prefixes:
            return True
        ns = tuple(namespace)
        return any(ns[: len(p)] == p for p in self.prefixes)

    def may_see_under(self, prefix: Sequence[str]) -> bool:
        """Whether anything under ``prefix`` can be visible: it is covered, or it contains a token prefix."""
        pre = tuple(prefix)
        return self.covers(pre) or any(p[: len(pre)] == pre for p in self.prefixes)

    def as_json(self) -> dict[str, object]:
        """The ``/v1/whoami`` body."""
        return {
            "name": self.name,
            "scopes": sorted(self.scopes, key=SCOPES.index),
            "prefixes": ["/".join(p) for p in self.prefixes],
        }


#: Who every request is when the server runs without a token file (loopback only).
ANONYMOUS_ADMIN: Final = Principal("anonymous", frozenset(SCOPES))


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


class TokenSet:
    """The tokens of one token file; :meth:`authenticate` maps a presented token to its principal."""

    def __init__(self, entries: Iterable[_Entry]) -> None:
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of ``token``, or None. Compares against every entry in constant time."""
        presented = _digest(token).encode("ascii")
        found: Principal | None = None
        for entry in self._entries:
            # No early exit: the time taken says nothing about which entry matched.
            if hmac.compare_digest(presented, entry.digest):
                found = entry.principal
        return found


def _read(path: str) -> list[dict[str, object]]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read token file {path}: {exc}") from exc
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
        raise StorageError(f"token file {path} is not {{'tokens': [...]}}")
    return tokens


def _write(path: str, tokens: list[dict[str, object]]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot create token file {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"tokens": tokens}, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # the umask may have taken bits away, never added: be explicit
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"cannot write token file {path}: {exc}") from exc


def load_tokens(path: str | os.PathLike[str]) -> TokenSet:
    """Read a token file (a missing file has no tokens).

    >>> tokens = load_tokens("server-tokens.json")  # doctest: +SKIP
    >>> tokens.authenticate("wrong") is None  # doctest: +SKIP
    True
    """
    entries = []
    for raw in _read(os.fspath(path)):
        name, digest, scopes, prefixes = raw.get("name"), raw.get("sha256"), raw.get("scopes"), raw.get("prefixes", [])
        if (
            not isinstance(name, str)
            or not isinstance(digest, str)
            or not isinstance(scopes, list)
            or not all(s in SCOPES for s in scopes)
            or not isinstance(prefixes, list)
            or not all(isinstance(p, str) for p in prefixes)
        ):
            raise StorageError(f"token file {path}: bad entry {raw.get('name')!r}")
        entries.append(
            _Entry(
                digest.encode("ascii"),
                Principal(name, frozenset(scopes), tuple(_split(p) for p in prefixes)),
            )
        )
    return TokenSet(entries)


def add_token(
    path: str | os.PathLike[str],
    name: str,
    scopes: Sequence[str] = ("read",),
    prefixes: Sequence[str] = (),
) -> str:
    """Add a token to the token file (created 0600 if missing) and return it; only its digest is stored.

    ``scopes``: any of ``read``, ``write``, ``admin``. ``prefixes``: namespaces
    (``"tenant/acme"``) the token is limited to, by whole segments; empty: the
    whole store.

    >>> token = add_token("server-tokens.json", "acme-reader", ["read"], ["tenant/acme"])  # doctest: +SKIP
    """
    if not name or not isinstance(name, str):
        raise InvalidValueError("a token needs a name")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InvalidValueError(f"scopes must be some of {', '.join(SCOPES)}, not {list(scopes)!r}")
    normal = ["/".join(_split(p)) for p in prefixes]
    target = os.fspath(path)
    tokens = _read(target)
    if any(t.get("name") == name for t in tokens):
        raise InvalidValueError(f"token file {target} already has a token named {name!r}")
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    tokens.append(
        {"name": name, "sha256": _digest(token), "scopes": sorted(set(scopes), key=SCOPES.index), "prefixes": normal}
    )
    _write(target, tokens)
    return token


def ensure_token_file(path: str | os.PathLike[str]) -> str | None:
    """Create the token file with one admin token if it does not exist; return that token (else None).

    The token is shown once: the file keeps only its digest.
    """
    if os.path.exists(os.fspath(path)):
        return None
    return add_token(path, "admin", SCOPES)
