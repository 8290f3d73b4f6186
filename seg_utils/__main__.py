"""Entry point of ``python -m seg_utils``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
