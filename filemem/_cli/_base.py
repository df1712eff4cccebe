"""What every command shares: the registry, store options, output, progress, exit codes.

Adding a command is one function::

    @command("hello", help="say hello", description="Greet the store.", example="filemem hello ./memories",
             store="read")
    def _hello(args: argparse.Namespace, out: Output) -> int:
        with open_for(args) as store:
            out.line(f"hello {store.path}")
        return EXIT_OK

in any module that ``filemem._cli`` imports (see ``_cli/__init__.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TextIO

from .. import Store
from ..admin import open_store, to_json_value

EXIT_OK: Final = 0
#: Problems found (check), or nothing found (a missing key or namespace), or a version conflict.
EXIT_PROBLEMS: Final = 1
#: Bad arguments: unknown option, malformed JSON value, invalid key or namespace, bad import line.
EXIT_USAGE: Final = 2
#: The store cannot be used: missing, not a store, damaged, read-only, the disk said no.
EXIT_STORE: Final = 3
#: A lock was not had within --lock-timeout: another process is busy with the store.
EXIT_BUSY: Final = 4
EXIT_INTERRUPTED: Final = 130

#: The exit codes as the top-level --help lists them.
EXIT_CODES_HELP: Final = """Exit codes:
  0    ok
  1    problems found (check), nothing found (missing key or namespace), version conflict
  2    usage error: bad option, malformed JSON, invalid key or namespace, bad import line
  3    store error: missing or damaged store, disk error
  4    store busy: a lock was not had within --lock-timeout
  130  interrupted"""

EXIT_CODES_DOC: Final = (
    "Exit codes: 0 ok; 1 problems found (check), nothing found (missing key or namespace) or a version "
    "conflict; 2 usage error (bad option, malformed JSON, invalid key or namespace); 3 store error (missing "
    "or damaged store, disk error); 4 store busy (a lock was not had within --lock-timeout); 130 interrupted."
)

StoreMode = Literal["read", "write"] | None
Runner = Callable[[argparse.Namespace, "Output"], int]


@dataclass(frozen=True, slots=True)
class Command:
    """One sub-command: its help texts, its own arguments, and the function that runs it."""

    name: str
    help: str
    description: str
    example: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Runner
    store: StoreMode


#: Every command, in the order the help lists them.
COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    *,
    help: str,
    description: str,
    example: str,
    store: StoreMode,
    arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None,
) -> Callable[[Runner], Runner]:
    """Register ``fn(args, out) -> exit code`` as ``filemem <name>``."""

    def register(fn: Runner) -> Runner:
        if name in COMMANDS:
            raise RuntimeError(f"command {name!r} registered twice")
        COMMANDS[name] = Command(name, help, description, example, arguments, fn, store)
        return fn

    return register


def add_store_options(p: argparse.ArgumentParser, mode: StoreMode) -> None:
    """The options every store command takes."""
    p.add_argument("path", help="store directory")
    p.add_argument("--json", action="store_true", help="machine-readable output (JSON, or JSON Lines where it streams)")
    p.add_argument(
        "--lock-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="give up (exit 4) when a lock is not had within this long (default 10)",
    )
    if mode == "write":
        p.add_argument(
            "--shard-max-bytes",
            type=int,
            default=32 * 1024,
            metavar="BYTES",
            help="split shards past this size, as your agents do (default 32768)",
        )


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def open_for(args: argparse.Namespace, *, write: bool = False, create: bool = False, watch: bool = False) -> Store:
    """Open the store named on the command line: read-only unless ``write``."""
    return open_store(
        args.path,
        readonly=not write,
        lock_timeout_s=args.lock_timeout,
        create=create,
        codec=getattr(args, "codec", None) if create else None,
        shard_max_bytes=getattr(args, "shard_max_bytes", 32 * 1024),
        watch=watch,
    )


def ns_text(namespace: Sequence[str]) -> str:
    """A namespace as users type it."""
    return "/".join(namespace)


def when(ts: float | None) -> str:
    """A timestamp for a table (local time, seconds)."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


class Output:
    """Where a command prints: tables for people, JSON for scripts."""

    def __init__(self, json_mode: bool, stream: TextIO | None = None) -> None:
        self.json = json_mode
        self.stream = stream if stream is not None else sys.stdout

    def line(self, text: str = "") -> None:
        """One line of text."""
        self.stream.write(text + "\n")

    def emit(self, obj: Any) -> None:
        """One JSON document on one line (flushed: a reader may be streaming)."""
        self.stream.write(json.dumps(to_json_value(obj), ensure_ascii=False, separators=(",", ":")) + "\n")
        self.stream.flush()

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """Aligned columns under a header row."""
        cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        for r in cells:
            self.line("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

    def pairs(self, pairs: Sequence[tuple[str, object]]) -> None:
        """``name: value`` lines, aligned."""
        width = max((len(k) for k, _ in pairs), default=0)
        for k, v in pairs:
            self.line(f"{k + ':':<{width + 1}} {v}")


class Progress:
    """A one-line progress display on stderr, only when stderr is a terminal.

    Call it as ``progress(done, total)``; ``close()`` erases the line.
    Redraws at most every 0.1 s so a fast loop does not flood the terminal.
    """

    def __init__(self, label: str, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _isatty(self.stream) and os.environ.get("TERM") != "dumb"
        self.enabled = enabled
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        pct = f" {100 * done // total}%" if total else ""
        self.stream.write(f"\r{self.label}: {done}/{total}{pct}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the progress line."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
