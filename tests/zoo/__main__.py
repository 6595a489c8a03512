"""``python -m tests.zoo NAME --endpoint E --run R --steps N``: one healthy program."""

from __future__ import annotations

import argparse
import sys

import torch

from tests.zoo.programs import PROGRAMS, Job


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.zoo")
    p.add_argument("name", choices=sorted(PROGRAMS))
    p.add_argument("--endpoint", required=True)
    p.add_argument("--run-name", required=True)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--full-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    PROGRAMS[args.name](Job(args.endpoint, args.run_name, args.steps, args.full_every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
