"""Translation time, measured on the push loop's own path: `PushLoop.publish()` =
store.mesh() (build_mesh) -> MeshTranslation -> SnapshotCache.publish (serialize the
shared types, diff against the previous snapshot, consistency check, which also builds
the probe's listeners and routes).

    python -m benchmarks.translate [--services 1000 --endpoints 10 --repeats 7]
        [--profile endpoint|vs|full]

- full: a fresh cache and a fresh mesh view: everything translated and serialized.
- endpoint: one endpoint of one service moved (one EndpointSlice), on a warm cache.
- vs: one VirtualService changed, on a warm cache; plus building the route
  configurations of the other namespaces, which the push loop leaves to the first
  stream of each namespace that asks (they are part of the VirtualService push).
The breakdown times the stages separately (same inputs, outside publish).
`--profile` runs pyinstrument over that case and prints its call tree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import mesh as M
from controlplane import log
from controlplane.model.mesh import build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.model.proxy import ProxyView
from controlplane.pipeline import PushLoop
from controlplane.store import Store
from controlplane.translate import build_clusters, build_load_assignments
from controlplane.translation import MeshTranslation
from controlplane.xds import types
from controlplane.xds.cache import SnapshotCache


def loaded_store(objs: list[Any]) -> Store:
    store = Store()
    for obj in objs:
        store.apply(obj)
    return store


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def other_namespaces(cache: SnapshotCache, sc: M.Scenario) -> None:
    snap = cache.snapshot
    assert snap is not None
    for i in range(sc.namespaces):
        snap.resources(types.ROUTE, ProxyView(node_id="x", namespace=sc.namespace(i)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--profile", choices=["full", "endpoint", "vs"], default=None)
    a = p.parse_args(argv)
    log.configure("warning")
    sc = M.Scenario(a.services, a.endpoints)
    parse_t = time.perf_counter()
    objs = [parse_object(raw) for raw in M.objects(sc)]
    parse_t = time.perf_counter() - parse_t
    store = loaded_store(objs)

    def full() -> float:
        """A fresh store, mesh and cache, as after a restart; only publish() is timed."""
        fresh = loaded_store(objs)
        cache = SnapshotCache()
        t = time.perf_counter()
        assert PushLoop(fresh, cache).publish()
        return time.perf_counter() - t

    cache = SnapshotCache()
    loop = PushLoop(store, cache)
    assert loop.publish()
    other_namespaces(cache, sc)
    gen = iter(range(1, 1_000_000))

    def endpoint() -> None:
        for raw in M.endpoint_change(sc, next(gen)).objects:
            store.apply(parse_object(raw))
        assert loop.publish()

    def vs() -> None:
        for raw in M.vs_change(sc, next(gen)).objects:
            store.apply(parse_object(raw))
        assert loop.publish()

    def vs_all_namespaces() -> None:
        vs()
        other_namespaces(cache, sc)

    if a.profile:
        from pyinstrument import Profiler
        fn = {"full": lambda: full(), "endpoint": endpoint, "vs": vs_all_namespaces}[a.profile]
        fn()
        prof = Profiler(interval=0.0005)
        prof.start()
        for _ in range(a.repeats):
            fn()
        prof.stop()
        print(prof.output_text(unicode=False, color=False, show_all=False))
        return

    results: dict[str, list[float]] = {"full": [], "endpoint": [], "vs": [],
                                       "vs + 10 namespaces' routes": []}
    for _ in range(a.repeats):
        results["full"].append(full())
    cache = SnapshotCache()
    loop = PushLoop(store, cache)
    loop.publish()
    other_namespaces(cache, sc)
    for _ in range(a.repeats):
        results["endpoint"].append(timed(endpoint))
    for _ in range(a.repeats):
        results["vs"].append(timed(vs))
    for _ in range(a.repeats):
        results["vs + 10 namespaces' routes"].append(timed(vs_all_namespaces))

    # breakdown of one incremental publish, stage by stage
    mesh = store.mesh()
    built = [m for t in (types.CLUSTER, types.ENDPOINT)
             for m in MeshTranslation(mesh).messages(t, None)]
    stages = {
        "build_mesh (all objects, from scratch)": lambda: build_mesh(
            {key_of(o): o for o in objs}),
        "build_clusters": lambda: build_clusters(mesh),
        "build_load_assignments": lambda: build_load_assignments(mesh),
        "serialize CDS+EDS (SerializeToString only)": lambda: [
            m.SerializeToString(deterministic=True) for m in built],
    }
    breakdown = {k: statistics.median(timed(f) for _ in range(3)) for k, f in stages.items()}

    print(f"{a.services} services x {a.endpoints} endpoints "
          f"({len(store.objects())} objects, parsed in {parse_t:.2f} s), "
          f"{a.repeats} repeats, median (min-max) in ms")
    targets = {"full": 300, "endpoint": 5}
    for k, xs in results.items():
        tgt = targets.get(k)
        verdict = "" if tgt is None else (
            f"  target < {tgt} ms: {'met' if statistics.median(xs) * 1000 < tgt else 'MISSED'}")
        print(f"  {k:<28} {statistics.median(xs) * 1000:8.1f}  "
              f"({min(xs) * 1000:.1f}-{max(xs) * 1000:.1f}){verdict}")
    print("breakdown (median of 3, ms):")
    for k, v in breakdown.items():
        print(f"  {k:<42} {v * 1000:8.1f}")
    print(f"reproduce: .venv/bin/python -m benchmarks.translate --services {a.services} "
          f"--endpoints {a.endpoints} --repeats {a.repeats}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
