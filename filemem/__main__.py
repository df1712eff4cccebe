"""``python -m filemem`` runs the command line (layer L6)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
