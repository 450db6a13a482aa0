"""``python -m bfn``: the ``bfn`` command line (see :mod:`bfn.cli`)."""

import sys

from bfn.cli import main

if __name__ == "__main__":
    sys.exit(main())
