"""``python -m sitebus``: the same command line as the ``sitebus`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
