"""The exception tree: rooted in FileMemError, leaves inherit builtins, everything pickles."""

from __future__ import annotations

import pickle

import pytest

import filemem
from filemem import (
    ConflictError,
    CorruptShardError,
    FileMemError,
    InvalidKeyError,
    InvalidValueError,
    LockTimeout,
    ReadOnlyError,
    StorageError,
    StoreClosedError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
)

CASES = [
    (InvalidKeyError("bad", key="k", namespace=("a",)), ValueError),
    (InvalidValueError("bad"), ValueError),
    (ConflictError("c", namespace=("a",), key="k", expected=1, current_version=3), ValueError),
    (CorruptShardError("x", path="/p"), ValueError),
    (UnsupportedFormatError("x", path="/p"), ValueError),
    (LockTimeout("t", path="/l", waited_s=1.5), TimeoutError),
    (StoreClosedError("closed"), RuntimeError),
    (ReadOnlyError("ro"), PermissionError),
    (StorageError("disk full", errno=28, path="/p"), OSError),
    (UnsupportedFeatureError("no search here", feature="search", backend="postgres"), NotImplementedError),
]


@pytest.mark.parametrize(("exc", "builtin"), CASES, ids=lambda c: type(c).__name__)
def test_tree_and_pickling(exc: FileMemError, builtin: type[BaseException]) -> None:
    assert isinstance(exc, FileMemError)
    assert isinstance(exc, builtin)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert vars(back) == vars(exc)


def test_attributes_survive() -> None:
    back = pickle.loads(pickle.dumps(ConflictError("c", key="k", expected=1, current_version=3)))
    assert back.current_version == 3 and back.expected == 1 and back.key == "k"
    lt = pickle.loads(pickle.dumps(LockTimeout("t", path="/l", waited_s=1.5)))
    assert lt.path == "/l" and lt.waited_s == 1.5


def test_exported() -> None:
    for exc, _ in CASES:
        assert getattr(filemem, type(exc).__name__) is type(exc)
