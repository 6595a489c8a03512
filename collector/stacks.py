"""Python stacks as agents send them (``path/file.py:LINE in function``, innermost first): short
forms for messages, and whether a rank is waiting in a collective or stuck on its own."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .state import RankState

_TORCH = re.compile(r"[/\\]torch[/\\]")
_COLLECTIVE = re.compile(r"[/\\]torch[/\\](?:distributed|nn[/\\]parallel)[/\\]")
_ENTRY = re.compile(r"^(?P<path>.*?):(?P<line>\d+) in (?P<function>.*)$")


def short(entry: str) -> str:
    """``/a/b/dataset.py:88 in Dataset.__getitem__`` → ``dataset.py:88 in Dataset.__getitem__``."""
    match = _ENTRY.match(entry)
    if match is None:
        return entry
    name = re.split(r"[/\\]", match["path"])[-1]
    return f"{name}:{match['line']} in {match['function']}"


def innermost(stack: Sequence[str], n: int) -> str:
    """The ``n`` innermost entries, short, innermost first: ``a.py:1 in f < b.py:2 in g``."""
    return " < ".join(short(e) for e in stack[:n])


def torch_frames(stack: Sequence[str]) -> list[str]:
    """The innermost entries that are torch's own code, up to the first that is not."""
    out = []
    for entry in stack:
        if not _TORCH.search(entry):
            break
        out.append(entry)
    return out


def waiting_in_collective(rank: RankState) -> bool:
    """Whether the rank waits for the others rather than holding them up: its innermost frames
    are inside torch.distributed or torch.nn.parallel, or, with a replicated model (DDP, whose
    all-reduce completes in backward), it is in ``backward`` inside torch's code. Without a
    stack, a replicated model's ``backward`` alone says so."""
    inner = torch_frames(rank.stack)
    if any(_COLLECTIVE.search(e) for e in inner):
        return True
    if not (rank.hello.replicated and rank.phase == "backward"):
        return False
    return bool(inner) or not rank.stack


def place(rank: RankState) -> tuple[str, int, str]:
    """Where a rank is, for grouping ranks that wait in the same place: phase, last completed
    step and innermost frame."""
    return (rank.phase, rank.last_step, short(rank.stack[0]) if rank.stack else "")
