"""``python -m installer``: see installer/__init__.py."""

import sys

from installer import main

sys.exit(main())
