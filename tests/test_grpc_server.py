"""The gRPC server's own limits: a burst of streams arriving while the event loop is busy
(thousands of proxies reconnecting after a restart) must wait, not be refused."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc

from controlplane.xds.server import start_grpc_server

SERVICE = "test.Echo"
BURST = 1500  # gRPC core's default refuses at random past 1,000 waiting


async def _echo(requests: Any, context: grpc.aio.ServicerContext) -> Any:
    async for message in requests:
        yield message


def test_a_burst_of_streams_while_the_loop_is_busy_is_queued_not_refused() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": grpc.stream_stream_rpc_method_handler(_echo)})
    server, port = asyncio.run_coroutine_threadsafe(
        start_grpc_server([handler], "127.0.0.1:0"), loop).result(10)

    async def burst() -> list[str]:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(4)]
        for ch in channels:
            await ch.channel_ready()
        # The server's loop stops picking up calls, as it does while it answers others.
        loop.call_soon_threadsafe(time.sleep, 3.0)
        await asyncio.sleep(0.1)

        async def one(i: int) -> str:
            call = channels[i % len(channels)].stream_stream(f"/{SERVICE}/Echo")()
            try:
                await call.write(b"x")
                reply = await call.read()
                await call.done_writing()
                return "ok" if reply == b"x" else f"bad reply {reply!r}"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
        try:
            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(BURST))),
                                          60)
        finally:
            for ch in channels:
                await ch.close()

    try:
        outcomes = asyncio.run(burst())
        failed = [o for o in outcomes if o != "ok"]
        assert not failed, f"{len(failed)} of {BURST} streams failed: {sorted(set(failed))}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
