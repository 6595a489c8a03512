"""The demo trainer with one rank that cannot reach the collector (``torchrun ... -m
tests.helpers.unreachable_rank ARGS``): the rank named by env ``GRADWATCH_UNREACHABLE_RANK``
sends to a closed port instead of ``GRADWATCH_ENDPOINT``, as a rank behind a firewall would."""

from __future__ import annotations

import os
import runpy
import sys

if __name__ == "__main__":
    if os.environ.get("RANK") == os.environ.get("GRADWATCH_UNREACHABLE_RANK"):
        os.environ["GRADWATCH_ENDPOINT"] = "tcp://127.0.0.1:9"
    sys.argv[0] = "gradwatch.trainer"
    runpy.run_module("gradwatch.trainer", run_name="__main__", alter_sys=True)
