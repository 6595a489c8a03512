"""Wire protocol v1: every frame kind round-trips, and untrusted bytes are rejected by reason."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import msgpack
import pytest

from gradwatch import wire
from gradwatch.wire import Bye, Heartbeat, Hello, ParamInfo, Stats, WireError

PARAMS = (
    ParamInfo("tok_emb.weight", (64, 32), "torch.float32", 2048, True, 0),
    ParamInfo("blocks.0.ln.weight", (32,), "torch.bfloat16", 32, True, 1),
    ParamInfo("frozen.bias", (32,), "torch.float32", 32, False, -1),
)


def make_hello(**kw: object) -> Hello:
    base: dict[str, object] = dict(
        run="r", rank=0, session="ab12", world_size=2, host="h", pid=42, torch="2.13.0",
        device="cpu", optimizer="AdamW", params=PARAMS, seq=0, time=1700000000.5,
    )  # fmt: skip
    base.update(kw)
    return Hello(**base)  # type: ignore[arg-type]


def make_stats(**kw: object) -> Stats:
    n = 2  # tracked params
    cheap, full = n * len(wire.CHEAP_FIELDS), n * len(wire.FULL_FIELDS)
    base: dict[str, object] = dict(
        run="r", rank=0, session="ab12", seq=1, step=7, time=1700000001.0, loss=2.5,
        lr=(3e-4, 1e-3), rows=wire.pack_floats([float(i) for i in range(cheap)]),
        full=wire.pack_floats([float(i) for i in range(full)]), nograd=(1,),
        metrics={"grad_norm": 1.25, "step_time_seconds": 0.04}, scalars={"tokens": 4096.0},
        dropped=3, nonfinite=((0, 12),),
    )  # fmt: skip
    base.update(kw)
    return Stats(**base)  # type: ignore[arg-type]


STACK = ("/w/train.py:88 in wait_for_batch", "/w/train.py:120 in main")
FRAMES = [
    make_hello(),
    make_hello(replicated=True, sharded=(0, 2), device_uuid="GPU-3b5c1a2e-0d1f-4c2b-9e8f"),
    make_stats(),
    make_stats(loss=None, full=b"", nograd=(), metrics={}, scalars={}, nonfinite=()),
    Heartbeat("r", 1, "ab12", 9, 12, 1700000002.0, dropped=1),
    Heartbeat("r", 1, "ab12", 9, 12, 1700000002.0, 1, "backward", 0.25),
    Heartbeat("r", 1, "ab12", 9, 12, 1.7e9, 0, "eval", 75.5, declared=True, stack=STACK),
    Bye("r", 0, "ab12", 10, 99, 1700000003.0, reason="close", dropped=0),
    Bye(
        "r",
        0,
        "ab12",
        10,
        99,
        1700000003.0,
        "error",
        2,
        "torch.OutOfMemoryError",
        "oom",
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        STACK,
    ),  # fmt: skip
    Bye("r", 0, "ab12", 10, 99, 1700000003.0, "terminated", stack=STACK, signal=15),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_wire_round_trips_every_frame_kind(frame: wire.Frame) -> None:
    assert wire.decode(wire.encode(frame)) == frame


def _without(frame: wire.Frame, *keys: str) -> bytes:
    obj = msgpack.unpackb(wire.encode(frame), raw=False)
    for key in keys:
        obj.pop(key, None)
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def test_wire_frames_of_older_agents_decode_with_the_new_fields_at_their_defaults() -> None:
    hello = wire.decode(_without(FRAMES[1], "replicated", "sharded", "device_uuid"))
    assert hello == make_hello()
    beat = wire.decode(_without(FRAMES[6], "phase", "phase_seconds", "declared", "stack"))
    assert isinstance(beat, Heartbeat)
    assert (beat.phase, beat.phase_seconds, beat.declared, beat.stack) == ("", 0.0, False, ())
    bye = wire.decode(
        _without(FRAMES[8], "reason", "error_type", "error_kind", "error_message", "stack")
    )
    assert isinstance(bye, Bye) and (bye.reason, bye.error_kind, bye.stack) == ("close", "", ())


def _with(frame: wire.Frame, **overrides: object) -> bytes:
    obj = msgpack.unpackb(wire.encode(frame), raw=False)
    obj.update(overrides)
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


BAD_NEW_FIELDS = {
    "replicated not a bool": (FRAMES[0], {"replicated": 1}),
    "sharded not a list": (FRAMES[0], {"sharded": 2}),
    "sharded beyond params": (FRAMES[0], {"sharded": [0, 3]}),
    "sharded not ascending": (FRAMES[0], {"sharded": [2, 0]}),
    "sharded repeated": (FRAMES[0], {"sharded": [1, 1]}),
    "device_uuid too long": (FRAMES[0], {"device_uuid": "G" * 65}),
    "unknown automatic phase": (FRAMES[5], {"phase": "napping"}),
    "phase too long": (FRAMES[6], {"phase": "e" * (wire.MAX_PHASE_LEN + 1)}),
    "phase not a string": (FRAMES[5], {"phase": 3}),
    "negative phase_seconds": (FRAMES[5], {"phase_seconds": -1.0}),
    "infinite phase_seconds": (FRAMES[5], {"phase_seconds": math.inf}),
    "declared not a bool": (FRAMES[6], {"declared": "yes"}),
    "stack too deep": (FRAMES[6], {"stack": ["f.py:1 in f"] * (wire.MAX_STACK + 1)}),
    "stack entry too long": (FRAMES[6], {"stack": ["x" * (wire.MAX_STACK_ENTRY + 1)]}),
    "stack of numbers": (FRAMES[9], {"stack": [1, 2]}),
    "unknown bye reason": (FRAMES[7], {"reason": "bored"}),
    "unknown error kind": (FRAMES[8], {"error_kind": "gremlins"}),
    "error message too long": (FRAMES[8], {"error_message": "m" * 1025}),
    "signal out of range": (FRAMES[9], {"signal": 999}),
    "signal negative": (FRAMES[9], {"signal": -15}),
}


@pytest.mark.parametrize("name", BAD_NEW_FIELDS)
def test_wire_decode_rejects_bad_liveness_and_crash_fields(name: str) -> None:
    frame, overrides = BAD_NEW_FIELDS[name]
    with pytest.raises(WireError) as err:
        wire.decode(_with(frame, **overrides))
    assert err.value.reason == "schema"


def test_wire_hello_tracked_skips_params_without_grad() -> None:
    assert make_hello().tracked == (0, 1)


def test_wire_stats_columns_unpack_in_row_order() -> None:
    stats = make_stats()
    k = len(wire.FULL_FIELDS)
    full = wire.unpack_columns(wire.FULL_FIELDS, stats.full)
    assert full["update_norm"] == [0.0, float(k)]
    assert full["weight_norm"] == [float(k - 1), float(2 * k - 1)]
    assert wire.unpack_columns(wire.CHEAP_FIELDS, stats.rows)["grad_norm"] == [0.0, 1.0]


def test_wire_check_shape_rejects_rows_that_do_not_fit_the_table() -> None:
    wire.check_shape(make_hello(), make_stats())
    with pytest.raises(WireError) as err:
        wire.check_shape(make_hello(), make_stats(rows=wire.pack_floats([1.0] * 5)))
    assert err.value.reason == "schema"


def _raw(**overrides: object) -> bytes:
    obj = msgpack.unpackb(wire.encode(make_stats()), raw=False)
    obj.update(overrides)
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


BAD = {
    "random bytes": (bytes(random.Random(1).getrandbits(8) for _ in range(257)), "malformed"),
    "truncated": (wire.encode(make_hello())[:-7], "malformed"),
    "not a map": (msgpack.packb([1, 2, 3]), "malformed"),
    "wrong version": (_raw(v=2), "version"),
    "no version": (msgpack.packb({"kind": "stats"}), "version"),
    "unknown kind": (_raw(kind="gossip"), "unknown_kind"),
    "string step": (_raw(step="7"), "schema"),
    "bool rank": (_raw(rank=True), "schema"),
    "negative rank": (_raw(rank=-1), "schema"),
    "nan time": (_raw(time=math.nan), "schema"),
    "rows not bytes": (_raw(rows=[1.0, 2.0]), "schema"),
    "rows not float32": (_raw(rows=b"abc"), "schema"),
    "lr of strings": (_raw(lr=["fast"]), "schema"),
    "metrics of lists": (_raw(metrics={"grad_norm": [1]}), "schema"),
    "missing run": (msgpack.packb({"v": 1, "kind": "bye"}), "schema"),
    "oversized": (b"\x00" * (wire.MAX_FRAME_BYTES + 1), "oversized"),
    # A 32-bit array header claiming 4 billion items with nothing behind it.
    "huge claimed array": (b"\xdd\xff\xff\xff\xff", "malformed"),
    "huge claimed bin": (b"\x81\xa1v\xc6\xff\xff\xff\xf0", "malformed"),
    "huge claimed map": (b"\xdf\xff\xff\xff\xff", "malformed"),
}


@pytest.mark.parametrize("name", BAD)
def test_wire_decode_rejects_bad_input_by_reason(name: str) -> None:
    data, reason = BAD[name]
    with pytest.raises(WireError) as err:
        wire.decode(data)
    assert err.value.reason == reason
    assert err.value.reason in wire.REJECT_REASONS


def test_wire_stats_rejects_malformed_or_out_of_range_nonfinite_counts() -> None:
    obj = msgpack.unpackb(wire.encode(make_stats()), raw=False)
    obj["nonfinite"] = [[0, -1]]
    with pytest.raises(WireError, match="nonfinite"):
        wire.decode(msgpack.packb(obj, use_bin_type=True))
    with pytest.raises(WireError, match="nonfinite row"):
        wire.check_shape(make_hello(), make_stats(nonfinite=((2, 1),)))


def test_wire_hello_rejects_malformed_param_rows() -> None:
    obj = msgpack.unpackb(wire.encode(make_hello()), raw=False)
    obj["params"][1] = ["x", [3], "f32", "three", True, 0]
    with pytest.raises(WireError, match="params\\[1\\]"):
        wire.decode(msgpack.packb(obj, use_bin_type=True))


def test_wire_cheap_and_full_rows_fit_the_frame_budget() -> None:
    # 40 bytes per parameter tensor: both row blocks together stay within it.
    assert 4 * (len(wire.CHEAP_FIELDS) + len(wire.FULL_FIELDS)) <= 40


def test_wire_decode_raises_only_wire_errors_on_mutated_frames() -> None:
    rng = random.Random(7)
    seeds = [wire.encode(f) for f in FRAMES]
    outcomes: set[str] = set()
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        try:
            wire.decode(bytes(data))
            outcomes.add("ok")
        except WireError as exc:
            outcomes.add(exc.reason)
    # Mutations hit both valid frames and several distinct rejection reasons.
    assert "ok" in outcomes and {"malformed", "schema"} <= outcomes


def test_wire_metrics_table_in_the_docs_equals_the_vocabulary() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "wire-protocol.md").read_text()
    rows = dict(re.findall(r"^\| `([\w.]+)` \| ([^|]+?) \|$", doc, re.M))
    documented = {k: v for k, v in rows.items() if k in wire.METRICS or k.startswith("grad_p")}
    assert documented == wire.METRICS
