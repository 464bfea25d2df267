"""How long the event loop is kept from answering while the file source loads a large
file: a task asks to wake every 10 ms and records how late each wake-up is, from the
source's start until its objects are in the store (tests/test_files.py checks that the
loop keeps ticking at all; this measures how late it gets).

    python -m benchmarks.loop_stall [--pods 10000 --repeats 3]

The parse runs in a thread; what is left on the loop is writing the file's objects into
the store in one go (one go so that no half file is ever published) and the GIL
hand-offs with the parsing thread (5 ms each). Parsed on the loop, 10,000 Pods stalled it
for over 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import pct
from controlplane import log
from controlplane.sources.files import FileSource
from controlplane.store import Store
from tests.manifests import pods_yaml

TICK = 0.01


async def load_once(directory: Path, count: int) -> tuple[float, list[float]]:
    """(seconds until the store holds the file's objects, each tick's lateness)."""
    store = Store()
    source = FileSource(store, directory)
    late: list[float] = []
    ticked = asyncio.Event()

    async def tick() -> None:
        while True:
            due = time.monotonic() + TICK
            await asyncio.sleep(TICK)
            late.append(time.monotonic() - due)
            ticked.set()

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(TICK * 2)  # ticking before the source starts
    started = time.monotonic()
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(store.wait_synced(), 600)
        loaded = time.monotonic() - started
        ticked.clear()  # the tick pending during the store write counts too
        await asyncio.wait_for(ticked.wait(), 10)
    finally:
        task.cancel()
        ticker.cancel()
    if len(store.objects("Pod")) != count:
        raise SystemExit(f"loaded {len(store.objects('Pod'))} Pods, expected {count}")
    return loaded, late


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    log.configure("warning")
    with tempfile.TemporaryDirectory(prefix="loop-stall-") as tmp:
        path = Path(tmp) / "pods.yaml"
        path.write_text(pods_yaml(a.pods))
        size_mb = path.stat().st_size / 1e6
        runs = [asyncio.run(load_once(Path(tmp), a.pods)) for _ in range(a.repeats)]
    print(f"{a.pods} Pods in one file ({size_mb:.1f} MB), a {TICK * 1000:.0f} ms tick, "
          f"{a.repeats} repeats: median (min-max)")

    def row(name: str, xs: list[float], unit: float = 1000, digits: int = 1) -> None:
        print(f"  {name:<30} {statistics.median(xs) * unit:8.{digits}f}  "
              f"({min(xs) * unit:.{digits}f}-{max(xs) * unit:.{digits}f})")
    row("file loaded, s", [r[0] for r in runs], unit=1, digits=2)
    row("ticks while loading", [float(len(r[1])) for r in runs], unit=1, digits=0)
    row("tick lateness p50, ms", [pct(r[1], 50) for r in runs])
    row("tick lateness p99, ms", [pct(r[1], 99) for r in runs])
    row("tick lateness max, ms", [max(r[1]) for r in runs])
    print(f"reproduce: .venv/bin/python -m benchmarks.loop_stall --pods {a.pods} "
          f"--repeats {a.repeats}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
