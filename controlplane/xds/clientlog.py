"""What a client sends, in our logs: cut to a readable length, and repeated warnings
about requests we cannot use counted instead of written one by one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("controlplane.xds")

CLIP = 128  # characters of a client's string kept in a log line or message


def clip(text: str, limit: int = CLIP) -> str:
    """A client's string for a log line: whole when short, else its start and length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} characters)"


class JunkLog:
    """A stream's warnings about requests it cannot use (an unknown type URL, an answer
    to a response never sent): the first of each event and type at once, then at most
    one line per `interval` seconds carrying how many were not logged (`suppressed`),
    and the rest when the stream ends. A client repeating a bad request wrote a
    warning per request."""

    KEYS = 32  # (event, type) pairs tracked per stream; further types share one count

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # -> [suppressed, last line]

    def warn(self, event: str, type_url: str, **fields: Any) -> None:
        key = (event, type_url)
        if key not in self._seen and len(self._seen) >= self.KEYS:
            key = (event, "")  # a client sending endless distinct types: one count
        entry = self._seen.get(key)
        now = self.clock()
        if entry is None:
            self._seen[key] = [0, now]
            log.warning(event, type=clip(type_url), **fields)
        elif now - entry[1] >= self.interval:
            log.warning(event, type=clip(type_url), suppressed=int(entry[0]), **fields)
            entry[0], entry[1] = 0, now
        else:
            entry[0] += 1

    def flush(self, **fields: Any) -> None:
        """The counts not logged yet (the stream ends)."""
        for (event, type_url), entry in self._seen.items():
            if entry[0]:
                log.warning(event, type=clip(type_url) or "(other types)",
                            suppressed=int(entry[0]), stream_ended=True, **fields)
                entry[0] = 0
