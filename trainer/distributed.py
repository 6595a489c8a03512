"""torchrun support: detect the launcher from its environment, set up DDP, tear it down.

Under ``torchrun`` (env ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR`` all set)
the trainer joins a process group (NCCL on CUDA, gloo on CPU) and wraps the model in
``DistributedDataParallel``; run alone it stays a plain single-process CPU run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["TORCHRUN_ENV", "Dist", "detect", "weights_digest"]

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
"""Variables torchrun sets for every worker; all of them mean "launched by torchrun"."""


@dataclass(frozen=True)
class Dist:
    """Where this process sits in the job."""

    rank: int = 0
    """Global rank (0 when run alone)."""
    world_size: int = 1
    """Number of ranks (1 when run alone)."""
    local_rank: int = 0
    """Rank on this node: the CUDA device index under torchrun."""
    launched: bool = False
    """Whether torchrun started this process (then the loop runs under DDP)."""

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"WORLD_SIZE: must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"RANK: must be in [0, {self.world_size}), got {self.rank}")
        if self.local_rank < 0:
            raise ValueError(f"LOCAL_RANK: must be >= 0, got {self.local_rank}")

    @property
    def device(self) -> torch.device:
        """``cuda:LOCAL_RANK`` under torchrun on a CUDA machine, else the CPU."""
        if self.launched and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    @property
    def backend(self) -> str:
        """``nccl`` on CUDA, ``gloo`` on the CPU."""
        return "nccl" if self.device.type == "cuda" else "gloo"

    def start(self) -> None:
        """Join the process group (a no-op when run alone)."""
        if not self.launched:
            return
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            dist.init_process_group(self.backend, device_id=self.device)
        else:
            dist.init_process_group(self.backend)

    def wrap(self, model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """``model`` under DDP when launched by torchrun, else ``model`` itself."""
        if not self.launched:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=find_unused_parameters
        )

    def stop(self, clean: bool = False) -> None:
        """Leave the process group (a no-op when run alone or never joined). ``clean``: every
        rank finished, so they meet in a barrier first; a rank tearing gloo down while its peer
        is still closing its own connections can abort the process ("terminate called without
        an active exception") after training succeeded."""
        if self.launched and dist.is_initialized():
            if clean:
                dist.barrier()
            dist.destroy_process_group()


def detect(env: Mapping[str, str] | None = None) -> Dist:
    """This process's place from torchrun's variables; a single process when any is missing.

    Raises ``ValueError`` naming the variable when one is not a valid integer.
    """
    env = os.environ if env is None else env
    if not all(env.get(k) for k in TORCHRUN_ENV):
        return Dist()
    values: dict[str, int] = {}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        try:
            values[key] = int(env[key])
        except ValueError:
            raise ValueError(f"{key}: expected an integer, got {env[key]!r}") from None
    return Dist(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], launched=True)


def weights_digest(model: nn.Module) -> str:
    """A short hash of every parameter's bytes: equal on ranks whose replicas are identical."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]
