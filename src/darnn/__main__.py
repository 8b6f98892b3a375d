"""``python -m darnn``: the same command line as ``darnn``."""

import sys

from .cli import main

sys.exit(main())
