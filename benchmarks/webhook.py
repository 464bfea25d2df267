"""The admission webhook's cost per review, on the benchmark mesh (benchmarks/mesh.py):
what one AdmissionReview of a changed VirtualService costs the event loop (it runs there,
between pushes), split into the what-if mesh (`Store.what_if`: the store's index with
the object overlaid, built from the published Mesh) and the whole answer (validation,
the checks in `analysis.checks.CHECKS`, the warnings), against the naive way (a Mesh
built from a copy of every object).

    python -m benchmarks.webhook [--services 1000] [--repeats 20]

Runs on any checkout with the webhook (PYTHONPATH=<checkout>); the figure for "answer"
grows with the checks registered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks import mesh as M
from controlplane import log
from controlplane.analysis import checks
from controlplane.model.mesh import MeshIndex, build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.store import Store
from controlplane.webhook.admission import Admission
from controlplane.webhook.review import parse
from controlplane.webhook.server import CertificateFiles, WebhookServer


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median and max, in ms."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


async def main(services: int, repeats: int) -> None:
    sc = M.Scenario(services=services)
    objects = [parse_object(raw) for raw in M.objects(sc)]
    store = Store()
    for obj in objects:
        store.apply(obj)
    store.commit(store.build())
    raw = M.virtual_service(sc, sc.changed_service, gen=1)
    candidate = parse_object(raw)
    key = key_of(candidate)
    server = WebhookServer(Admission(store), CertificateFiles("/none", "/none"))
    group, _, version = raw["apiVersion"].rpartition("/")
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": "bench", "operation": "UPDATE",
                                   "kind": {"group": group, "version": version,
                                            "kind": raw["kind"]},
                                   "namespace": key.namespace, "name": key.name,
                                   "object": raw}}).encode()
    everything = {key_of(o): o for o in objects}
    rows = [
        ("what-if mesh (Store.what_if)", lambda: store.what_if(key, candidate)),
        ("on the event loop (parse, validate, what-if, copy)",
         lambda: server.admission.validate(parse(body))),
        ("whole answer (POST body in, JSON out)", lambda: server.review(body)),
        ("naive: a Mesh from a copy of every object",
         lambda: build_mesh(MeshIndex.of({**everything, key: candidate}))),
    ]
    print(f"{services} services, {len(objects)} objects, {len(checks.CHECKS)} checks "
          f"registered; one VirtualService reviewed, {repeats} times")
    for label, fn in rows:
        median, worst = timed(fn, repeats if not label.startswith("naive") else 3)
        print(f"  {label:45} median {median:7.1f} ms   max {worst:7.1f} ms")
    print(f"reproduce: python -m benchmarks.webhook --services {services} "
          f"--repeats {repeats}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    log.configure("warning")
    asyncio.run(main(args.services, args.repeats))
