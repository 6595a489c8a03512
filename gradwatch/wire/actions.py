"""Wire protocol v1, the back channel: the ``action`` message the collector sends to the ranks
of a run when one of its alerts fires (agent frames travel the other way, codec.py).

Agents connect a ZeroMQ DEALER to the collector's ROUTER; the collector answers on the same
connection, so the back channel needs no second port and carries the frames' authentication.
Both sides decode with explicit limits: whatever comes off the network is untrusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

from .frames import MAX_NAME_LEN, VERSION, WireError

ACTIONS: tuple[str, ...] = ("notify", "stop", "checkpoint")
"""What a rank is asked to do about an alert: ``notify`` (nothing; ``monitor.alerts()`` and
callbacks see it), ``stop`` (end training), ``checkpoint`` (save a checkpoint, go on)."""
MAX_ACTION_BYTES = 64 * 1024
"""Largest action message an agent reads (ZMQ_MAXMSGSIZE of its socket)."""
MAX_MESSAGE_LEN = 4096

_LIMITS: dict[str, int] = {
    "max_str_len": MAX_MESSAGE_LEN,
    "max_bin_len": 0,
    "max_array_len": 16,
    "max_map_len": 64,
    "max_ext_len": 0,
}


@dataclass(frozen=True)
class Action:
    """An alert of this run fired: what it is and what the collector asks the rank to do."""

    run: str
    rank: int
    """The rank the alert is about (every rank of the run receives it)."""
    alert: int
    """The alert's id (``GET /alerts/{id}``)."""
    rule: str
    severity: str
    action: str
    """One of :data:`ACTIONS`: the rule's policy on the collector (the agent may override it)."""
    step: int
    """The step at which the alert fired (on ``rank``)."""
    at_step: int
    """Act at the first step boundary at or after this step: every rank of a multi-rank run
    then stops (or saves) at the same step, so no rank waits in a collective for one that
    left. 0: at once (a single-rank run)."""
    message: str
    parameter: str
    time: float
    """Collector wall clock when the alert fired (Unix seconds)."""


def encode_action(action: Action) -> bytes:
    """Serialise an action message."""
    return msgpack.packb(  # type: ignore[no-any-return]
        {
            "v": VERSION,
            "kind": "action",
            "run": action.run,
            "rank": action.rank,
            "alert": action.alert,
            "rule": action.rule,
            "severity": action.severity,
            "action": action.action,
            "step": action.step,
            "at_step": action.at_step,
            "message": action.message[:MAX_MESSAGE_LEN],
            "parameter": action.parameter,
            "time": action.time,
        },
        use_bin_type=True,
    )


def decode_action(data: bytes) -> Action:
    """Parse untrusted bytes into an :class:`Action`, or raise :class:`WireError`."""
    if len(data) > MAX_ACTION_BYTES:
        raise WireError("oversized", f"{len(data)} bytes > {MAX_ACTION_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, **_LIMITS)
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise WireError("malformed", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError("malformed", "top level is not a map")
    if obj.get("v") != VERSION:
        raise WireError("version", f"protocol version {obj.get('v')!r}, expected {VERSION}")
    if obj.get("kind") != "action":
        raise WireError("unknown_kind", f"kind {obj.get('kind')!r}")
    action = _text(obj, "action", 16)
    if action not in ACTIONS:
        raise WireError("schema", f"action {action!r} is not one of {ACTIONS}")
    moment = obj.get("time")
    if not isinstance(moment, (int, float)) or isinstance(moment, bool):
        raise WireError("schema", "time is not a number")
    if not math.isfinite(moment):
        raise WireError("schema", "time is not a finite number")
    return Action(
        run=_text(obj, "run", 256),
        rank=_int(obj, "rank"),
        alert=_int(obj, "alert"),
        rule=_text(obj, "rule", 128),
        severity=_text(obj, "severity", 32),
        action=action,
        step=_int(obj, "step"),
        at_step=_int(obj, "at_step"),
        message=_text(obj, "message", MAX_MESSAGE_LEN),
        parameter=_text(obj, "parameter", MAX_NAME_LEN),
        time=float(moment),
    )


def _text(obj: dict[str, Any], key: str, max_len: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or len(value) > max_len:
        raise WireError("schema", f"{key} is not a string of at most {max_len} chars")
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value < 1 << 62:
        raise WireError("schema", f"{key} is not an integer")
    return value
