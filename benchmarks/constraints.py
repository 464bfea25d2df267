"""Envoy constraint checking (translate/constraints/) over the benchmark mesh: the time
`constraints.check` takes per resource type, on exactly what the push loop checks
(translate/guard.py `checked`): each service's clusters and load assignments, each
service port's routes, the probe's listeners. Route configurations of one namespace
(what a whole-config check would see) are timed too, outside the total.

    python -m benchmarks.constraints [--services 1000 --endpoints 10 --repeats 5]
        [--reference] [--warm] [--profile]

The first check of a type builds its plan and compiles its walker; that is timed apart
("warm-up") and every figure after it is over `--repeats` runs on the same messages:
wall-clock median (min-max) and the median CPU time of the process (steadier on a shared
machine). `--reference` times `check_reference` instead: the interpreted walker over the
same plans, which is what `check` was before it was compiled (the "before" figures).
Each repeat starts with empty memos (constraints.reset_memos), as after a restart;
`--warm` keeps them, as successive pushes of a mostly unchanged mesh do.
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
from controlplane.translate import constraints, service_assignments, service_clusters
from controlplane.translate.listeners import build_listeners
from controlplane.translate.routes import route_bases, route_configs
from controlplane.translation import PROBE

TARGET_MS = 60


def resources(services: int, endpoints: int) -> dict[str, list[Any]]:
    """The benchmark mesh translated, grouped as the figures report them."""
    sc = M.Scenario(services, endpoints)
    objs = [parse_object(raw) for raw in M.objects(sc)]
    mesh = build_mesh({key_of(o): o for o in objs})
    clusters: list[Any] = []
    assignments: list[Any] = []
    for service in mesh.services.values():
        clusters.extend(service_clusters(mesh, service))
        assignments.extend(service_assignments(mesh, service))
    routes: list[Any] = []

    def capture(service: Any, port: Any, number: int, build: Callable[[], list[Any]]
                ) -> list[Any]:
        built = build()
        routes.extend(built)  # what the push loop's guard checks, one unit per port
        return built

    bases = route_bases(mesh, capture)
    return {"clusters": clusters, "load assignments": assignments, "routes": routes,
            "listeners": build_listeners(mesh, PROBE.bind_ip),
            "route configurations (1 namespace)": route_configs(bases, sc.namespace(0))}


def check_all(messages: list[Any], check: Callable[[Any], list[Any]] = constraints.check
              ) -> int:
    found = 0
    for m in messages:
        found += len(check(m))
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--reference", action="store_true",
                   help="time the reference (interpreted) walker instead")
    p.add_argument("--warm", action="store_true",
                   help="keep the memos between repeats (as successive pushes do)")
    p.add_argument("--profile", action="store_true", help="cProfile one full check")
    a = p.parse_args(argv)
    log.configure("warning")
    check = constraints.check_reference if a.reference else constraints.check
    groups = resources(a.services, a.endpoints)
    t = time.perf_counter()
    for messages in groups.values():
        if check_all(messages[:1], check):
            raise SystemExit("the benchmark mesh has violations: fix the checker first")
    warm = time.perf_counter() - t
    if a.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        for name, messages in groups.items():
            if not name.startswith("route configurations"):
                check_all(messages, check)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    medians: dict[str, float] = {}
    cpus: dict[str, float] = {}
    print(f"{'check' if not a.reference else 'check_reference'}: {a.services} services x "
          f"{a.endpoints} endpoints, {a.repeats} repeats; wall median (min-max), CPU median")
    for name, messages in groups.items():
        times, cpu = [], []
        for _ in range(a.repeats):
            if not a.warm:
                constraints.reset_memos()  # each repeat as the first check after a restart
            t, c = time.perf_counter(), time.process_time()
            found = check_all(messages, check)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            if found:
                raise SystemExit(f"{name}: {found} violations in the benchmark mesh")
        medians[name] = statistics.median(times)
        cpus[name] = statistics.median(cpu)
        print(f"  {name:<36} {len(messages):6} msgs {medians[name] * 1000:7.1f} ms  "
              f"({min(times) * 1000:.1f}-{max(times) * 1000:.1f})  CPU {cpus[name] * 1000:.1f} ms")
    pushed = [k for k in medians if not k.startswith("route configurations")]
    total = sum(medians[k] for k in pushed)
    cpu_total = sum(cpus[k] for k in pushed)
    # Judged on CPU time: wall time on the shared machine also counts other processes.
    verdict = "met" if cpu_total * 1000 <= TARGET_MS else "MISSED"
    print(f"  {'total (what the push loop checks)':<48} {total * 1000:7.1f} ms  "
          f"CPU {cpu_total * 1000:.1f} ms  target <= {TARGET_MS} ms CPU: {verdict}")
    print(f"  warm-up (first message of each type: plans, compiling) {warm * 1000:.1f} ms")
    print(f"reproduce: .venv/bin/python -m benchmarks.constraints --services {a.services} "
          f"--endpoints {a.endpoints} --repeats {a.repeats}"
          f"{' --reference' if a.reference else ''}{' --warm' if a.warm else ''}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
