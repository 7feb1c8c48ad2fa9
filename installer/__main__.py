"""``python -m installer``: see installer/cli.py."""

import sys

from installer.cli import main

sys.exit(main())
