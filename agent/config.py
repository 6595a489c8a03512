"""Agent configuration: one frozen dataclass, filled by :func:`gradwatch.agent.watch` from its
arguments and the ``GRADWATCH_*`` variables (both derived from the fields by
:mod:`gradwatch.settings`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from gradwatch.settings import ConfigError, settings_of

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to know; validated on construction."""

    run: str
    """Run name shown by the collector, shared by all ranks of a run (required)."""
    endpoint: str = DEFAULT_ENDPOINT
    """ZMQ endpoint the collector binds; the agent connects."""
    curve_keys: str | None = None
    """Folder with this agent's CurveZMQ keys (``client.key_secret`` and the collector's
    ``server.key``, from ``gradwatch-collector keys``), for a collector started with
    ``--curve-keys``; unset: plain ZeroMQ."""
    disabled: bool = False
    """``watch()`` returns a monitor that does nothing (no hooks, no thread, no socket, no
    error over the other settings): ``GRADWATCH_DISABLED=1`` switches gradwatch off without
    editing code."""
    params: str | None = None
    """Watch only the parameters whose names match one of these comma-separated glob patterns
    (``blocks.*.attn.*,lm_head.weight``; fnmatch, matched against ``named_parameters()``
    names); the others are not hooked, measured or announced. Unset: every parameter.
    ``watch(params=...)`` also takes a list of patterns or a predicate ``(name, param) ->
    bool``."""
    rank: int = 0
    """This process's rank; one monitor per rank. Unset: torch.distributed's when it is
    initialised, else env ``RANK``, else 0."""
    world_size: int = 1
    """Number of ranks in the run. Unset: torch.distributed's when it is initialised, else env
    ``WORLD_SIZE``, else 1."""
    every: int = 1
    """Compute cheap per-parameter statistics every this many optimizer steps."""
    full_every: int = 50
    """Compute update ratios and gradient percentiles every this many optimizer steps."""
    sample_size: int = 1024
    """Elements per parameter in the fixed update sample (a strided window)."""
    send_hwm: int = 64
    """ZMQ send high-water mark: frames queued in the socket before new ones are dropped."""
    queue_size: int = 128
    """Frames the training thread may hand to the sender thread before it drops new ones."""
    flush_seconds: float = 0.1
    """The sender thread wakes at most once per this many seconds and sends all that is queued.
    One wakeup per frame would preempt the training step's compute threads every step."""
    heartbeat_seconds: float = 5.0
    """The sender thread sends a heartbeat (last step, the training thread's phase) every
    this many seconds, whatever the training thread is doing."""
    stall_seconds: float = 60.0
    """When no optimizer step has completed for this many seconds, heartbeats carry the
    training thread's Python stack."""
    connect_warn_seconds: float = 10.0
    """Log one warning when no collector has been reached this many seconds after start."""
    replicated: bool = False
    """The model is replicated across ranks, so its gradients and weights must agree (DDP is
    recognised by itself; set this for other data-parallel schemes). Sent in the hello."""
    report_signals: bool = True
    """Wrap SIGTERM/SIGINT handlers so the bye says ``terminated`` (see docs/agent.md). A
    main thread blocked inside a C call runs Python signal handlers only when the call
    returns; set False to leave signal handling exactly as it is."""
    close_timeout_seconds: float = 1.0
    """Most seconds ``close()`` waits for the sender thread to flush the final frames."""
    memory_limit_bytes: int | None = None
    """The memory this rank may use, reported as ``memory_total_bytes`` (the collector's
    memory_pressure rule compares use against it): a container or job limit below the device
    capacity (CUDA) or physical RAM (CPU), which are reported when None."""
    on_alert: str | None = None
    """What this rank does when an alert of its run fires, per rule, over the collector's
    policy (the rule's ``action``): comma-separated ``RULE=ACTION`` with ACTION ``stop``,
    ``checkpoint`` or ``notify`` (``non_finite=stop,*=notify``; ``*`` is every other rule).
    ``watch(on_alert={"non_finite": "stop"})`` also takes a mapping."""
    flops_per_token: float | None = None
    """Model FLOPs per trained token (forward + backward), for ``mfu_ratio``."""
    peak_flops: float | None = None
    """Peak FLOP/s of this rank's device, for ``mfu_ratio``."""

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name``: CLIs and docs read it here instead of restating it."""
        default = cls.__dataclass_fields__[name].default
        if default is MISSING:
            raise KeyError(f"AgentConfig.{name} has no default")
        return default

    def __post_init__(self) -> None:
        if not self.run or len(self.run) > 256:
            raise ConfigError("run", "must be a non-empty name of at most 256 characters")
        if "://" not in self.endpoint:
            raise ConfigError("endpoint", f"{self.endpoint!r} is not a ZMQ endpoint like tcp://h:p")
        if self.curve_keys is not None:
            from gradwatch.keys import client_keys

            try:
                client_keys(self.curve_keys)
            except ValueError as exc:
                raise ConfigError("curve_keys", str(exc)) from None
        if self.params is not None and not self.patterns:
            raise ConfigError("params", f"no glob pattern in {self.params!r}")
        if self.world_size < 1:
            raise ConfigError("world_size", f"must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError("rank", f"must be in [0, world_size), got {self.rank}")
        for name in ("every", "full_every", "sample_size", "send_hwm", "queue_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        for name, least in (
            ("heartbeat_seconds", 0.01),  # the sender thread would spin below that
            ("stall_seconds", 0.0),
            ("connect_warn_seconds", 0.0),
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not least < value < math.inf:
                raise ConfigError(name, f"must be a number of seconds > {least}, got {value!r}")
        limit = self.memory_limit_bytes
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise ConfigError("memory_limit_bytes", f"a positive integer or None, got {limit!r}")
        for name in ("replicated", "report_signals", "disabled"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be True or False, got {getattr(self, name)!r}")
        if self.close_timeout_seconds < 0:
            raise ConfigError("close_timeout_seconds", "must be >= 0")
        if not 0 <= self.flush_seconds <= 10:
            raise ConfigError("flush_seconds", f"must be in [0, 10], got {self.flush_seconds}")
        if self.on_alert is not None:
            from gradwatch.agent.actions import parse_policies

            try:
                parse_policies(self.on_alert)
            except ValueError as exc:
                raise ConfigError("on_alert", str(exc)) from None
        for name in ("flops_per_token", "peak_flops"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(name, f"must be > 0 when given, got {value}")

    @property
    def patterns(self) -> tuple[str, ...]:
        """The glob patterns of ``params`` (empty: every parameter)."""
        return tuple(p.strip() for p in (self.params or "").split(",") if p.strip())


SETTINGS = settings_of(AgentConfig)
"""Each field as a setting: its ``watch()`` argument, ``GRADWATCH_*`` variable and help."""


def default_rank_world(environ: Mapping[str, str]) -> dict[str, tuple[int, str]]:
    """Rank and world size with their origin: torch.distributed when initialised, else env
    ``RANK``/``WORLD_SIZE`` (torchrun sets them), else none (AgentConfig's 0 and 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        where = "torch.distributed"
        return {"rank": (dist.get_rank(), where), "world_size": (dist.get_world_size(), where)}
    out: dict[str, tuple[int, str]] = {}
    for name, var in (("rank", "RANK"), ("world_size", "WORLD_SIZE")):
        text = environ.get(var)
        if text is not None:
            try:
                out[name] = (int(text), var)
            except ValueError:
                raise ConfigError(var, f"expected an integer, got {text!r}") from None
    return out
