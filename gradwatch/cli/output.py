"""Terminal output: aligned tables, coloured on a terminal and plain when piped (``NO_COLOR``
respected), ages, numbers."""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

Cell = tuple[str, str]
"""A table cell: its text and its SGR colour code ("" for none)."""

SEVERITY_COLOURS = {"critical": "1;31", "error": "31", "warning": "33", "info": "36"}
STATE_COLOURS = {"firing": "1", "pending": "33", "resolved": "2"}


def use_colour(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (no-color.org) or TERM=dumb."""
    stream = stream or sys.stdout
    environ = os.environ if environ is None else environ
    return stream.isatty() and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def age(t: float, now: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: how long ago ``t`` was."""
    s = max(0.0, now - t)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def number(x: float | None) -> str:
    """A value for a table: ``-`` when absent, 4 significant digits otherwise."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


class Table:
    """Rows under a header, columns aligned; the last column is cut to the terminal's width
    when colouring (a person reads it), kept whole when piped (a program reads it)."""

    def __init__(self, header: Sequence[str], out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.colour = use_colour(self.out)
        self.header = [(h, "") for h in header]
        self.widths = [len(h) for h in header]
        self.width = shutil.get_terminal_size().columns if self.out.isatty() else 0

    def fit(self, rows: Sequence[Sequence[Cell]]) -> None:
        """Widen the columns to hold ``rows``."""
        for row in rows:
            for i, (text, _) in enumerate(row[:-1]):
                self.widths[i] = max(self.widths[i], len(text))

    def line(self, row: Sequence[Cell]) -> str:
        parts: list[str] = []
        used = 0
        for i, (text, code) in enumerate(row):
            last = i == len(row) - 1
            if last and self.width and used + len(text) > self.width:
                text = text[: max(0, self.width - used - 1)] + "…"
            pad = "" if last else " " * max(2, self.widths[i] - len(text) + 2)
            parts.append(self.paint(text, code) + pad)
            used += len(text) + len(pad)
        return "".join(parts).rstrip()

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if code and self.colour and text else text

    def print_header(self) -> None:
        print(self.paint(self.line(self.header), "1"), file=self.out, flush=True)

    def print_row(self, row: Sequence[Cell]) -> None:
        print(self.line(row), file=self.out, flush=True)

    def print(self, rows: Sequence[Sequence[Cell]]) -> None:
        """Header and rows, aligned over all of them."""
        self.fit(rows)
        self.print_header()
        for row in rows:
            self.print_row(row)
