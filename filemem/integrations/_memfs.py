"""Claude's memory-tool file commands over filemem records (layer L7; needs no framework).

The invariant: every ``/memories/...`` file and directory is one record of one
namespace, and every command that changes records commits one all-or-nothing
batch whose every record it read is guarded by ``if_version`` (a record it
relies on but does not change is rewritten unchanged under ``if_version``,
which is how a create conflicts with a concurrent delete or rename of its
directory). A conflict re-reads and retries the whole command, so each command
takes effect at one instant across processes, and nothing another process
committed meanwhile is lost.

Results and refusals reproduce the text of the Anthropic SDK's
``BetaLocalFilesystemMemoryTool`` for the same command sequence (checked by
tests/integrations/test_anthropic_differential.py). Where that tool leaks an
``OSError`` (a path through a file, a directory moved into itself), this one
refuses with a clear message instead. A directory's size is shown as ``4K``
(what ext4 reports for a small directory; the reference shows its file
system's figure).

Records: key = the path below ``/memories`` with ``%`` and ``/`` escaped
(``notes/todo.md`` -> ``notes%2Ftodo.md``); value ``{"kind": "file", "path":
"/memories/notes/todo.md", "text": ...}`` or ``{"kind": "dir", "path": ...}``.
The root ``/memories`` itself has no record: it always exists.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import filemem

from ._retry import retry_conflicts

__all__ = ["MemoryFiles", "RefusalError"]

_PREFIX: Final = "/memories"
#: Lines the reference refuses to render.
_MAX_LINES: Final = 999999
_LINE_NUMBER_WIDTH: Final = len(str(_MAX_LINES))
#: What ext4 reports for a small directory; the reference prints its file system's figure.
_DIR_SIZE_BYTES: Final = 4096
_ESCAPED: Final = re.compile(r"%(25|2F)")

_T = TypeVar("_T")


class RefusalError(Exception):
    """A command the tool refuses; ``text`` is what the model is told (the adapter raises it as ToolError)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _UnderFileError(RefusalError):
    """A path below a file; ``direct``: the file is the path's parent."""

    def __init__(self, text: str, direct: bool) -> None:
        super().__init__(text)
        self.direct = direct


def _key(rel: str) -> str:
    return rel.replace("%", "%25").replace("/", "%2F")


def _rel(key: str) -> str:
    return _ESCAPED.sub(lambda m: "%" if m.group(1) == "25" else "/", key)


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0]


