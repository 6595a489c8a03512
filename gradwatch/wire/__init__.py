"""Wire protocol v1: the msgpack frames the agent sends and the collector receives.

One msgpack map per ZeroMQ message. Every frame carries ``v`` (protocol version), ``kind``,
``run``, ``rank``, ``session`` (random per agent process) and ``seq`` (per-session counter).
Parameter names travel only in ``hello``; ``stats`` carries per-parameter numbers as packed
little-endian float32 rows in the order of the hello's tracked parameters. This package is
torch-free and is imported by both sides; docs/wire-protocol.md describes it for humans.
"""

from . import metrics
from .actions import ACTIONS, MAX_ACTION_BYTES, Action, decode_action, encode_action
from .codec import check_shape, decode, encode
from .frames import (
    BYE_REASONS,
    CHEAP_FIELDS,
    ERROR_KINDS,
    FULL_FIELDS,
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
    MAX_STACK,
    MAX_STACK_ENTRY,
    PHASES,
    REJECT_REASONS,
    VERSION,
    Bye,
    Frame,
    Heartbeat,
    Hello,
    Kind,
    ParamInfo,
    Stats,
    WireError,
    pack_floats,
    unpack_columns,
    unpack_floats,
)
from .metrics import METRICS

__all__ = [
    "ACTIONS",
    "MAX_ACTION_BYTES",
    "Action",
    "decode_action",
    "encode_action",
    "BYE_REASONS",
    "CHEAP_FIELDS",
    "ERROR_KINDS",
    "FULL_FIELDS",
    "KINDS",
    "MAX_FRAME_BYTES",
    "MAX_GROUP_NAME",
    "MAX_GROUPS",
    "MAX_MAP_LEN",
    "MAX_NAME_LEN",
    "MAX_ERROR_MESSAGE",
    "MAX_ERROR_TYPE",
    "MAX_PARAMS",
    "MAX_PHASE_LEN",
    "MAX_STACK",
    "MAX_STACK_ENTRY",
    "METRICS",
    "PHASES",
    "REJECT_REASONS",
    "VERSION",
    "Bye",
    "Frame",
    "Heartbeat",
    "Hello",
    "Kind",
    "ParamInfo",
    "Stats",
    "WireError",
    "check_shape",
    "unpack_columns",
    "decode",
    "encode",
    "pack_floats",
    "metrics",
    "unpack_floats",
]
