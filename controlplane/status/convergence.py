"""Convergence: from a change seen by a source to every affected proxy answering it.

A generation has converged when every connected stream finished a push pass at that
generation or later, and none still waits for the answer to a push of that generation
or an older one. A proxy that disconnects stops counting; a NACK is an answer (the
NACK counter and the sync state say the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controlplane.status.sync import ProxySync, SyncRegistry


class Convergence:
    def __init__(self, registry: SyncRegistry, observe: Callable[[float], None]) -> None:
        self.registry = registry
        self.observe = observe
        self.pending: dict[int, float] = {}  # generation -> when its first change was seen
        registry.listeners.append(self._on_event)

    def published(self, generation: int, change_seen: float | None) -> None:
        if change_seen is not None:
            self.pending[generation] = change_seen
            self.check()

    def _on_event(self, event: str, proxy: ProxySync, type_url: str) -> None:
        if self.pending and event in ("acked", "nacked", "pass_done", "disconnected"):
            self.check()

    def _converged(self, generation: int) -> bool:
        for proxy in self.registry.proxies.values():
            if proxy.complete_generation < generation:
                return False
            if any(t.sent_generation <= generation and not t.answered
                   for t in proxy.types.values()):
                return False
        return True

    def check(self) -> None:
        now = time.monotonic()
        for generation in sorted(self.pending):
            if not self._converged(generation):
                break
            self.observe(now - self.pending.pop(generation))
