"""The ``filemem`` command line (layer L6): parsing, rendering, exit codes; nothing else.

Each command is one function registered with ``@command`` (see ``_base``)
in one of the modules imported below; the work itself is done by
:mod:`filemem.admin` and the public API. To add a command, write the
function in a module of its own and import that module here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import FileMemError, InvalidKeyError, InvalidQueryError, InvalidValueError, LockTimeout
from . import _agents, _read, _run, _write
from ._base import (
    COMMANDS,
    EXIT_BUSY,
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_STORE,
    EXIT_USAGE,
    Output,
    add_store_options,
)

__all__ = [
    "EXIT_BUSY",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_STORE",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

_COMMAND_MODULES = (_read, _write, _agents, _run)  # importing them registers their commands
#: The order commands are listed in (help and docs/cli.md); unknown ones go last.
_ORDER = (
    "info",
    "ls",
    "get",
    "put",
    "rm",
    "search",
    "export",
    "import",
    "check",
    "compact",
    "stats",
    "watch",
    "convert",
    "sessions",
    "stop",
    "deadletters",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to generate docs/cli.md)."""
    parser = argparse.ArgumentParser(
        prog="filemem",
        description="Inspect, verify, repair, export and watch a filemem store, live or cold.",
        epilog=f"Example: filemem info ./memories\n\n{EXIT_CODES_HELP}",
        # Keep the exit-code table's line breaks (sub-commands wrap as usual).
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ranked = sorted(COMMANDS.values(), key=lambda c: _ORDER.index(c.name) if c.name in _ORDER else len(_ORDER))
    for cmd in ranked:
        p = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.description,
            epilog=f"Example: {cmd.example}",
        )
        if cmd.store is not None:
            add_store_options(p, cmd.store)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _one_line(exc: FileMemError) -> str:
    text = " ".join(str(exc).split())
    notes = getattr(exc, "__notes__", None)
    return text + (f" ({'; '.join(notes)})" if notes else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``filemem`` and ``python -m filemem``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(bool(getattr(args, "json", False)))
    try:
        code: int = args._run(args, out)
    except LockTimeout as exc:
        print(
            f"filemem: store busy: {_one_line(exc)}; another process holds the lock (retry, or raise --lock-timeout)",
            file=sys.stderr,
        )
        return EXIT_BUSY
    except (InvalidKeyError, InvalidValueError, InvalidQueryError) as exc:
        print(f"filemem: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except FileMemError as exc:
        print(f"filemem: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_STORE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `filemem export ... | head`: the reader left; not an error of ours.
        sys.stderr.close()
        return EXIT_OK
    return code
