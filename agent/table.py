"""The hello: the parameter table it announces (the watched parameters, see
:func:`param_filter`), the param groups' names, what it says about the model's layout across
ranks (replicated, sharded parameters) and its device (the CUDA UUID)."""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gradwatch import wire
from gradwatch.agent.config import AgentConfig

Row = tuple[str, Tensor, wire.ParamInfo]
Select = Callable[[str, Tensor], bool]


def param_filter(patterns: Sequence[str]) -> Select | None:
    """A predicate keeping parameters whose name matches one of the glob ``patterns``
    (fnmatch: ``*`` spans dots too, so ``blocks.*.attn.*`` matches every attention parameter
    of every block); None for no patterns (every parameter)."""
    if not patterns:
        return None
    match = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match
    return lambda name, _param: match(name) is not None


def param_table(
    model: nn.Module, optimizer: torch.optim.Optimizer, select: Select | None = None
) -> list[Row]:
    """One row per watched parameter of ``model`` (all, or those ``select`` keeps), in
    ``named_parameters()`` order."""
    group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
    out: list[Row] = []
    for name, p in model.named_parameters():
        if select is not None and not select(name, p):
            continue
        info = wire.ParamInfo(
            name=name[: wire.MAX_NAME_LEN] or "?",
            shape=tuple(p.shape),
            dtype=str(p.dtype).removeprefix("torch."),
            numel=p.numel(),
            requires_grad=p.requires_grad,
            group=group_of.get(id(p), -1),
        )
        out.append((name, p, info))
    return out


Signature = list[tuple[bool, torch.dtype, int]]


def table_signature(params: Sequence[Tensor], optimizer: torch.optim.Optimizer) -> Signature:
    """What the table of ``params`` depends on: each one's requires_grad, dtype and param
    group. Reading it never syncs. It walks the known parameters, not the model: walking the
    modules costs ~10x more, and parameters added to a model mid-run are not followed."""
    group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
    return [(p.requires_grad, p.dtype, group_of.get(id(p), -1)) for p in params]


def group_names(optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
    """Each param group's ``name`` entry ("" when it has none, or not a string), in order; ()
    when no group is named."""
    names = tuple(
        name[: wire.MAX_GROUP_NAME] if isinstance(name := g.get("name"), str) else ""
        for g in optimizer.param_groups[: wire.MAX_GROUPS]
    )
    return names if any(names) else ()


def is_replicated(model: nn.Module) -> bool:
    """DistributedDataParallel replicates the model: every rank holds the same parameters."""
    return isinstance(model, nn.parallel.DistributedDataParallel)


def _dtensor_type() -> type | None:
    """DTensor, when something imported it (otherwise no parameter can be one)."""
    module = sys.modules.get("torch.distributed.tensor")
    found = getattr(module, "DTensor", None)
    return found if isinstance(found, type) else None


def sharded_rows(params: Sequence[Tensor]) -> tuple[int, ...]:
    """Indices of sharded parameters: DTensors (FSDP2, tensor parallel), FSDP flat parameters,
    DeepSpeed ZeRO-3 partitions. Each rank holds a different part of these."""
    dtensor = _dtensor_type()
    return tuple(
        i
        for i, p in enumerate(params)
        if (dtensor is not None and isinstance(p, dtensor))
        or getattr(p, "_is_flat_param", False)
        or hasattr(p, "ds_id")
    )


@functools.cache
def device_uuid(device: torch.device) -> str:
    """``GPU-<uuid>`` of a CUDA device (as nvidia-smi and DCGM print it), else ""."""
    if device.type != "cuda":
        return ""
    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
    except (RuntimeError, AttributeError, AssertionError):
        return ""
    return (uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")[:64]


def hello_builder(
    cfg: AgentConfig,
    session: str,
    table: Sequence[Row],
    device: torch.device,
    optimizer: str,
    replicated: bool,
    groups: tuple[str, ...] = (),
) -> Callable[[int, int], wire.Hello]:
    """``build(seq, dropped)`` of hellos announcing ``table`` and the param groups' names
    ``groups`` (called on the sender thread)."""
    infos = tuple(info for _, _, info in table)
    sharded = sharded_rows([p for _, p, _ in table])

    def build(seq: int, dropped: int) -> wire.Hello:
        return wire.Hello(
            run=cfg.run,
            rank=cfg.rank,
            session=session,
            world_size=cfg.world_size,
            host=socket.gethostname()[:256],
            pid=os.getpid(),
            torch=torch.__version__[:64],
            device=str(device),
            optimizer=optimizer[:128],
            params=infos,
            every=cfg.every,
            full_every=cfg.full_every,
            seq=seq,
            time=time.time(),
            replicated=replicated,
            sharded=sharded,
            device_uuid=device_uuid(device),
            groups=groups,
        )

    return build
