"""``python -m gradwatch.trainer``."""

import sys

from gradwatch.trainer.cli import main

sys.exit(main())
