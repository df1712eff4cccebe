"""Site visits: per-URL and per-domain figures kept exact by many processes at once.

Each visit updates two records in one batch (all or nothing): the URL's, keyed
by a hash of the normalised URL, and its domain's. Both are atomic
read-modify-writes, so eight processes visiting one URL end with exact counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from .._errors import InvalidValueError
from .._types import NamespaceLike
from ._common import MAX_DURATION_S, Snippet, check_number, check_positive_int, namespace
from ._core import Face, async_op, sync_op
from ._steps import BatchCall, Call, Plan, SearchCall
from ._text import slug, stable_key

if TYPE_CHECKING:
    from .._async import AsyncStore
    from .._store import Store

__all__ = ["AsyncSites", "SiteStats", "Sites", "normalise_url"]

_MAX_NOTES: Final = 5
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class SiteStats:
    """Figures of one URL (or one domain): visits, successes, durations, first and last visit, last notes."""

    url: str
    domain: str
    visits: int
    successes: int
    total_duration_s: float
    last_duration_s: float
    first_visit: float
    last_visit: float
    notes: list[str]
    score: float = 0.0

    @property
    def success_rate(self) -> float:
        return self.successes / self.visits if self.visits else 0.0

    @property
    def mean_duration_s(self) -> float:
        return self.total_duration_s / self.visits if self.visits else 0.0

    @classmethod
    def of(cls, v: dict[str, Any], score: float = 0.0) -> SiteStats:
        return cls(
            v.get("url", ""),
            v["domain"],
            int(v["visits"]),
            int(v["successes"]),
            float(v["total_duration_s"]),
            float(v["last_duration_s"]),
            float(v["first_visit"]),
            float(v["last_visit"]),
            list(v.get("notes") or []),
            score,
        )

    def text(self) -> str:
        """A one-line rendering for a prompt."""
        where = self.url or self.domain
        notes = f"; notes: {' | '.join(self.notes)}" if self.notes else ""
        return f"{where}: {self.visits} visits, {self.success_rate:.0%} ok, mean {self.mean_duration_s:.2f}s{notes}"


def normalise_url(url: str) -> tuple[str, str]:
    """``(url, domain)``: scheme and host lower-cased, default port and fragment dropped, empty path as ``/``.

    >>> normalise_url("HTTPS://Example.com:443/a?b=1#top")
    ('https://example.com/a?b=1', 'example.com')
    """
    if not isinstance(url, str):
        raise InvalidValueError(f"url must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidValueError(f"not a URL: {url!r} ({exc})") from None
    host = (parts.hostname or "").lower()
    if not parts.scheme or not host:
        raise InvalidValueError(f"not an absolute URL (scheme://host/...): {url!r}")
    scheme = parts.scheme.lower()
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    netloc = netloc if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, "")), host


def visit(
    url: str, domain: str, duration_s: float, success: bool, note: str | None, now: float
) -> Callable[[Any], dict[str, Any]]:
    """Update function: count one visit."""

    def fn(current: Any) -> dict[str, Any]:
        base: dict[str, Any] = (
            dict(current)
            if current
            else {
                "url": url,
                "domain": domain,
                "visits": 0,
                "successes": 0,
                "total_duration_s": 0.0,
                "last_duration_s": 0.0,
                "first_visit": now,
                "last_visit": now,
                "notes": [],
            }
        )
        base["visits"] = int(base["visits"]) + 1
        base["successes"] = int(base["successes"]) + (1 if success else 0)
        base["total_duration_s"] = float(base["total_duration_s"]) + duration_s
        base["last_duration_s"] = duration_s
        base["last_visit"] = max(now, float(base["last_visit"]))
        base["first_visit"] = min(now, float(base["first_visit"]))
        if note:
            base["notes"] = [*list(base.get("notes") or []), note][-_MAX_NOTES:]
        return base

    return fn


class SitesCore:
    """The plans behind :class:`Sites` and :class:`AsyncSites`."""

    def __init__(self, ns: NamespaceLike = ("memory", "sites")) -> None:
        base = namespace(ns)
        self.ns = base
        self.urls = (*base, "urls")
        self.domains = (*base, "domains")

    @staticmethod
    def url_key(url: str) -> str:
        return slug(url, 32) + "-" + stable_key(url)[:12]

    def record_visit(
        self, url: str, duration_s: float, success: bool = True, notes: str | None = None
    ) -> Plan[SiteStats]:
        """Count one visit to ``url`` (and to its domain, in the same atomic batch); return the URL's figures."""
        norm, domain = normalise_url(url)
        d = check_number("duration_s", duration_s, 0.0, MAX_DURATION_S)
        if not isinstance(success, bool):
            raise InvalidValueError(f"success must be a bool, not {success!r}")
        if notes is not None and not isinstance(notes, str):
            raise InvalidValueError("notes must be a str or None")
        now = time.time()
        results = yield BatchCall(
            (
                Call("update", (self.urls, self.url_key(norm), visit(norm, domain, d, success, notes, now))),
                Call("update", (self.domains, domain, visit("", domain, d, success, None, now))),
            )
        )
        return SiteStats.of(results[0])

    def site(self, url: str) -> Plan[SiteStats | None]:
        """The figures of ``url`` (normalised), or None if never visited."""
        norm, _ = normalise_url(url)
        v = yield Call("get", (self.urls, self.url_key(norm)))
        return None if v is None else SiteStats.of(v)

    def domain(self, domain: str) -> Plan[SiteStats | None]:
        """The figures of a domain (``example.com``, lower case), or None."""
        if not isinstance(domain, str) or not domain:
            raise InvalidValueError("domain must be a non-empty str")
        v = yield Call("get", (self.domains, domain.lower()))
        return None if v is None else SiteStats.of(v)

    def top_sites(self, n: int = 10, *, by: str = "visits") -> Plan[list[SiteStats]]:
        """The ``n`` URLs with the most ``visits`` (or ``by="last_visit"``, ``"success_rate"``)."""
        check_positive_int("n", n)
        if by not in ("visits", "last_visit", "success_rate"):
            raise InvalidValueError("by must be 'visits', 'last_visit' or 'success_rate'")
        items = yield Call("items", (self.urls,))
        stats = [SiteStats.of(it.value) for it in items]
        stats.sort(key=lambda s: (-float(getattr(s, by)), -s.visits, s.url))
        return stats[:n]

    def top_domains(self, n: int = 10) -> Plan[list[SiteStats]]:
        """The ``n`` most visited domains."""
        check_positive_int("n", n)
        items = yield Call("items", (self.domains,))
        stats = sorted((SiteStats.of(it.value) for it in items), key=lambda s: (-s.visits, s.domain))
        return stats[:n]

    def context(self, query: str, k: int = 3) -> Plan[list[Snippet]]:
        """Snippets for :func:`~filemem.memory.recall_context` (URLs whose address or notes match)."""
        check_positive_int("k", k)
        hits = yield SearchCall(self.urls, query, None, k, 0)
        return [Snippet("sites", SiteStats.of(h.value).text(), h.score, f"{'/'.join(self.urls)}/{h.key}") for h in hits]


