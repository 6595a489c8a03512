"""``python -m gradwatch.cli``."""

import sys

from .commands import main

sys.exit(main())
