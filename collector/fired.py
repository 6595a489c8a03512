"""Which alerts have been seen firing: the back channel and the recorder act once per alert."""

from __future__ import annotations

import threading
from collections import OrderedDict

from .alert import COLLECTOR_RUN, Alert

REMEMBERED = 10_000
"""Alert ids remembered (the latest); a later change of an older one (an ack) is ignored."""


class FiredOnce:
    """``first(alert)`` is true once per alert, the first time it is seen firing (never for a
    collector-level alert). Safe from any thread (book listeners run on the ingest thread,
    acks on the HTTP thread)."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, alert: Alert) -> bool:
        if alert.state != "firing" or alert.run == COLLECTOR_RUN:
            return False
        with self._lock:
            if alert.id in self._seen:
                return False
            self._seen[alert.id] = None
            if len(self._seen) > self.remembered:
                self._seen.popitem(last=False)
            return True
