"""Generate docs/cli.md (from --help) and docs/api.md (from docstrings).

Run ``python tools/gendocs.py`` after changing the CLI or the public API;
``tests/test_docs.py`` fails when the committed files are out of date.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import filemem  # noqa: E402
from filemem._cli import build_parser  # noqa: E402
from filemem._cli._base import EXIT_CODES_DOC  # noqa: E402


def _help(parser: argparse.ArgumentParser) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        parser.print_help()
    return buf.getvalue().rstrip()


def cli_markdown() -> str:
    """The CLI reference, one section per command, from the parser's own help."""
    # argparse wraps help to the terminal width: pin it so the file is stable.
    os.environ["COLUMNS"] = "100"
    parser = build_parser()
    out = [
        "# Command line reference",
        "",
        "Generated from `--help` by `tools/gendocs.py`; do not edit by hand.",
        "",
        EXIT_CODES_DOC,
        "",
        "Every store command takes `--json` (JSON Lines where the output streams: `ls`, `watch`) and",
        "`--lock-timeout SECONDS`. Read commands open the store read-only and never write; a progress line",
        "appears on stderr for long work only when stderr is a terminal.",
        "",
        "## filemem",
        "",
        "```",
        _help(parser),
        "```",
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        out += ["", f"## filemem {name}", "", "```", _help(p), "```"]
    return "\n".join(out) + "\n"


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def api_markdown() -> str:
    """The API reference for every name in filemem.__all__."""
    out = ["# API reference", "", "Generated from docstrings by `tools/gendocs.py`; do not edit by hand.", ""]
    for name in filemem.__all__:
        obj = getattr(filemem, name)
        if name == "__version__":
            continue
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            bases = ", ".join(b.__name__ for b in obj.__bases__)
            out += [f"## `{name}({bases})`", "", _doc(obj), ""]
            continue
        if inspect.isclass(obj):
            try:
                sig = str(inspect.signature(obj))
            except (TypeError, ValueError):
                sig = "(...)"
            out += [f"## `{name}{sig}`", "", _doc(obj), ""]
            # Members of filemem's own bases too (Store's facets), not of object.
            members: dict[str, object] = {}
            for base in reversed(obj.__mro__):
                if base.__module__.startswith("filemem"):
                    members.update(vars(base))
            for attr, member in sorted(members.items()):
                if attr.startswith("_") or not (callable(member) or isinstance(member, property)):
                    continue
                if isinstance(member, property):
                    out += [f"### `{name}.{attr}` (property)", "", _doc(member), ""]
                else:
                    out += [f"### `{name}.{attr}{inspect.signature(member)}`", "", _doc(member), ""]
    out += _admin_markdown()
    return "\n".join(out).rstrip() + "\n"


def _admin_markdown() -> list[str]:
    """The public toolbox behind the command line: filemem.admin."""
    import filemem.admin as admin

    out = ["# `filemem.admin`", "", _doc(admin), ""]
    for name in admin.__all__:
        obj = getattr(admin, name)
        if inspect.isclass(obj):
            out += [f"## `admin.{name}`", "", _doc(obj), ""]
        elif callable(obj):
            out += [f"## `admin.{name}{inspect.signature(obj)}`", "", _doc(obj), ""]
    return out


def main() -> None:
    """Write both files."""
    (ROOT / "docs" / "cli.md").write_text(cli_markdown())
    (ROOT / "docs" / "api.md").write_text(api_markdown())
    print("wrote docs/cli.md and docs/api.md")


if __name__ == "__main__":
    main()
