"""``gradwatch``: run the collector, read and acknowledge alerts, follow them live, look at
runs, check rules, run the demo. See docs/cli.md."""

from .commands import main

__all__ = ["main"]
