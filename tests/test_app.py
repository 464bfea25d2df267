"""The wired control plane's lifecycle."""

from __future__ import annotations

import asyncio

import structlog

from controlplane.app import App, Settings


class StubbornSource:
    """A source that ignores cancellation: it ends only when the test lets it."""

    def __init__(self) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()
        self.cancelled = False
        self.ended = False

    async def run(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            await self.release.wait()
        self.ended = True


def test_stop_is_bounded_when_a_source_will_not_end() -> None:
    """stop() gives the sources' phase its timeout, logs that it ran over, and returns
    with the source still running: a SIGTERMed process exits however stuck a source is."""
    async def main() -> None:
        app = App(Settings(xds_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                           http_address="127.0.0.1:0"))
        source = StubbornSource()
        app.sources.append(source)
        await app.start()
        await source.started.wait()
        with structlog.testing.capture_logs() as logs:
            # The deadline only turns a stop that waits for the source into a failure
            # rather than a hang; the source ends only when released below.
            await asyncio.wait_for(app.stop(phase_timeout=0.3), 30)
        assert source.cancelled and not source.ended
        assert [e["phase"] for e in logs if e["event"] == "stop_phase_timed_out"] == [
            "sources_and_push"]
        source.release.set()  # let it end before the loop closes
        [task] = [t for t in app.tasks if t.get_name() == "StubbornSource"]
        await asyncio.wait_for(task, 10)
        assert source.ended

    asyncio.run(main())
