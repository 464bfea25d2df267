"""Convergence: from a change seen by a source to every affected proxy answering it.

A generation has converged when every stream connected at its publish has finished a
push pass at that generation or later, and answered every push made since (a later
push carries the change too). A proxy that disconnects stops counting, and one that
connects later was never behind; a NACK is an answer (the NACK counter and the sync
state say the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controlplane.status.sync import ProxySync, SyncRegistry


class Convergence:
    """Each pending generation keeps the streams still to converge, and an event looks
    at its own stream only. (Scanning every proxy on every ACK until the first one
    behind made a push to N proxies cost O(N²): 1,000 proxies answer in order, so the
    scan grew with each answer.)"""

    def __init__(self, registry: SyncRegistry, observe: Callable[[float], None]) -> None:
        self.registry = registry
        self.observe = observe
        # generation -> (when its first change was seen, stream ids not converged yet),
        # in publish order, which is generation order
        self.pending: dict[int, tuple[float, set[int]]] = {}
        registry.listeners.append(self._on_event)

    def published(self, generation: int, change_seen: float | None) -> None:
        if change_seen is None:
            return
        behind = {sid for sid, proxy in self.registry.proxies.items()
                  if not self.converged(proxy, generation)}
        self.pending[generation] = (change_seen, behind)
        self._observe_converged()

    def _on_event(self, event: str, proxy: ProxySync, type_url: str) -> None:
        if not self.pending or event not in ("acked", "nacked", "protocol_error", "pass_done",
                                             "disconnected"):
            return
        sid = proxy.stream_id
        for generation, (_, behind) in self.pending.items():
            if sid in behind and (event == "disconnected"
                                  or self.converged(proxy, generation)):
                behind.discard(sid)
        self._observe_converged()

    @staticmethod
    def converged(proxy: ProxySync, generation: int) -> bool:
        """Whether the proxy holds what `generation` changed for it: a pass at it or
        later, and answers to every push made since. (A push made before it, still
        unanswered, is the older generation's business.)"""
        if proxy.complete_generation < generation:
            return False
        return not any(t.sent_generation >= generation and not t.answered
                       for t in proxy.types.values())

    def _observe_converged(self) -> None:
        now = time.monotonic()
        while self.pending:
            generation = next(iter(self.pending))
            seen, behind = self.pending[generation]
            if behind:
                return
            del self.pending[generation]
            self.observe(now - seen)
