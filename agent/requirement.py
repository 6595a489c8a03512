"""The agent's one requirement that pip does not install: PyTorch, at least :data:`MIN_TORCH`.

``gradwatch[agent]`` leaves torch to the user (a conda, container or nightly build must not be
replaced by another 2-3 GB download), so ``import gradwatch.agent`` checks it and says, in one
line, what to install when it is missing or too old."""

from __future__ import annotations

import re

MIN_TORCH: tuple[int, int] = (2, 1)
INSTALL = "https://pytorch.org/get-started/locally/"


def require_torch() -> None:
    """Raise ImportError naming what to install when torch is missing or older than
    :data:`MIN_TORCH`. A torch that is present but fails to import raises its own error."""
    need = ".".join(map(str, MIN_TORCH))
    try:
        import torch
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise ImportError(
            f"gradwatch.agent needs PyTorch >= {need}, which is not installed: install torch "
            f"for your platform first ({INSTALL}); gradwatch[agent] leaves torch to you"
        ) from None
    version = str(getattr(torch, "__version__", ""))
    found = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    if found < MIN_TORCH:
        raise ImportError(
            f"gradwatch.agent needs PyTorch >= {need}, found {version or 'an unknown version'}"
            f" at {getattr(torch, '__file__', '?')}: upgrade torch ({INSTALL})"
        )
