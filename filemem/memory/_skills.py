"""Skills: named procedures with exact, shared usage figures.

One record per skill (key: a readable slug plus a hash of the normalised name)
holds the definition and the counters together. ``add`` and ``record_use`` are
atomic read-modify-writes, so any number of processes can record uses and the
counts stay exact; redefining a skill keeps its figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._errors import InvalidValueError
from .._types import NamespaceLike
from ._common import (
    MAX_DURATION_S,
    Snippet,
    check_identity,
    check_items,
    check_number,
    check_positive_int,
    check_text,
    namespace,
)
from ._core import Face, async_op, sync_op
from ._steps import Call, Plan, SearchCall
from ._text import normalise_text, slug, stable_key

if TYPE_CHECKING:
    from .._async import AsyncStore
    from .._store import Store

__all__ = ["AsyncSkills", "Skill", "Skills"]

_OVERFETCH: Final = 3


@dataclass(frozen=True, slots=True)
class Skill:
    """A skill and its figures. ``success_rate`` is successes / uses (0.0 before the first use)."""

    name: str
    steps: list[Any]
    preconditions: list[Any]
    description: str
    uses: int
    successes: int
    total_duration_s: float
    last_duration_s: float | None
    last_used: float | None
    score: float = 0.0

    @property
    def success_rate(self) -> float:
        return self.successes / self.uses if self.uses else 0.0

    @property
    def mean_duration_s(self) -> float | None:
        return self.total_duration_s / self.uses if self.uses else None

    @classmethod
    def of(cls, v: dict[str, Any], score: float = 0.0) -> Skill:
        return cls(
            v["name"],
            list(v.get("steps") or []),
            list(v.get("preconditions") or []),
            v.get("description") or "",
            int(v.get("uses") or 0),
            int(v.get("successes") or 0),
            float(v.get("total_duration_s") or 0.0),
            v.get("last_duration_s"),
            v.get("last_used"),
            score,
        )

    def text(self) -> str:
        """A one-line rendering for a prompt."""
        steps = "; ".join(str(s) for s in self.steps)
        return f"skill {self.name}: {steps} (used {self.uses}x, {self.success_rate:.0%} success)"


def _key(name: str) -> str:
    return slug(name) + "-" + stable_key(normalise_text(name))[:12]


def _empty(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [],
        "preconditions": [],
        "description": "",
        "uses": 0,
        "successes": 0,
        "total_duration_s": 0.0,
        "last_duration_s": None,
        "last_used": None,
    }


def define(name: str, steps: list[Any], pre: list[Any], description: str) -> Callable[[Any], dict[str, Any]]:
    """Update function: set the definition, keep the figures."""

    def fn(current: Any) -> dict[str, Any]:
        base = dict(current) if current else _empty(name)
        base.update(name=name, steps=steps, preconditions=pre, description=description)
        return base

    return fn


def use(name: str, success: bool, duration_s: float, now: float) -> Callable[[Any], dict[str, Any]]:
    """Update function: count one use (a skill never added gets a record with no steps)."""

    def fn(current: Any) -> dict[str, Any]:
        base = dict(current) if current else _empty(name)
        base["uses"] = int(base["uses"]) + 1
        base["successes"] = int(base["successes"]) + (1 if success else 0)
        base["total_duration_s"] = float(base["total_duration_s"]) + duration_s
        base["last_duration_s"] = duration_s
        base["last_used"] = max(now, float(base.get("last_used") or 0.0))
        return base

    return fn


class SkillsCore:
    """The plans behind :class:`Skills` and :class:`AsyncSkills`."""

    def __init__(self, ns: NamespaceLike = ("memory", "skills")) -> None:
        self.ns = namespace(ns)

    @staticmethod
    def key_of(name: str) -> str:
        """Record key: readable slug + hash of the normalised name (``InvalidValueError`` if that is empty)."""
        return _key(check_identity("name", name))

    def add(
        self, name: str, steps: Sequence[Any], preconditions: Sequence[Any] = (), description: str = ""
    ) -> Plan[Skill]:
        """Define (or redefine) a skill; its usage figures are kept."""
        check_text("name", name)
        steps_l = check_items("steps", steps)
        pre_l = check_items("preconditions", preconditions)
        if not isinstance(description, str):
            raise InvalidValueError("description must be a str")
        value = yield Call("update", (self.ns, self.key_of(name), define(name, steps_l, pre_l, description)))
        return Skill.of(value)

    def record_use(self, name: str, success: bool, duration_s: float) -> Plan[Skill]:
        """Count one use of ``name``: exact across processes (one atomic update). Returns the new figures."""
        check_text("name", name)
        if not isinstance(success, bool):
            raise InvalidValueError(f"success must be a bool, not {success!r}")
        d = check_number("duration_s", duration_s, 0.0, MAX_DURATION_S)
        value = yield Call("update", (self.ns, self.key_of(name), use(name, success, d, time.time())))
        return Skill.of(value)

    def get(self, name: str) -> Plan[Skill | None]:
        """The skill, or None."""
        value = yield Call("get", (self.ns, self.key_of(check_text("name", name))))
        return None if value is None else Skill.of(value)

    def best_for(self, query: str, k: int = 3) -> Plan[list[Skill]]:
        """Skills for ``query``: BM25 over name, steps, preconditions, description, times (successes+1)/(uses+2)."""
        check_positive_int("k", k)
        hits = yield SearchCall(self.ns, query, None, k * _OVERFETCH, 0)
        found = []
        for h in hits:
            s = Skill.of(h.value)
            found.append(Skill.of(h.value, h.score * (s.successes + 1) / (s.uses + 2)))
        found.sort(key=lambda s: (-s.score, s.name))
        return found[:k]

    def all(self) -> Plan[list[Skill]]:
        """Every skill, most used first."""
        items = yield Call("items", (self.ns,))
        out = [Skill.of(it.value) for it in items]
        out.sort(key=lambda s: (-s.uses, s.name))
        return out

    def context(self, query: str, k: int = 3) -> Plan[list[Snippet]]:
        """Snippets for :func:`~filemem.memory.recall_context`."""
        found = yield from self.best_for(query, k)
        return [Snippet("skills", s.text(), s.score, f"{'/'.join(self.ns)}/{_key(s.name)}", s) for s in found]


class Skills(Face[SkillsCore]):
    """Named procedures with exact usage counts and success rates, shared by every process.

    Example::

        skills = Skills(store)
        skills.add("login", ["open /login", "fill form", "submit"], preconditions=["has credentials"])
        skills.record_use("login", success=True, duration_s=2.5)
        best = skills.best_for("sign in to the site", k=1)
    """

    def __init__(self, store: Store, namespace: NamespaceLike = ("memory", "skills")) -> None:
        self._store = store
        self._core = SkillsCore(namespace)
        self.name = "skills"

    add = sync_op(SkillsCore.add)
    record_use = sync_op(SkillsCore.record_use)
    get = sync_op(SkillsCore.get)
    best_for = sync_op(SkillsCore.best_for)
    all = sync_op(SkillsCore.all)
    context = sync_op(SkillsCore.context)


class AsyncSkills(Face[SkillsCore]):
    """The async twin of :class:`Skills` (same names; await them)."""

    def __init__(self, store: AsyncStore, namespace: NamespaceLike = ("memory", "skills")) -> None:
        self._store = store
        self._core = SkillsCore(namespace)
        self.name = "skills"

    add = async_op(SkillsCore.add)
    record_use = async_op(SkillsCore.record_use)
    get = async_op(SkillsCore.get)
    best_for = async_op(SkillsCore.best_for)
    all = async_op(SkillsCore.all)
    context = async_op(SkillsCore.context)
