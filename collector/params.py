"""What a hello's parameter table says once, derived when the hello arrives instead of on every
frame: tracked names and their rows, sizes, dtypes, param groups and block numbers, as numpy
columns in the order of the stats rows."""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from gradwatch.wire import Hello

LOW_PRECISION = ("bfloat16", "float16", "bf16", "fp16", "half")
_LAYER = re.compile(r"(?:^|\.)(?:blocks|layers|layer|h|block)\.(\d+)\.")

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def layer_index(name: str) -> int | None:
    """The block number in ``blocks.3.attn.weight``-style names, else None."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


class ParamTable:
    """The tracked parameters of one hello, row by row (rows of its stats frames)."""

    def __init__(self, hello: Hello) -> None:
        self.hello = hello
        tracked = hello.tracked
        params = [hello.params[i] for i in tracked]
        self.names: tuple[str, ...] = tuple(p.name for p in params)
        """Names of the tracked parameters, in row order."""
        self.all_names: tuple[str, ...] = tuple(p.name for p in hello.params)
        """Names of every parameter of the table, tracked or not."""
        self.rows: dict[str, int] = {}
        """Row of each tracked name (the first, should a name repeat)."""
        for row, name in enumerate(self.names):
            self.rows.setdefault(name, row)
        self.numels: list[int] = [p.numel for p in params]
        self.numel: Ints = np.array(self.numels, dtype=np.int64)
        self.dtypes: list[str] = [p.dtype for p in params]
        self.low_precision: Bools = np.array(
            [d in LOW_PRECISION for d in self.dtypes], dtype=np.bool_
        )
        self.groups: list[int] = [p.group for p in params]
        """Optimizer param group of each row."""
        self.group_set = frozenset(self.groups)
        self.group_of: dict[str, int] = {p.name: p.group for p in reversed(hello.params)}
        """Param group of every parameter by name (tracked or not; the first of a name)."""
        layers = [layer_index(n) for n in self.names]
        self.layer: Ints = np.array([-1 if x is None else x for x in layers], dtype=np.int64)
        """Block number of each row (-1: the name has none)."""
        self.has_layer: Bools = self.layer >= 0
        self.layer_count = int(self.layer.max()) + 1 if self.has_layer.any() else 0

    def __len__(self) -> int:
        return len(self.names)


def unpack(fields: tuple[str, ...], data: bytes) -> dict[str, Floats]:
    """The per-parameter float64 columns of a packed row block whose rows hold ``fields``
    (little-endian float32 on the wire; one copy, each column a view of it)."""
    if not fields:
        return {}
    values = np.frombuffer(data, dtype="<f4").astype(np.float64)
    width = len(fields)
    return {f: values[j::width] for j, f in enumerate(fields)}
