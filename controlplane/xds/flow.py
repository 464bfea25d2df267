"""Flow control shared by every stream of a server: places for large responses not yet
answered, and the deadlines for answers."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque

from controlplane.xds.state import TypeState


class LargeResponses:
    """At most `limit` streams at a time with a large response (a first full answer,
    mostly) written and not yet answered.

    gRPC takes a copy of every response and holds it until the proxy has read it, and
    `write()` returns long before that. When thousands of proxies connect at once (a
    control plane restart), each is written its whole config — about 1.7 MB per proxy at
    1,000 services — and proxies slower to read than the server is to write made those
    copies pile up (5,000 simulated proxies: 1.6 GB; 0.86-1.03 GB with the limit). A
    proxy's answer proves it read the response, so the place is held until then (or
    until the answer is overdue, or the stream ends). Small responses (an endpoint
    change) never wait."""

    def __init__(self, limit: int, threshold: int = 256 * 1024) -> None:
        self.threshold = threshold if limit > 0 else sys.maxsize
        self._places = asyncio.Semaphore(max(limit, 1))
        self.waiting = 0
        self.held = 0

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self._places.acquire()
        finally:
            self.waiting -= 1
        self.held += 1

    def release(self) -> None:
        self.held -= 1
        self._places.release()


class Deadlines:
    """Answers to check for at given times, on one timer. A timer per response sent was a
    heap entry per stream per push; deadlines here come in order (sent time + one fixed
    timeout), so a queue and a single timer for its head do. A stream is woken only if
    that response is still its newest of the type and still unanswered: waking every
    stream pushed to, answer or not, cost a sender pass per proxy a few seconds after
    each push."""

    def __init__(self) -> None:
        self._queue: deque[tuple[float, asyncio.Event, TypeState, str]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, at: float, event: asyncio.Event, state: TypeState, nonce: str) -> None:
        self._queue.append((at, event, state, nonce))
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._queue[0][0] - time.monotonic()
        self._timer = loop.call_at(loop.time() + max(delay, 0.0), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = time.monotonic()
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, event, state, nonce = queue.popleft()
            if state.nonce == nonce and not state.answered:
                event.set()
        if queue:
            self._arm()
