"""``python -m filemem.integrations.mcp PATH``: the same as ``filemem mcp PATH``."""

from __future__ import annotations

import sys

from ._main import main

if __name__ == "__main__":
    sys.exit(main())
