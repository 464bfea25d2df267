"""Our control plane in a process of its own, fed the benchmark mesh through its Store.

Started by benchmarks/run.py; prints one JSON line when the first snapshot is published
(`{"ready": true, "port": P, "pid": N}`), then answers commands on stdin, one JSON
object per line:

    {"cmd": "change", "kind": "endpoint"|"vs", "gen": g}
        -> {"t": CLOCK_MONOTONIC of the store write}
    {"cmd": "publishes"} -> every publish so far: generation, change seen, start, took
    {"cmd": "quit"}

It wires `controlplane.app.App` exactly as `controlplane serve` does (xDS, admin gRPC,
HTTP, push loop with the default debounce), on 127.0.0.1 with ephemeral ports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks import mesh as M
from benchmarks.control import commands, reply
from benchmarks.run import rss_mb
from controlplane import log
from controlplane.app import App, Settings
from controlplane.model.parse import parse_object


def trace_memory(path: Path, app: App, every: float = 0.5, step_mb: float = 50.0) -> None:
    """Python's own allocations (tracemalloc) beside the process's RSS, written to `path`
    each time RSS sets a new high by `step_mb`: whether a peak is Python objects (and
    which lines made them) or memory Python does not see (gRPC core, the allocator)."""
    def sample() -> None:
        high = 0.0
        with path.open("w") as out:
            while True:
                time.sleep(every)
                now = rss_mb(os.getpid())
                traced, _ = tracemalloc.get_traced_memory()
                out.write(f"t={time.monotonic():.1f} rss={now:.0f}MB "
                          f"traced={traced / 2**20:.0f}MB streams={len(app.ads.streams)}\n")
                if now < high + step_mb:
                    out.flush()
                    continue
                high = now
                stats = tracemalloc.take_snapshot().statistics("lineno")
                for stat in stats[:15]:
                    out.write(f"    {stat.size / 2**20:8.1f} MB {stat.count:9d}  "
                              f"{stat.traceback[0]}\n")
                out.flush()

    tracemalloc.start(1)
    threading.Thread(target=sample, name="trace-memory", daemon=True).start()


async def serve(a: argparse.Namespace) -> None:
    sc = M.Scenario(a.services, a.endpoints)
    app = App(Settings(xds_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                       http_address="127.0.0.1:0", debounce_quiet=a.debounce_quiet,
                       debounce_max=a.debounce_max, large_push_limit=a.large_push_limit))
    publishes: list[dict[str, Any]] = []
    app.push.on_publish.append(
        lambda snap, mesh, seen, started, took: publishes.append(
            {"generation": snap.generation, "change_seen": seen, "started": started,
             "took": took}))
    if a.trace_memory:
        trace_memory(Path(a.trace_memory), app)
    for raw in M.objects(sc):
        app.store.apply(parse_object(raw))
    await app.start()
    await app.cache.ready.wait()

    reply({"ready": True, "port": app.xds_port, "pid": os.getpid()})
    try:
        async for cmd in commands():
            if cmd["cmd"] == "change":
                change = M.make_change(sc, cmd["kind"], cmd["gen"])
                objs = [parse_object(raw) for raw in change.objects]
                t = time.monotonic()  # CLOCK_MONOTONIC, as the store's own stamp
                for obj in objs:
                    app.store.apply(obj)
                reply({"t": app.store.first_unseen_change or t})
            elif cmd["cmd"] == "publishes":
                reply({"publishes": publishes})
            else:
                reply({"error": f"unknown command {cmd['cmd']!r}"})
    finally:
        await app.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--debounce-quiet", type=float, default=0.1)
    p.add_argument("--debounce-max", type=float, default=1.0)
    p.add_argument("--log-level", default="warning")
    p.add_argument("--large-push-limit", type=int, default=Settings.large_push_limit)
    p.add_argument("--trace-memory", metavar="PATH",
                   help="write RSS beside tracemalloc's top allocations to PATH "
                        "(slows the server: for finding a peak, not for timing)")
    a = p.parse_args(argv)
    log.configure(a.log_level)
    asyncio.run(serve(a))


if __name__ == "__main__":
    main()
