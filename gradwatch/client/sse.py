"""Reading ``text/event-stream``: lines into events, as the Server-Sent Events spec says."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass
class Event:
    """One event: the fields of the lines before a blank line."""

    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.event or self.data is not None or self.id is not None or self.comments)


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """The events in ``lines`` (without their line endings), each when its blank line arrives."""
    event = Event()
    for line in lines:
        if not line:
            if event:
                yield event
            event = Event()
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if not name:
            event.comments.append(value)
        elif name == "data":
            event.data = value if event.data is None else f"{event.data}\n{value}"
        elif name == "event":
            event.event = value
        elif name == "id" and "\0" not in value:
            event.id = value
        elif name == "retry" and value.isdigit():
            event.retry = int(value)
