"""An asyncio event loop on a virtual clock, for rules about time (the push loop's
debounce): the clock stands still while anything can run and, once every task waits,
jumps straight to the next timer. Sleeps and timeouts then end at exact instants, however
loaded the machine, and take no real time. No threads: their wake-ups would come at
whatever virtual instant the loop has reached."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Polls the loop's own descriptors (its self-pipe) without blocking; where a real
    selector would block for `timeout`, moves the clock on by it instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("every task waits and no timer is set: the run would hang")
        self._loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a virtual clock starting at 0."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
