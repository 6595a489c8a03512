"""A small monitored training process that ends badly on purpose, for the agent's exit tests.

``python -m tests.helpers.crashing_rank ENDPOINT MODE`` (from the repository root):

- ``raise``: an uncaught ValueError with a long message; a user excepthook is installed first.
- ``oom``: torch.OutOfMemoryError inside a ``try/finally: monitor.close()`` (the trainer's
  pattern); a user excepthook is installed first.
- ``default-signal``: trains until SIGTERM/SIGINT arrives with the default handlers.
- ``user-handler``: its own SIGTERM handler (installed before ``watch``) prints and raises.

Each prints ``user excepthook ran`` / ``user handler ran`` when its own hooks run.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType, TracebackType

import torch

import gradwatch.agent as ga
from tests.helpers.waiting import wait_until


class Stop(BaseException):
    """Raised by the user's SIGTERM handler, like the demo trainer's."""


def user_excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    print(f"user excepthook ran: {exc_type.__name__}", flush=True)


def user_handler(signum: int, frame: FrameType | None) -> None:
    print(f"user handler ran: {signum}", flush=True)
    raise Stop


def explode_with_a_long_message() -> None:
    raise ValueError("loss went sideways: " + "x" * 3000)


def allocate_activations() -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def main(endpoint: str, mode: str) -> int:
    if mode in ("raise", "oom"):
        sys.excepthook = user_excepthook
    if mode == "user-handler":
        signal.signal(signal.SIGTERM, user_handler)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = ga.watch(model, opt, run=f"crash-{mode}", endpoint=endpoint, rank=0, world_size=1)
    wait_until(lambda: monitor.sender.connected, timeout=60)  # what follows reaches the test

    def step() -> None:
        model(torch.randn(3, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()

    if mode == "raise":
        for _ in range(3):
            step()
        explode_with_a_long_message()
    elif mode == "oom":
        try:
            for _ in range(3):
                step()
            allocate_activations()
        finally:
            monitor.close()
    elif mode == "default-signal":
        while True:
            step()
    elif mode == "user-handler":
        try:
            while True:
                step()
        except Stop:
            print("stopped", flush=True)
        finally:
            monitor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
