"""FileMemSession returns what the SDK's SQLiteSession returns, for every sequence of Session calls.

On both backends (a directory, a ``postgresql://`` URL: issue 16).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

agents = pytest.importorskip("agents")

from agents import SQLiteSession  # noqa: E402
from agents.memory import Session, SessionSettings  # noqa: E402

import filemem  # noqa: E402
from filemem.integrations.openai_agents import FileMemSession  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
items = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.text(max_size=12)},
    optional={"extra": json_values},
)
calls = st.one_of(
    st.tuples(st.just("add_items"), st.lists(items, max_size=4)),
    st.tuples(st.just("get_items"), st.one_of(st.none(), st.integers(-2, 6))),
    st.tuples(st.just("pop_item"), st.none()),
    st.tuples(st.just("clear_session"), st.none()),
)


async def _call(session: Any, name: str, arg: Any) -> Any:
    if name == "add_items":
        return await session.add_items(arg)
    if name == "get_items":
        return await session.get_items(arg)
    return await getattr(session, name)()


async def _both(ours: FileMemSession, ref: SQLiteSession, sequence: list[tuple[str, Any]]) -> None:
    for i, (name, arg) in enumerate(sequence):
        assert await _call(ours, name, arg) == await _call(ref, name, arg), (i, name, arg)
        assert await ours.get_items() == await ref.get_items(), (i, name, arg)


_runs = itertools.count()


@pytest.fixture
def shared_store(location: str) -> Iterator[filemem.Store]:
    """One store per test on each backend; every hypothesis example is a session of its own."""
    with filemem.Store(location, durability="flush") as store:
        yield store


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(calls, max_size=15), st.one_of(st.none(), st.integers(0, 4)))
def test_random_call_sequences(
    shared_store: filemem.Store, sequence: list[tuple[str, Any]], default_limit: int | None
) -> None:
    settings_ = SessionSettings(limit=default_limit)
    ours = FileMemSession(f"chat-{next(_runs)}", shared_store, session_settings=settings_)
    ref = SQLiteSession("chat-1", session_settings=settings_)
    try:
        asyncio.run(_both(ours, ref, sequence))
    finally:
        ref.close()


def test_sessions_are_separate_and_persistent(location: str) -> None:
    async def main() -> None:
        a = FileMemSession("a", location)
        b = FileMemSession("b", a.store)
        assert isinstance(a, Session)
        await a.add_items([{"role": "user", "content": "for a"}])
        await b.add_items([{"role": "user", "content": "for b"}])
        await b.clear_session()
        assert await b.get_items() == []
        a.close()
        again = FileMemSession("a", location)
        assert await again.get_items() == [{"role": "user", "content": "for a"}]
        assert repr(again).startswith("FileMemSession('a', ")
        again.close()

    asyncio.run(main())


def test_bad_input_is_refused_and_changes_nothing(location: str) -> None:
    with filemem.Store(location) as store:
        with pytest.raises(filemem.InvalidKeyError):
            FileMemSession("", store)
        with pytest.raises(filemem.InvalidKeyError):
            FileMemSession(7, store)  # type: ignore[arg-type]
        with pytest.raises(filemem.InvalidValueError):
            FileMemSession("x", 3.5)  # type: ignore[arg-type]
        session = FileMemSession("x", store)
        asyncio.run(session.add_items([{"role": "user", "content": "ok"}]))
        with pytest.raises(filemem.InvalidValueError):
            asyncio.run(session.add_items([{"role": "user", "content": object()}]))  # type: ignore[list-item]
        assert asyncio.run(session.get_items()) == [{"role": "user", "content": "ok"}]
        assert store.check() == []
