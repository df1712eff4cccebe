"""Claude's memory tool backed by a filemem store (layer L7; needs ``pip install "filemem[anthropic]"``).

The invariant: the tool answers every command with the same text as the
Anthropic SDK's ``BetaLocalFilesystemMemoryTool``, and each command that
changes memory commits at one instant across processes (compare-and-set on
record versions, retried on conflict; see filemem/integrations/_memfs.py),
so concurrent edits from many agent processes are never lost.

Example::

    import anthropic
    from filemem.integrations.anthropic import FileMemMemoryTool

    memory = FileMemMemoryTool("./agent-store")      # or an open filemem.Store
    client = anthropic.Anthropic()
    runner = client.beta.messages.tool_runner(
        model="claude-sonnet-4-5", max_tokens=1024, tools=[memory],
        messages=[{"role": "user", "content": "Remember that I like coffee"}],
    )
    for message in runner:
        ...
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import filemem

from ._memfs import MemoryFiles, RefusalError

try:
    import anyio.to_thread
    from anthropic.lib.tools import ToolError
    from anthropic.tools.memory import BetaAbstractMemoryTool, BetaAsyncAbstractMemoryTool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'filemem.integrations.anthropic needs the anthropic SDK: pip install "filemem[anthropic]"'
    ) from exc

if TYPE_CHECKING:
    from anthropic.types.beta import (
        BetaMemoryTool20250818CreateCommand,
        BetaMemoryTool20250818DeleteCommand,
        BetaMemoryTool20250818InsertCommand,
        BetaMemoryTool20250818RenameCommand,
        BetaMemoryTool20250818StrReplaceCommand,
        BetaMemoryTool20250818ViewCommand,
    )

__all__ = ["AsyncFileMemMemoryTool", "FileMemMemoryTool"]

_T = TypeVar("_T")


def _open(store_or_path: filemem.Store | str | os.PathLike[str]) -> tuple[filemem.Store, bool]:
    """The store to use and whether this tool opened it (and so closes it)."""
    if isinstance(store_or_path, filemem.Store):
        return store_or_path, False
    if isinstance(store_or_path, (str, os.PathLike)):
        return filemem.Store(store_or_path), True
    raise filemem.InvalidValueError(
        f"store_or_path must be a filemem.Store or a path, not {type(store_or_path).__name__}"
    )


def _run(fn: Callable[..., _T], *args: Any) -> _T:
    """Call a command; a refusal becomes the SDK's ToolError, which the tool runner reports as is_error."""
    try:
        return fn(*args)
    except RefusalError as exc:
        raise ToolError(exc.text) from None


class _Shared:
    """What the sync and async tools share: the store, the commands, closing."""

    _files: MemoryFiles
    _owns_store: bool

    def _setup(self, store_or_path: filemem.Store | str | os.PathLike[str], namespace: Sequence[str]) -> None:
        store, owns = _open(store_or_path)
        try:
            ns = tuple(namespace)
            store.keys(ns)  # validates the namespace now, not at the first command
        except BaseException:
            if owns:
                store.close()
            raise
        self._files = MemoryFiles(store, ns)
        self._owns_store = owns

    @property
    def store(self) -> filemem.Store:
        """The store the memories live in."""
        return self._files.store

    @property
    def namespace(self) -> tuple[str, ...]:
        """The namespace holding one record per memory file or directory."""
        return self._files.namespace

    def close(self) -> None:
        """Close the store if this tool opened it (from a path); a store passed in stays open."""
        if self._owns_store:
            self._files.store.close()


