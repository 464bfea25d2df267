"""The push loop's debounce on its own: after a change, push once changes have been quiet
for `quiet` seconds, and at the latest `max_delay` seconds after the first change of the
burst. On a virtual clock (tests/virtual_time.py): every instant below is exact and
repeatable, whatever else the machine is doing."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controlplane.model.parse import parse_object
from controlplane.pipeline import PushLoop, debounce
from controlplane.store import Store
from controlplane.xds.cache import SnapshotCache
from tests.manifests import service
from tests.virtual_time import run

QUIET, MAX = 0.1, 1.0  # `controlplane serve`'s defaults


def pushes(changes: list[float], until: float, quiet: float = QUIET,
           max_delay: float = MAX) -> list[float]:
    """The instants the push loop's wait (`debounce` after each first change) ends, for
    changes made at these instants."""
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        for t in changes:
            loop.call_at(t, changed.set)
        ends: list[float] = []

        async def push_loop() -> None:
            while True:
                await changed.wait()
                await debounce(changed, quiet, max_delay)
                ends.append(loop.time())

        task = asyncio.create_task(push_loop())
        await asyncio.sleep(until)
        await stop(task)
        return ends
    return run(main())


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a loop that runs forever; anything it raised before is raised here."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def close(xs: list[float]) -> object:
    return pytest.approx(xs, abs=1e-9)


def test_a_single_change_is_pushed_once_after_the_quiet_period() -> None:
    assert pushes([0.0], until=5) == close([QUIET])


def test_each_change_within_the_quiet_period_starts_it_again() -> None:
    # 0.09 s apart: never quiet for 0.1 s until the last one
    assert pushes([0.0, 0.09, 0.18, 0.27], until=5) == close([0.27 + QUIET])


def test_a_change_after_the_quiet_period_is_a_push_of_its_own() -> None:
    assert pushes([0.0, 0.15], until=5) == close([QUIET, 0.15 + QUIET])


def test_a_stream_that_never_pauses_is_pushed_every_max_delay() -> None:
    stream = [i * 0.07 for i in range(100)]  # 0 .. 6.93 s, never 0.1 s quiet
    ends = pushes(stream, until=10)
    # Each push ends the window its first change opened; the next change opens the next.
    starts = [0.0] + [min(t for t in stream if t > end) for end in ends[:-1]]
    assert ends[:-1] == close([s + MAX for s in starts[:-1]])
    assert ends[-1] == pytest.approx(stream[-1] + QUIET)  # the stream's end: quiet at last
    # so no change waits longer than max_delay for the push that carries it
    assert all(min(e for e in ends if e >= t) - t <= MAX + 1e-9 for t in stream)
    assert len(ends) == 7


def test_max_delay_shorter_than_quiet_still_bounds_the_wait() -> None:
    # 0.3 is carried by the push at 0.5; 0.7 opens the next window
    assert pushes([0.0, 0.3, 0.7], until=5, quiet=1.0, max_delay=0.5) == close([0.5, 1.2])


def test_the_push_loop_publishes_a_burst_once_after_it_is_quiet() -> None:
    """The wired loop: a Store, its PushLoop, and the changes of three objects 0.05 s
    apart make one snapshot, published QUIET after the last one, holding all three."""
    async def main() -> list[tuple[float, list[str]]]:
        loop = asyncio.get_running_loop()
        store = Store()
        push = PushLoop(store, SnapshotCache(), quiet=QUIET, max_delay=MAX)
        published: list[tuple[float, list[str]]] = []
        push.on_publish.append(lambda snap, mesh, *_: published.append(
            (loop.time(), sorted(s.meta.name for s in mesh.services.values()))))
        task = asyncio.create_task(push.run())
        await asyncio.sleep(1)  # the initial publish, of an empty store
        for name in ("a", "b", "c"):
            store.apply(parse_object(service(name, 80)))
            await asyncio.sleep(0.05)
        await asyncio.sleep(5)
        await stop(task)
        return published

    published = run(main())
    assert [names for _, names in published] == [[], ["a", "b", "c"]]
    assert published[0][0] == 0.0
    assert published[1][0] == pytest.approx(1.1 + QUIET)
