"""The front door: __all__ is sorted, complete and importable; modules behind it are private."""

from __future__ import annotations

import pkgutil

import filemem


def test_all_is_sorted_and_importable() -> None:
    assert list(filemem.__all__) == sorted(filemem.__all__)
    for name in filemem.__all__:
        assert hasattr(filemem, name), name


def test_every_public_class_is_exported() -> None:
    exported = {getattr(filemem, n) for n in filemem.__all__}
    for name in dir(filemem):
        obj = getattr(filemem, name)
        if isinstance(obj, type) and obj.__module__.startswith("filemem") and not name.startswith("_"):
            assert obj in exported, name


def test_modules_are_private_except_extension_points() -> None:
    public = {m.name for m in pkgutil.iter_modules(filemem.__path__) if not m.name.startswith("_")}
    # integrations and server are the top layer (L7): public, each over the public API.
    assert public <= {"admin", "codecs", "aio", "testing", "memory", "integrations", "server"}
