"""The wired control plane's lifecycle."""

from __future__ import annotations

import asyncio
import time

import structlog

from controlplane.app import App, Settings


class StubbornSource:
    """A source that ignores the first cancellation and ends a while after it."""

    async def run(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(1.5)


def test_stop_is_bounded_when_a_source_will_not_end() -> None:
    async def main() -> None:
        app = App(Settings(xds_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                           http_address="127.0.0.1:0"))
        app.sources.append(StubbornSource())
        await app.start()
        await asyncio.sleep(0.05)
        t = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            await app.stop(phase_timeout=0.3)
        assert time.monotonic() - t < 1.2
        assert [e["phase"] for e in logs if e["event"] == "stop_phase_timed_out"] == [
            "sources_and_push"]

    asyncio.run(main())