class FileMemMemoryTool(_Shared, BetaAbstractMemoryTool):
    """Claude's memory tool (``memory_20250818``) over records of a filemem store.

    ``store_or_path``: an open :class:`filemem.Store` (left open) or a directory
    (opened here; ``close()`` closes it). ``namespace``: where the records live,
    one per ``/memories/...`` file or directory.

    Example::

        from filemem.integrations.anthropic import FileMemMemoryTool

        tool = FileMemMemoryTool("./agent-store")
        tool.call({"command": "create", "path": "/memories/notes.md", "file_text": "likes coffee\\n"})
        print(tool.call({"command": "view", "path": "/memories"}))
        tool.close()
    """

    def __init__(
        self, store_or_path: filemem.Store | str | os.PathLike[str], *, namespace: Sequence[str] = ("memories",)
    ) -> None:
        super().__init__()
        self._setup(store_or_path, namespace)

    def view(self, command: BetaMemoryTool20250818ViewCommand) -> str:
        """A directory listing (two levels deep) or a file with line numbers."""
        return _run(self._files.view, command.path, command.view_range)

    def create(self, command: BetaMemoryTool20250818CreateCommand) -> str:
        """A new file (refused if the path exists)."""
        return _run(self._files.create, command.path, command.file_text)

    def str_replace(self, command: BetaMemoryTool20250818StrReplaceCommand) -> str:
        """Replace the one occurrence of ``old_str``."""
        return _run(self._files.str_replace, command.path, command.old_str, command.new_str)

    def insert(self, command: BetaMemoryTool20250818InsertCommand) -> str:
        """Insert text after a line."""
        return _run(self._files.insert, command.path, command.insert_line, command.insert_text)

    def delete(self, command: BetaMemoryTool20250818DeleteCommand) -> str:
        """Delete a file or a directory tree."""
        return _run(self._files.delete, command.path)

    def rename(self, command: BetaMemoryTool20250818RenameCommand) -> str:
        """Move a file or directory (refused onto an existing path)."""
        return _run(self._files.rename, command.old_path, command.new_path)

    def clear_all_memory(self) -> str:
        """Delete every memory file and directory."""
        return _run(self._files.clear)


class AsyncFileMemMemoryTool(_Shared, BetaAsyncAbstractMemoryTool):
    """The async twin of :class:`FileMemMemoryTool`: same commands, run in a worker thread.

    Example::

        tool = AsyncFileMemMemoryTool("./agent-store")
        print(await tool.call({"command": "view", "path": "/memories"}))
    """

    def __init__(
        self, store_or_path: filemem.Store | str | os.PathLike[str], *, namespace: Sequence[str] = ("memories",)
    ) -> None:
        super().__init__()
        self._setup(store_or_path, namespace)

    async def _call(self, fn: Callable[..., str], *args: Any) -> str:
        # The store's calls block on the disk and on locks: keep them off the event loop.
        return await anyio.to_thread.run_sync(functools.partial(_run, fn, *args))

    async def view(self, command: BetaMemoryTool20250818ViewCommand) -> str:
        """A directory listing (two levels deep) or a file with line numbers."""
        return await self._call(self._files.view, command.path, command.view_range)

    async def create(self, command: BetaMemoryTool20250818CreateCommand) -> str:
        """A new file (refused if the path exists)."""
        return await self._call(self._files.create, command.path, command.file_text)

    async def str_replace(self, command: BetaMemoryTool20250818StrReplaceCommand) -> str:
        """Replace the one occurrence of ``old_str``."""
        return await self._call(self._files.str_replace, command.path, command.old_str, command.new_str)

    async def insert(self, command: BetaMemoryTool20250818InsertCommand) -> str:
        """Insert text after a line."""
        return await self._call(self._files.insert, command.path, command.insert_line, command.insert_text)

    async def delete(self, command: BetaMemoryTool20250818DeleteCommand) -> str:
        """Delete a file or a directory tree."""
        return await self._call(self._files.delete, command.path)

    async def rename(self, command: BetaMemoryTool20250818RenameCommand) -> str:
        """Move a file or directory (refused onto an existing path)."""
        return await self._call(self._files.rename, command.old_path, command.new_path)

    async def clear_all_memory(self) -> str:
        """Delete every memory file and directory."""
        return await self._call(self._files.clear)
