"""`analyze` on the benchmark mesh (benchmarks/mesh.py): how long the checks take over a
whole mesh, per check, so it is known whether serve may run them on the publish path.

    python -m benchmarks.analyze [--services 1000 --vs-every 1] [--repeats 5]

`--vs-every 1` gives every service a VirtualService (1,000 services, 1,000
VirtualServices). Times are the median of the repeats, in milliseconds: the Mesh build
(which serve already has, published) is reported apart from the checks. Last, as serve
runs it (admin/analysis.py: in a worker thread), how late an event loop's 10 ms ticks
get meanwhile: what the xDS streams feel of it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from benchmarks import mesh as M
from controlplane import log
from controlplane.analysis import analyze
from controlplane.analysis.checks import CHECKS, shadowed
from controlplane.analysis.inputs import Inputs
from controlplane.model.mesh import build_mesh
from controlplane.model.parse import key_of, parse_object


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.1f} ms"


async def _lateness(inputs: Inputs, tick: float = 0.01) -> list[float]:
    """How late each 10 ms tick of the loop is while analyze runs in a worker thread."""
    late: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(tick)
            late.append(time.perf_counter() - start - tick)

    task = asyncio.create_task(ticker())
    await asyncio.to_thread(analyze, inputs)
    done.set()
    await task
    return late


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--vs-every", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    log.configure("warning", "console")
    sc = M.Scenario(services=args.services, vs_every=args.vs_every)
    objects = {key_of(o): o for o in (parse_object(raw) for raw in M.objects(sc))}
    builds: list[float] = []
    runs: list[float] = []
    warm: list[float] = []
    per_check: dict[str, list[float]] = {}
    found = 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        mesh = build_mesh(objects)
        builds.append(time.perf_counter() - start)
        inputs = Inputs(mesh, objects)
        shadowed.forget()  # cold: every VirtualService decided anew
        start = time.perf_counter()
        found = len(analyze(inputs))
        runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        analyze(Inputs(mesh, objects))  # warm: what a change that leaves them costs
        warm.append(time.perf_counter() - start)
        shadowed.forget()
        for check in CHECKS:
            start = time.perf_counter()
            list(check(inputs))
            per_check.setdefault(f"{check.__module__.rsplit('.', 1)[-1]}.{check.__name__}",
                                 []).append(time.perf_counter() - start)
    vses = sum(1 for k in objects if k.kind == "VirtualService")
    print(f"analyze: {args.services} services, {vses} VirtualServices, {len(objects)} "
          f"objects, {found} findings (median of {args.repeats})")
    print(f"  build_mesh          {_ms(builds)}   (serve has it already: store.published)")
    print(f"  analyze (all)       {_ms(runs)}   (cold: no route decision memoized)")
    print(f"  analyze (again)     {_ms(warm)}   (unchanged VirtualServices' decisions "
          "reused)")
    for name, samples in sorted(per_check.items(), key=lambda i: -statistics.median(i[1])):
        print(f"    {name:<28}{_ms(samples)}")
    late = asyncio.run(_lateness(Inputs(build_mesh(objects), objects)))
    print(f"  loop ticks during analyze in a thread: {len(late)}, late by median "
          f"{statistics.median(late) * 1000:.1f} ms, max {max(late) * 1000:.1f} ms")
    print(f"reproduce: python -m benchmarks.analyze --services {args.services} "
          f"--vs-every {args.vs_every} --repeats {args.repeats}")


if __name__ == "__main__":
    sys.exit(main())