class Sites(Face[SitesCore]):
    """Per-URL and per-domain visit figures (visits, mean and last duration, success rate, last visit).

    Example::

        sites = Sites(store)
        sites.record_visit("https://example.com/login", 1.8, success=True, notes="captcha")
        print(sites.site("https://example.com/login").visits, sites.domain("example.com").success_rate)
        sites.top_sites(5)
    """

    def __init__(self, store: Store, namespace: NamespaceLike = ("memory", "sites")) -> None:
        self._store = store
        self._core = SitesCore(namespace)
        self.name = "sites"

    record_visit = sync_op(SitesCore.record_visit)
    site = sync_op(SitesCore.site)
    domain = sync_op(SitesCore.domain)
    top_sites = sync_op(SitesCore.top_sites)
    top_domains = sync_op(SitesCore.top_domains)
    context = sync_op(SitesCore.context)


class AsyncSites(Face[SitesCore]):
    """The async twin of :class:`Sites` (same names; await them)."""

    def __init__(self, store: AsyncStore, namespace: NamespaceLike = ("memory", "sites")) -> None:
        self._store = store
        self._core = SitesCore(namespace)
        self.name = "sites"

    record_visit = async_op(SitesCore.record_visit)
    site = async_op(SitesCore.site)
    domain = async_op(SitesCore.domain)
    top_sites = async_op(SitesCore.top_sites)
    top_domains = async_op(SitesCore.top_domains)
    context = async_op(SitesCore.context)