def _ancestors(rel: str) -> list[str]:
    """The directories above ``rel``, outermost first, without the root."""
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def format_size(n: int) -> str:
    """A byte count as the reference prints it (``0B``, ``512B``, ``4K``, ``1.5M``)."""
    if n == 0:
        return "0B"
    units = ["B", "K", "M", "G"]
    i = min((n.bit_length() - 1) // 10, len(units) - 1)
    size = n / (1024**i)
    return f"{int(size)}{units[i]}" if size == int(size) else f"{size:.1f}{units[i]}"


def _split_lines_keeping_cr(content: str) -> list[str]:
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _numbered(lines: Sequence[str], first: int) -> str:
    return "\n".join(f"{str(i + first).rjust(_LINE_NUMBER_WIDTH)}\t{line}" for i, line in enumerate(lines))


def resolve(path: str) -> str:
    """The path below ``/memories`` that ``path`` names (``""``: the root), as the reference resolves it.

    The reference strips the literal ``/memories`` prefix, joins the rest to
    its root directory and resolves ``.``/``..`` lexically (it has no
    symlinks to follow); so ``/memories/a/../b`` is ``b``, and
    ``/memories/../etc/passwd`` escapes and is refused.
    """
    if not isinstance(path, str):
        raise RefusalError(f"Path must be a string, got: {path!r}")
    if not path.startswith(_PREFIX):
        raise RefusalError(f"Path must start with /memories, got: {path}")
    if "\x00" in path:
        raise RefusalError(f"Path {path!r} contains a NUL character")
    relative = path[len(_PREFIX) :].lstrip("/")
    norm = posixpath.normpath("memories/" + relative) if relative else "memories"
    if norm == "memories":
        return ""
    if not norm.startswith("memories/"):
        raise RefusalError(f"Path {path} would escape /memories directory")
    return norm[len("memories/") :]


class MemoryFiles:
    """The six memory commands and ``clear``, over records of ``namespace`` in ``store``.

    Each method returns the text the tool answers with, or raises
    :class:`RefusalError` with the text of the refusal.

    Example::

        files = MemoryFiles(store, ("memories",))
        files.create("/memories/notes.md", "likes coffee\\n")
        print(files.view("/memories/notes.md", None))
    """

    def __init__(self, store: filemem.Store, namespace: tuple[str, ...]) -> None:
        self.store = store
        self.namespace = namespace

    # ------------------------------------------------------------------ reads

    def _get(self, rel: str) -> filemem.Item | None:
        try:
            item = self.store.get_item(self.namespace, _key(rel), consistency="strict")
        except filemem.InvalidKeyError:
            return None  # too long to be a key: no such record can exist
        if item is None or not isinstance(item.value, dict) or item.value.get("kind") not in ("file", "dir"):
            return None
        return item

    def _tree(self) -> dict[str, filemem.Item]:
        """Every record, by path, read in one consistent snapshot."""
        with self.store.snapshot() as snap:
            items = snap.items(self.namespace)
        out: dict[str, filemem.Item] = {}
        for item in items:
            if isinstance(item.value, dict) and item.value.get("kind") in ("file", "dir"):
                out[_rel(item.key)] = item
        return out

    # ------------------------------------------------------------------ retry

    def _retry(self, attempt: Callable[[], _T]) -> _T:
        try:
            return retry_conflicts(attempt)
        except filemem.InvalidKeyError as exc:  # a path too long to be a key
            raise RefusalError(f"The path is too long to store: {exc}") from exc

    def _dir_ops(self, rel: str, path: str, batch: filemem.Batch) -> list[str]:
        """Queue what makes ``rel``'s parent directories exist (``mkdir -p``); return those created.

        Existing parents are rewritten unchanged under ``if_version``, so the
        batch fails if one is deleted or moved before it commits.
        """
        created: list[str] = []
        for anc in _ancestors(rel):
            item = self._get(anc)
            if item is None:
                batch.put(self.namespace, _key(anc), {"kind": "dir", "path": f"{_PREFIX}/{anc}"}, if_version=0)
                created.append(anc)
            elif item.value["kind"] == "file":
                text = f"Cannot use {path}: {_PREFIX}/{anc} is a file, not a directory"
                raise _UnderFileError(text, anc == _parent(rel))
            else:
                batch.put(self.namespace, item.key, item.value, if_version=item.version)
        return created

    def _put_file(self, rel: str, text: str, version: int, batch: filemem.Batch) -> None:
        batch.put(
            self.namespace, _key(rel), {"kind": "file", "path": f"{_PREFIX}/{rel}", "text": text}, if_version=version
        )

    # ------------------------------------------------------------------ commands

    def view(self, path: str, view_range: Sequence[int] | None) -> str:
        """A directory listing two levels deep, or the file with line numbers."""
        rel = resolve(path)
        if rel:
            item = self._get(rel)
            if item is None:
                raise RefusalError(f"The path {path} does not exist. Please provide a valid path.")
            if item.value["kind"] == "file":
                return self._view_file(path, item.value["text"], view_range)
        return self._view_dir(path, rel)

    def _view_file(self, path: str, content: str, view_range: Sequence[int] | None) -> str:
        lines = content.split("\n")
        if len(lines) > _MAX_LINES:
            raise RefusalError(f"File {path} exceeds maximum line limit of 999,999 lines.")
        shown, first = lines, 1
        if view_range and len(view_range) == 2:
            start = max(1, view_range[0]) - 1
            end = len(lines) if view_range[1] == -1 else view_range[1]
            shown, first = lines[start:end], start + 1
        return f"Here's the content of {path} with line numbers:\n" + _numbered(shown, first)

    def _view_dir(self, path: str, rel: str) -> str:
        tree = self._tree()
        children: dict[str, list[tuple[str, bool, int]]] = {}
        is_dir: dict[str, bool] = {}
        for r, item in tree.items():
            is_dir[r] = item.value["kind"] == "dir"
            # A record whose directory record is missing still shows, under implicit directories.
            for anc in _ancestors(r):
                is_dir.setdefault(anc, True)
        for r, d in is_dir.items():
            rec = tree.get(r)
            size = _DIR_SIZE_BYTES if d else len(rec.value["text"].encode("utf-8")) if rec else 0
            children.setdefault(_parent(r), []).append((r.rpartition("/")[2], d, size))
        found: list[tuple[str, str]] = []

        def collect(dir_rel: str, shown: str, depth: int) -> None:
            for name, d, size in sorted(children.get(dir_rel, []), key=lambda c: c[0]):
                if name.startswith("."):
                    continue
                child_rel = f"{dir_rel}/{name}" if dir_rel else name
                child_shown = f"{shown}/{name}" if shown else name
                if d:
                    found.append((format_size(size), f"{child_shown}/"))
                    if depth < 2:
                        collect(child_rel, child_shown, depth + 1)
                else:
                    found.append((format_size(size), child_shown))

        collect(rel, "", 1)
        header = f"Here're the files and directories up to 2 levels deep in {path}, excluding hidden items:"
        lines = [f"{format_size(_DIR_SIZE_BYTES)}\t{path}"]
        lines.extend(f"{size}\t{path}/{shown}" for size, shown in found)
        return f"{header}\n" + "\n".join(lines)

    def create(self, path: str, file_text: str) -> str:
        """A new file; refused if anything exists at ``path``."""
        rel = resolve(path)
        if not isinstance(file_text, str):
            raise RefusalError(f"file_text must be a string, got: {type(file_text).__name__}")

        def attempt() -> str:
            if not rel:
                raise RefusalError(f"File {path} already exists")
            batch = self.store.batch()
            self._dir_ops(rel, path, batch)
            if self._get(rel) is not None:
                raise RefusalError(f"File {path} already exists")
            self._put_file(rel, file_text, 0, batch)
            batch.commit()
            return f"File created successfully at: {path}"

        return self._retry(attempt)

    def _file(self, rel: str, path: str) -> filemem.Item:
        item = self._get(rel) if rel else None
        if rel and item is None:
            raise RefusalError(f"The path {path} does not exist. Please provide a valid path.")
        if item is None or item.value["kind"] != "file":
            raise RefusalError(f"The path {path} is not a file.")
        return item

    def str_replace(self, path: str, old_str: str, new_str: str) -> str:
        """Replace the one occurrence of ``old_str``; refused for none or several."""
        rel = resolve(path)

        def attempt() -> str:
            item = self._file(rel, path)
            content: str = item.value["text"]
            count = content.count(old_str)
            if count == 0:
                raise RefusalError(
                    f"No replacement was performed, old_str `{old_str}` did not appear verbatim in {path}."
                )
            if count > 1:
                lines: list[int] = []
                start = 0
                while (pos := content.find(old_str, start)) != -1:
                    lines.append(content[:pos].count("\n") + 1)
                    start = pos + 1
                raise RefusalError(
                    f"No replacement was performed. Multiple occurrences of old_str `{old_str}` in lines: "
                    f"{', '.join(map(str, lines))}. Please ensure it is unique"
                )
            changed = content[: content.find(old_str)].count("\n")
            new_content = content.replace(old_str, new_str)
            self.store.put(self.namespace, item.key, {**item.value, "text": new_content}, if_version=item.version)
            new_lines = new_content.split("\n")
            lo, hi = max(0, changed - 2), min(len(new_lines), changed + 3)
            return (
                "The memory file has been edited. Here is the snippet showing the change (with line numbers):\n"
                + _numbered(new_lines[lo:hi], lo + 1)
            )

        return self._retry(attempt)

    def insert(self, path: str, insert_line: int, insert_text: str) -> str:
        """Insert ``insert_text`` after line ``insert_line`` (0: at the top)."""
        rel = resolve(path)

        def attempt() -> str:
            item = self._file(rel, path)
            lines = _split_lines_keeping_cr(item.value["text"])
            if insert_line < 0 or insert_line > len(lines):
                raise RefusalError(
                    f"Invalid `insert_line` parameter: {insert_line}. It should be within the range [0, {len(lines)}]."
                )
            lines.insert(insert_line, insert_text.rstrip("\n"))
            new_content = "\n".join(lines)
            if not new_content.endswith("\n"):
                new_content += "\n"
            self.store.put(self.namespace, item.key, {**item.value, "text": new_content}, if_version=item.version)
            return f"The file {path} has been edited."

        return self._retry(attempt)

    def _subtree(self, rel: str) -> list[tuple[str, filemem.Item]]:
        return [(r, item) for r, item in self._tree().items() if r == rel or r.startswith(rel + "/")]

    def delete(self, path: str) -> str:
        """Delete a file, or a directory and everything in it, in one commit."""
        rel = resolve(path)
        if not rel:
            raise RefusalError("Cannot delete the /memories directory itself")

        def attempt() -> str:
            item = self._get(rel)
            if item is None:
                raise RefusalError(f"The path {path} does not exist")
            batch = self.store.batch()
            victims = [(rel, item)] if item.value["kind"] == "file" else self._subtree(rel)
            if not any(r == rel and it.version == item.version for r, it in victims):
                raise filemem.ConflictError("the directory changed while it was listed")
            for _, it in victims:
                batch.delete(self.namespace, it.key, if_version=it.version)
            batch.commit()
            return f"Successfully deleted {path}"

        return self._retry(attempt)

    def rename(self, old_path: str, new_path: str) -> str:
        """Move a file or directory; refused onto anything that exists."""
        old = resolve(old_path)
        new = resolve(new_path)
        if not old:
            raise RefusalError("Cannot rename the /memories directory itself")

        def attempt() -> str:
            if not new or self._get(new) is not None:
                raise RefusalError(f"The destination {new_path} already exists")
            batch = self.store.batch()
            try:
                created = self._dir_ops(new, new_path, batch)
            except _UnderFileError as exc:
                # The reference then tries the move, which finds a missing source first.
                if exc.direct and self._get(old) is None:
                    raise RefusalError(f"The path {old_path} does not exist") from None
                raise
            item = self._get(old)
            if item is None or (item.value["kind"] == "dir" and new.startswith(old + "/")):
                # The reference makes the destination's directories before it
                # finds the source missing (or the move impossible): so do we.
                if created:
                    parents = self.store.batch()
                    for anc in created:
                        parents.put(
                            self.namespace, _key(anc), {"kind": "dir", "path": f"{_PREFIX}/{anc}"}, if_version=0
                        )
                    parents.commit()
                if item is None:
                    raise RefusalError(f"The path {old_path} does not exist")
                raise RefusalError(f"Cannot move {old_path} into itself ({new_path})")
            moved = [(old, item)] if item.value["kind"] == "file" else self._subtree(old)
            if not any(r == old and it.version == item.version for r, it in moved):
                raise filemem.ConflictError("the directory changed while it was listed")
            for r, it in moved:
                target = new + r[len(old) :]
                batch.put(self.namespace, _key(target), {**it.value, "path": f"{_PREFIX}/{target}"}, if_version=0)
                batch.delete(self.namespace, it.key, if_version=it.version)
            batch.commit()
            return f"Successfully renamed {old_path} to {new_path}"

        return self._retry(attempt)

    def clear(self) -> str:
        """Delete every file and directory, in one commit."""

        def attempt() -> str:
            batch = self.store.batch()
            for item in self._tree().values():
                batch.delete(self.namespace, item.key, if_version=item.version)
            if len(batch):
                batch.commit()
            return "All memory cleared"

        return self._retry(attempt)
