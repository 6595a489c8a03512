""":func:`watch`: attach a :class:`Monitor` to a model and its optimizer. Every setting is a field
of :class:`AgentConfig` (the one home of its default), given as an argument or by its
``GRADWATCH_*`` variable (both derived by :mod:`gradwatch.settings`); rank and world size fall
back to torch.distributed, then ``RANK``/``WORLD_SIZE``."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gradwatch.agent.actions import format_policies
from gradwatch.agent.config import SETTINGS, AgentConfig, default_rank_world
from gradwatch.agent.monitor import Monitor
from gradwatch.agent.null import NullMonitor
from gradwatch.settings import ConfigError, parse_value, resolve_code

ParamFilter = str | Sequence[str] | Callable[[str, Tensor], bool]
"""``watch(params=...)``: glob patterns of parameter names, or a predicate on (name, param)."""
_DISABLED = next(s for s in SETTINGS if s.field == "disabled")


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: str | None = None,
    endpoint: str | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    scaler: Any = None,
    params: ParamFilter | None = None,
    config: AgentConfig | None = None,
    **settings: Any,
) -> Monitor:
    """Attach gradwatch to ``optimizer`` (hooks only; the training loop needs no change).

    Every :class:`AgentConfig` field is a keyword argument here (``every=``, ``full_every=``,
    ``flops_per_token=``, ...) and a ``GRADWATCH_<NAME>`` variable (``GRADWATCH_EVERY``);
    an argument wins over the variable, the variable over the default (None counts as not
    given). Rank and world size default to torch.distributed, then env ``RANK``/
    ``WORLD_SIZE``. A bad value raises ValueError naming the argument or the variable.
    ``params`` selects the parameters to watch: glob patterns (a string, comma-separated, or
    a list) matched against ``named_parameters()`` names, or a predicate ``(name, param) ->
    bool``. A full ``config`` replaces the arguments and the variables, except
    ``GRADWATCH_DISABLED``. When ``disabled`` (argument, variable or config), the monitor
    returned does nothing: no hooks, no thread, no socket. ``on_alert`` (a mapping such as
    ``{"non_finite": "stop"}`` or its text ``non_finite=stop``) says what this rank does when
    the collector sends an alert back: :class:`~gradwatch.agent.actions.AlertActions`.
    """
    known = {s.field for s in SETTINGS}
    for name in settings:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"watch() got an unexpected setting {name!r}{hint}")
    select, patterns = _split_filter(params)
    values: dict[str, Any] = {
        **settings,
        "run": run,
        "endpoint": endpoint,
        "rank": rank,
        "world_size": world_size,
        "params": patterns,
    }
    if "on_alert" in settings:  # a mapping {"non_finite": "stop"} as the setting's text
        values["on_alert"] = format_policies(settings["on_alert"])
    environ = os.environ
    if _disabled(values.get("disabled"), config, environ):
        return NullMonitor(_quiet_config(config, values, environ))
    if config is None:
        config = _resolve(values, environ)
    return Monitor(model, _unwrap(optimizer), config, scaler=scaler, select=select)


def _split_filter(
    params: ParamFilter | None,
) -> tuple[Callable[[str, Tensor], bool] | None, str | None]:
    """``params`` as a predicate (kept out of the config) or as AgentConfig's patterns."""
    if params is None or isinstance(params, str):
        return None, params
    if callable(params):
        return params, None
    if not all(isinstance(p, str) and "," not in p for p in params):
        raise ConfigError("params", f"patterns must be strings without commas, got {params!r}")
    return None, ",".join(params)


def _resolve(values: Mapping[str, Any], environ: Mapping[str, str]) -> AgentConfig:
    """The config from ``values`` (arguments), then ``GRADWATCH_*``, then rank and world size
    from torch.distributed or torchrun's variables, then AgentConfig's defaults."""
    fallback: dict[str, tuple[Any, str]] = {"run": ("", "run")}
    fallback.update(default_rank_world(environ))
    return resolve_code(AgentConfig, SETTINGS, values, environ, fallback)


def _disabled(given: Any, config: AgentConfig | None, environ: Mapping[str, str]) -> bool:
    """``disabled=`` when given, else ``GRADWATCH_DISABLED``, else the config's."""
    if given is not None:
        if not isinstance(given, bool):
            raise ConfigError("disabled", f"must be True or False, got {given!r}")
        return given
    text = environ.get(_DISABLED.env)
    if text is not None:
        return bool(parse_value(_DISABLED, text, _DISABLED.env))
    return config is not None and config.disabled


def _quiet_config(
    config: AgentConfig | None, values: Mapping[str, Any], environ: Mapping[str, str]
) -> AgentConfig:
    """The settings of a disabled monitor, for whoever reads ``monitor.config``: as resolved
    when they resolve, else the defaults (a switched-off agent never raises over them)."""
    try:
        resolved = config or _resolve(values, environ)
    except ValueError:
        resolved = AgentConfig(run="disabled")
    return dataclasses.replace(resolved, disabled=True)


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
