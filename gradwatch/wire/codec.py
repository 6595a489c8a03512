"""Wire protocol v1, the bytes: msgpack encoding, and decoding of untrusted input."""

from __future__ import annotations

import math
from typing import Any

import msgpack

from .frames import (
    BYE_REASONS,
    ERROR_KINDS,
    KINDS,
    MAX_ERROR_MESSAGE,
    MAX_ERROR_TYPE,
    MAX_FRAME_BYTES,
    MAX_GROUP_NAME,
    MAX_GROUPS,
    MAX_MAP_LEN,
    MAX_NAME_LEN,
    MAX_PARAMS,
    MAX_PHASE_LEN,
    MAX_SIGNAL,
    MAX_STACK,
    MAX_STACK_ENTRY,
    PHASES,
    VERSION,
    Bye,
    Frame,
    Heartbeat,
    Hello,
    ParamInfo,
    Stats,
    WireError,
)

_LIMITS: dict[str, int] = {
    "max_str_len": 1024 * 1024,
    "max_bin_len": MAX_FRAME_BYTES,
    "max_array_len": MAX_PARAMS,
    "max_map_len": MAX_PARAMS,
    "max_ext_len": 0,
}


# ----------------------------------------------------------------------------- encoding


def encode(frame: Frame) -> bytes:
    """Serialize a frame to msgpack bytes."""
    base: dict[str, Any] = {
        "v": VERSION,
        "run": frame.run,
        "rank": frame.rank,
        "session": frame.session,
        "seq": frame.seq,
        "time": frame.time,
    }
    if isinstance(frame, Hello):
        base.update(
            kind="hello",
            world_size=frame.world_size,
            host=frame.host,
            pid=frame.pid,
            torch=frame.torch,
            device=frame.device,
            optimizer=frame.optimizer,
            fields=list(frame.fields),
            full_fields=list(frame.full_fields),
            every=frame.every,
            full_every=frame.full_every,
            params=[
                [p.name, list(p.shape), p.dtype, p.numel, p.requires_grad, p.group]
                for p in frame.params
            ],
            replicated=frame.replicated,
            device_uuid=frame.device_uuid,
        )
        if frame.sharded:
            base["sharded"] = list(frame.sharded)
        if frame.groups:
            base["groups"] = list(frame.groups)
    elif isinstance(frame, Stats):
        base.update(
            kind="stats",
            step=frame.step,
            loss=frame.loss,
            lr=list(frame.lr),
            rows=frame.rows,
            dropped=frame.dropped,
        )
        if frame.full:
            base["full"] = frame.full
        if frame.nograd:
            base["nograd"] = list(frame.nograd)
        if frame.nonfinite:
            base["nonfinite"] = [list(pair) for pair in frame.nonfinite]
        if frame.metrics:
            base["metrics"] = dict(frame.metrics)
        if frame.scalars:
            base["scalars"] = dict(frame.scalars)
    elif isinstance(frame, Heartbeat):
        base.update(
            kind="heartbeat",
            step=frame.step,
            dropped=frame.dropped,
            phase=frame.phase,
            phase_seconds=frame.phase_seconds,
            declared=frame.declared,
        )
        if frame.stack:
            base["stack"] = list(frame.stack)
    else:
        base.update(kind="bye", step=frame.step, reason=frame.reason, dropped=frame.dropped)
        if frame.error_type or frame.error_kind or frame.error_message:
            base.update(
                error_type=frame.error_type,
                error_kind=frame.error_kind,
                error_message=frame.error_message,
            )
        if frame.stack:
            base["stack"] = list(frame.stack)
        if frame.signal:
            base["signal"] = frame.signal
    return msgpack.packb(base, use_bin_type=True)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- decoding


