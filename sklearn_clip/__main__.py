"""``python -m sklearn_clip``: the command line."""

import sys

from ._cli import main

sys.exit(main())
