"""No file of the project names an absolute path that exists on one machine only (issue 12, item 1).

A test that creates its store under a folder of one machine passes where it was
written and fails on every fresh clone; a tool default or a documented command
with such a path is broken the same way. Tests use ``tmp_path``, tools derive
their defaults at run time, docs show commands anyone can run.

What counts as "a path of one machine": a path that starts at a word boundary
(not inside a URL such as ``https://host/home/x``) under a per-user or
per-site root (``/home/<user>``, ``/Users/<user>``, ``/root/...``,
``/work/...``, ``/mnt/...``, ``/media/...``, ``/private/...``, ``/var/tmp/<x>``,
``C:\\Users\\<user>``) or a *named* file under ``/tmp`` (``/tmp/<name>``).
What does not: paths every system has and that mean the same everywhere
(``/dev/null``, ``/proc/self/...``, ``/sys/...``, ``/etc/...``), the bare word
``/tmp`` (as in "never /tmp"), and virtual paths of protocols we implement,
such as the Claude memory tool's ``/memories``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED_DIRS = ("filemem", "tests", "tools", "docs")
SCANNED_FILES = ("README.md", "pyproject.toml")
TEXT_SUFFIXES = frozenset({".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".json", ".yaml", ".yml", ".sh", ".rst"})

# Built from pieces so this file does not match itself.
_USER_ROOTS = "|".join(["home", "Users", "root", "work", "mnt", "media", "private", r"var/tmp", "tmp"])
MACHINE_PATH = re.compile(
    # Not preceded by a character that would make it part of a URL, a longer
    # path or an identifier (``https://x/home/a``, ``a/work/b``, ``$HOME/work``).
    r"(?<![\w/:.~$-])"
    r"/(?:" + _USER_ROOTS + r")/[A-Za-z0-9_.-]+"
    r"|(?<![\w])[A-Za-z]:[\\/]+(?:Users|Documents and Settings)[\\/]+[A-Za-z0-9_.-]+"
)


def _scanned() -> list[Path]:
    files = [ROOT / f for f in SCANNED_FILES if (ROOT / f).is_file()]
    for d in SCANNED_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            # This file is the detector: its examples name such paths on purpose.
            if p.is_file() and p.suffix in TEXT_SUFFIXES and p != Path(__file__).resolve():
                files.append(p)
    return files


def machine_paths(text: str) -> list[str]:
    """Every absolute path of one machine that ``text`` names."""
    return [m.group(0) for m in MACHINE_PATH.finditer(text)]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # The machine paths below are built from parts so this file names none itself.
        ('TemporaryDirectory(dir="' + "/wo" + 'rk/benchtmp")', ["/wo" + "rk/benchtmp"]),
        ("--dir " + "/ho" + "me/alice/stores", ["/ho" + "me/alice"]),
        ("open('/tmp/demo-store')", ["/tmp/demo-store"]),
        ("/Users/bob/x", ["/Users/bob"]),
        (r"C:\Users\carol\filemem", [r"C:\Users\carol"]),
        ("/var/tmp/s1", ["/var/tmp/s1"]),
        # Not of one machine:
        ("never /tmp, because tmpfs", []),
        ("open('/dev/null')", []),
        ("/proc/self/status", []),
        ("the memory tool's /memories directory", []),
        ("https://example.com/home/page", []),
        ("relative benchtmp/work/x and ../work/y", []),
        ("$HOME/work/x", []),
    ],
)
def test_the_detector(text: str, found: list[str]) -> None:
    assert machine_paths(text) == found


def test_no_file_names_an_absolute_path_of_one_machine() -> None:
    files = _scanned()
    assert len(files) > 100  # the scan really looks at the tree
    hits = []
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            hits.extend(f"{p.relative_to(ROOT)}:{lineno}: {found}" for found in machine_paths(line))
    assert not hits, "absolute paths of one machine (use tmp_path / a run-time default):\n" + "\n".join(hits)