def decode(data: bytes) -> Frame:
    """Parse untrusted bytes into a frame, or raise :class:`WireError` saying why not."""
    if len(data) > MAX_FRAME_BYTES:
        raise WireError("oversized", f"{len(data)} bytes > {MAX_FRAME_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, **_LIMITS)
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise WireError("malformed", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError("malformed", f"top level is {type(obj).__name__}, not a map")
    version = obj.get("v")
    if version != VERSION:
        raise WireError("version", f"protocol version {version!r}, expected {VERSION}")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise WireError("unknown_kind", f"kind {kind!r}")
    r = _Reader(obj)
    common: dict[str, Any] = {
        "run": r.text("run", 256),
        "rank": r.integer("rank", 0, 1 << 20),
        "session": r.text("session", 64),
        "seq": r.integer("seq", 0, 1 << 62),
        "time": r.real("time"),
    }
    if kind == "hello":
        return _decode_hello(r, common)
    if kind == "stats":
        return _decode_stats(r, common)
    common["step"] = r.integer("step", -1, 1 << 62)
    common["dropped"] = r.integer("dropped", 0, 1 << 62, default=0)
    if kind == "heartbeat":
        return _decode_heartbeat(r, common)
    return _decode_bye(r, common)


def _decode_heartbeat(r: _Reader, common: dict[str, Any]) -> Heartbeat:
    phase = r.text("phase", MAX_PHASE_LEN, default="")
    declared = r.flag("declared")
    if not declared and phase not in ("", *PHASES):
        raise WireError("schema", f"phase {phase!r} is neither automatic nor declared")
    seconds = r.real("phase_seconds", default=0.0)
    if seconds < 0:
        raise WireError("schema", "phase_seconds is negative")
    return Heartbeat(
        phase=phase, phase_seconds=seconds, declared=declared, stack=r.stack(), **common
    )


def _decode_bye(r: _Reader, common: dict[str, Any]) -> Bye:
    reason = r.text("reason", 64, default="close")
    if reason not in BYE_REASONS:
        raise WireError("schema", f"reason {reason!r} is not one of {BYE_REASONS}")
    kind = r.text("error_kind", 32, default="")
    if kind not in ERROR_KINDS:
        raise WireError("schema", f"error_kind {kind!r} is not one of {ERROR_KINDS}")
    return Bye(
        reason=reason,
        error_type=r.text("error_type", MAX_ERROR_TYPE, default=""),
        error_kind=kind,
        error_message=r.text("error_message", MAX_ERROR_MESSAGE, default=""),
        stack=r.stack(),
        signal=r.integer("signal", 0, MAX_SIGNAL, default=0),
        **common,
    )


def _decode_hello(r: _Reader, common: dict[str, Any]) -> Hello:
    raw_params = r.array("params", MAX_PARAMS)
    params = []
    for i, row in enumerate(raw_params):
        if not (isinstance(row, list) and len(row) == 6):
            raise WireError("schema", f"params[{i}] is not a 6-item row")
        name, shape, dtype, numel, requires_grad, group = row
        if not (isinstance(name, str) and 0 < len(name) <= MAX_NAME_LEN):
            raise WireError("schema", f"params[{i}] name is not a short string")
        if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
            raise WireError("schema", f"params[{i}] shape is not a list of sizes")
        if not (isinstance(dtype, str) and len(dtype) <= 64):
            raise WireError("schema", f"params[{i}] dtype is not a short string")
        if not (_is_int(numel) and numel >= 0 and isinstance(requires_grad, bool)):
            raise WireError("schema", f"params[{i}] numel/requires_grad have wrong types")
        if not (_is_int(group) and group >= -1):
            raise WireError("schema", f"params[{i}] group is not an index")
        params.append(ParamInfo(name, tuple(shape), dtype, numel, requires_grad, group))
    sharded = r.array("sharded", MAX_PARAMS, default=[])
    if not all(_is_int(i) and 0 <= i < len(params) for i in sharded) or any(
        a >= b for a, b in zip(sharded, sharded[1:], strict=False)
    ):
        raise WireError("schema", "sharded is not an ascending list of indices into params")
    groups = r.array("groups", MAX_GROUPS, default=[])
    if not all(isinstance(g, str) and len(g) <= MAX_GROUP_NAME for g in groups):
        raise WireError("schema", f"groups is not a list of names of <= {MAX_GROUP_NAME} chars")
    return Hello(
        world_size=r.integer("world_size", 1, 1 << 20),
        host=r.text("host", 256),
        pid=r.integer("pid", 0, 1 << 32),
        torch=r.text("torch", 64),
        device=r.text("device", 64),
        optimizer=r.text("optimizer", 128),
        params=tuple(params),
        fields=r.names("fields"),
        full_fields=r.names("full_fields"),
        every=r.integer("every", 1, 1 << 30),
        full_every=r.integer("full_every", 1, 1 << 30),
        replicated=r.flag("replicated"),
        sharded=tuple(sharded),
        device_uuid=r.text("device_uuid", 64, default=""),
        groups=tuple(groups),
        **common,
    )


def _decode_stats(r: _Reader, common: dict[str, Any]) -> Stats:
    loss = r.obj.get("loss")
    if loss is not None and not _is_real(loss):
        raise WireError("schema", "loss is not a number or nil")
    lr = r.array("lr", MAX_GROUPS)
    if not all(_is_real(x) for x in lr):
        raise WireError("schema", "lr is not a list of numbers")
    nograd = r.array("nograd", MAX_PARAMS, default=[])
    if not all(_is_int(x) and x >= 0 for x in nograd):
        raise WireError("schema", "nograd is not a list of indices")
    nonfinite = r.array("nonfinite", MAX_PARAMS, default=[])
    if not all(
        isinstance(x, list) and len(x) == 2 and all(_is_int(v) and v >= 0 for v in x)
        for x in nonfinite
    ):
        raise WireError("schema", "nonfinite is not a list of [row, count] pairs")
    return Stats(
        step=r.integer("step", -1, 1 << 62),
        loss=None if loss is None else float(loss),
        lr=tuple(float(x) for x in lr),
        rows=r.blob("rows"),
        full=r.blob("full", default=b""),
        nograd=tuple(nograd),
        metrics=r.floats("metrics"),
        scalars=r.floats("scalars"),
        dropped=r.integer("dropped", 0, 1 << 62, default=0),
        nonfinite=tuple((row, count) for row, count in nonfinite),
        **common,
    )


_MISSING = object()


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Reader:
    """Typed field access on a decoded map; every failure is a ``schema`` WireError."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def _get(self, key: str, default: Any) -> Any:
        value = self.obj.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise WireError("schema", f"missing field {key!r}")
            return default
        return value

    def text(self, key: str, max_len: int, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or len(value) > max_len:
            raise WireError("schema", f"{key} is not a string of at most {max_len} chars")
        return value

    def integer(self, key: str, lo: int, hi: int, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if not _is_int(value) or not lo <= value <= hi:
            raise WireError("schema", f"{key} is not an integer in [{lo}, {hi}]")
        return int(value)

    def real(self, key: str, default: Any = _MISSING) -> float:
        value = self._get(key, default)
        if not _is_real(value) or not math.isfinite(value):
            raise WireError("schema", f"{key} is not a finite number")
        return float(value)

    def flag(self, key: str) -> bool:
        """An optional boolean, False when absent."""
        value = self._get(key, False)
        if not isinstance(value, bool):
            raise WireError("schema", f"{key} is not a boolean")
        return value

    def stack(self) -> tuple[str, ...]:
        """The optional ``stack``: at most MAX_STACK short strings."""
        value = self.array("stack", MAX_STACK, default=[])
        if not all(isinstance(v, str) and len(v) <= MAX_STACK_ENTRY for v in value):
            raise WireError("schema", f"stack entries are not strings of <= {MAX_STACK_ENTRY}")
        return tuple(value)

    def array(self, key: str, max_len: int, default: Any = _MISSING) -> list[Any]:
        value = self._get(key, default)
        if not isinstance(value, list) or len(value) > max_len:
            raise WireError("schema", f"{key} is not a list of at most {max_len} items")
        return value

    def blob(self, key: str, default: Any = _MISSING) -> bytes:
        value = self._get(key, default)
        if not isinstance(value, bytes) or len(value) % 4:
            raise WireError("schema", f"{key} is not float32 bytes")
        return value

    def names(self, key: str) -> tuple[str, ...]:
        value = self.array(key, 64)
        if not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
            raise WireError("schema", f"{key} is not a list of short names")
        return tuple(value)

    def floats(self, key: str) -> dict[str, float]:
        value = self._get(key, {})
        if not isinstance(value, dict) or len(value) > MAX_MAP_LEN:
            raise WireError("schema", f"{key} is not a map of at most {MAX_MAP_LEN} entries")
        out: dict[str, float] = {}
        for k, v in value.items():
            if not (isinstance(k, str) and len(k) <= 128 and _is_real(v)):
                raise WireError("schema", f"{key} must map short names to numbers")
            out[k] = float(v)
        return out


def check_shape(hello: Hello, stats: Stats) -> None:
    """Raise ``schema`` WireError when a stats frame does not fit its hello's table."""
    n = len(hello.tracked)
    if len(stats.rows) != 4 * n * len(hello.fields):
        raise WireError(
            "schema",
            f"rows hold {len(stats.rows) // 4} floats, expected "
            f"{n} params x {len(hello.fields)} fields",
        )
    if stats.full and len(stats.full) != 4 * n * len(hello.full_fields):
        raise WireError(
            "schema",
            f"full holds {len(stats.full) // 4} floats, expected "
            f"{n} params x {len(hello.full_fields)} fields",
        )
    if any(i >= n for i in stats.nograd):
        raise WireError("schema", "nograd index beyond the tracked parameters")
    if any(row >= n for row, _ in stats.nonfinite):
        raise WireError("schema", "nonfinite row beyond the tracked parameters")
