"""``python -m ganpaint.server.cli``: the `ganpaint` command."""

import sys

from .main import main

sys.exit(main())
