"""The ``filemem`` command line (layer L6): parsing, rendering, exit codes; nothing else.

Each command is one function registered with ``@command`` (see ``_base``)
in one of the modules imported below; the work itself is done by
:mod:`filemem.admin` and the public API. To add a command, write the
function in a module of its own and import that module here.

Commands that live in higher layers (``filemem serve`` in :mod:`filemem.server`,
``filemem mcp`` in :mod:`filemem.integrations`) cannot be imported from here
without breaking the layer rule, so they register themselves: each names a
module in the ``filemem.commands`` entry-point group (pyproject.toml), and
:func:`build_parser` imports those modules, whose ``@command`` decorators add
them to ``COMMANDS``. Such a module must import only the standard library and
filemem at import time; its optional dependencies are imported when it runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence

from .. import FileMemError, InvalidKeyError, InvalidQueryError, InvalidValueError, LockTimeout
from . import _agents, _copy, _maintain, _read, _run, _write
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

_COMMAND_MODULES = (_read, _write, _copy, _maintain, _agents, _run)  # importing them registers their commands
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
    "maintain",
    "stats",
    "watch",
    "convert",
    "copy",
    "sessions",
    "stop",
    "deadletters",
    "serve",
    "mcp",
)

#: The entry-point group through which higher layers add commands.
PLUGIN_GROUP = "filemem.commands"


def _load_plugin_commands() -> None:
    """Import every module named in the ``filemem.commands`` entry points (once).

    A plugin that cannot be imported is skipped, not fatal: the rest of the
    command line must keep working whatever an optional extra does.
    """
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        if ep.name in COMMANDS:
            continue
        try:
            ep.load()
        except ImportError as exc:  # a broken plugin must not take the whole CLI down
            print(f"filemem: note: command {ep.name!r} unavailable: {exc}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to generate docs/cli.md)."""
    _load_plugin_commands()
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
