"""AsyncStore mirrors every public method and property of Store, with the same signature.

When a feature adds a method to Store, this test names it; the fix is one
wrapper in filemem/_async/_store.py (``return await self._runner.run(self._store.NAME, ...)``).
"""

from __future__ import annotations

import inspect
from typing import Any

import filemem
from filemem import Store
from filemem.aio import AsyncStore

#: Async-only extras and how they map are allowed; these Store members have
#: no async counterpart on purpose (``in`` cannot await).
_NOT_MIRRORED = {"__contains__"}


def _public_members(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    }


def _params(fn: Any, *, drop: set[str] = frozenset()) -> list[tuple[str, Any, Any]]:  # type: ignore[assignment]
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values() if p.name not in drop]


def mirror_problems(sync_cls: type = Store, async_cls: type = AsyncStore) -> list[str]:
    """Every way ``async_cls`` fails to mirror ``sync_cls``, one readable line each."""
    problems = []
    theirs = _public_members(async_cls)
    for name, member in sorted(_public_members(sync_cls).items()):
        if name in _NOT_MIRRORED:
            continue
        twin = theirs.get(name)
        if twin is None:
            kind = "property" if isinstance(member, property) else f"method {name}{inspect.signature(member)}"
            problems.append(f"AsyncStore lacks Store.{name} ({kind}): add a wrapper in filemem/_async/_store.py")
            continue
        if isinstance(member, property):
            if not isinstance(twin, property):
                problems.append(f"Store.{name} is a property but AsyncStore.{name} is not")
            continue
        if isinstance(twin, property):
            problems.append(f"Store.{name} is a method but AsyncStore.{name} is a property")
            continue
        if _params(member) != _params(twin):
            problems.append(
                f"AsyncStore.{name}{inspect.signature(twin)} does not match Store.{name}{inspect.signature(member)}"
            )
    return problems


def test_async_store_mirrors_every_public_store_member() -> None:
    problems = mirror_problems()
    assert not problems, "\n".join(problems)


def test_constructor_takes_the_same_arguments_plus_its_own() -> None:
    # Its own: max_in_flight (the worker threads) and server_reads (threads or pool on a URL).
    own = {"max_in_flight", "server_reads"}
    assert _params(AsyncStore.__init__, drop=own) == _params(Store.__init__)
    assert own <= set(inspect.signature(AsyncStore.__init__).parameters)


def test_the_check_names_a_missing_method_and_a_mismatched_signature() -> None:
    """The failure message says exactly what to add (checked on a deliberately broken twin)."""

    class Sync:
        def search(self, namespace: str, query: str, *, limit: int = 10) -> list[str]:
            return []

        def put(self, namespace: str, key: str) -> None:
            pass

        @property
        def path(self) -> str:
            return ""

    class Async:
        async def put(self, namespace: str, key: str, value: int) -> None:
            pass

    problems = mirror_problems(Sync, Async)
    assert any("lacks Store.path (property)" in p for p in problems), problems
    assert any("lacks Store.search (method search(self, namespace" in p and "limit" in p for p in problems), problems
    assert any(p.startswith("AsyncStore.put(") and "does not match Store.put(" in p for p in problems), problems


def test_reads_and_writes_are_coroutines_and_iterations_are_async() -> None:
    for name in ("get", "get_item", "put", "delete", "update", "list_namespaces", "check", "compact", "stats", "close"):
        assert inspect.iscoroutinefunction(getattr(AsyncStore, name)), name
    assert filemem.AsyncStore is AsyncStore
