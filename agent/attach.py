""":func:`watch`: attach a :class:`Monitor` to a model and its optimizer, settings from
:class:`AgentConfig` (the one home of their defaults), run name and endpoint from the
environment, rank and world size from torch.distributed."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
from torch import nn

from gradwatch.agent.actions import format_policies
from gradwatch.agent.config import AgentConfig, default_rank_world, env_default
from gradwatch.agent.monitor import Monitor


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: str | None = None,
    endpoint: str | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    scaler: Any = None,
    config: AgentConfig | None = None,
    **settings: Any,
) -> Monitor:
    """Attach gradwatch to ``optimizer`` (hooks only; the training loop needs no change).

    ``run``/``endpoint``/``curve_keys``/``on_alert`` default to env ``GRADWATCH_RUN``/
    ``GRADWATCH_ENDPOINT``/``GRADWATCH_CURVE_KEYS``/``GRADWATCH_ON_ALERT``; rank and world size to
    torch.distributed, then env ``RANK``/``WORLD_SIZE``. ``settings`` are any
    other :class:`AgentConfig` fields by name (``every=``, ``full_every=``,
    ``flops_per_token=``, ...); those not given keep AgentConfig's defaults. A full ``config``
    overrides every other setting.
    """
    if config is None:
        d_rank, d_world = default_rank_world()
        for name, given in (
            ("endpoint", endpoint),
            ("curve_keys", settings.pop("curve_keys", None)),
            ("on_alert", format_policies(settings.pop("on_alert", None))),
        ):
            chosen = env_default(name.upper(), given, None)
            if chosen is not None:
                settings[name] = chosen
        config = AgentConfig(
            run=env_default("RUN", run, None) or "",
            rank=d_rank if rank is None else rank,
            world_size=d_world if world_size is None else world_size,
            **settings,
        )
    return Monitor(model, _unwrap(optimizer), config, scaler=scaler)


def _unwrap(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside wrappers that delegate ``step()`` without running its hooks
    (accelerate's ``AcceleratedOptimizer`` under ``transformers.Trainer``, Lightning's
    ``LightningOptimizer``); hooks must go on the object whose ``step()`` really runs."""
    seen = 0
    while not hasattr(optimizer, "_optimizer_step_pre_hooks") and seen < 8:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None:
            break
        optimizer, seen = inner, seen + 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"gradwatch.watch needs a torch.optim.Optimizer, got {type(optimizer)}")
    return optimizer


def _watch_signature() -> inspect.Signature:
    """watch()'s own parameters, then every other AgentConfig field as a keyword with its
    AgentConfig default: introspection (help(), IDEs, ``inspect.signature``) sees the settings
    watch() takes through ``**settings`` without a second copy of their defaults."""
    own = inspect.signature(watch).parameters.values()
    named = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in named}
    fields = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type
        )
        for f in dataclasses.fields(AgentConfig)
        if f.name not in taken and f.default is not dataclasses.MISSING
    ]
    return inspect.signature(watch).replace(parameters=[*named, *fields])


watch.__signature__ = _watch_signature()  # type: ignore[attr-defined]
