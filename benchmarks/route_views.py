"""Route configuration per proxy: how many distinct route configuration sets a fleet
needs, how many bytes each proxy receives, and how many the control plane builds, on
the benchmark mesh (benchmarks/mesh.py), for

- `plain`: the mesh as it is, no rule that tells proxies of a namespace apart (the
  figures must not move when per-proxy views are added: one set per namespace);
- `scoped`: the same mesh plus client-selecting rules and scoping: every 5th
  VirtualService gains a sourceLabels match (for the clients of one service) and a
  sourceNamespace match; every 2nd VirtualService is exported to its own namespace only
  (exportTo "."); every 10th Service is exported to its namespace only (the
  networking.istio.io/exportTo annotation); half the namespaces have a Sidecar importing
  their own namespace and ns-0, and one workload per namespace a Sidecar of its own.

The fleet: `--proxies` sidecars spread over the namespaces, each labelled like the pod
of one of its namespace's services (app, version), as a real fleet is.

    python -m benchmarks.route_views [--services 1000 --proxies 1000] [--scenario plain]

"bytes per proxy" is what a proxy receives in RDS (all its route configurations),
averaged over the fleet; "bytes built" counts each distinct configuration once (what
the control plane serializes and holds); "distinct" counts distinct route
configuration sets (group keys) and distinct resources (by content). Runs on any
checkout whose MeshTranslation groups routes per proxy (PYTHONPATH=<checkout>).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from typing import Any

from benchmarks import mesh as M
from controlplane import log
from controlplane.model.mesh import build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.model.proxy import ProxyView
from controlplane.translation import MeshTranslation
from controlplane.xds import types


def scoped_objects(sc: M.Scenario) -> list[dict[str, Any]]:
    out = []
    for raw in M.objects(sc):
        kind, name = raw["kind"], raw["metadata"]["name"]
        i = int(name.split("-")[1]) if name.startswith("svc-") and kind in (
            "Service", "VirtualService") else -1
        if kind == "VirtualService":
            if (i // sc.vs_every) % 5 == 0:
                client = sc.name((i + 1) % sc.services)
                raw["spec"]["http"].insert(0, {
                    "match": [{"sourceLabels": {"app": client}}],
                    "route": [{"destination": {"host": name, "subset": "v2"}}]})
                raw["spec"]["http"].insert(1, {
                    "match": [{"sourceNamespace": sc.namespace(i + 1)}],
                    "route": [{"destination": {"host": name, "subset": "v1"}}]})
            if (i // sc.vs_every) % 2 == 0:
                raw["spec"]["exportTo"] = ["."]
        if kind == "Service" and i % 10 == 5:
            raw["metadata"]["annotations"] = {"networking.istio.io/exportTo": "."}
        out.append(raw)
    for n in range(0, sc.namespaces, 2):
        ns = f"ns-{n}"
        out.append({"apiVersion": M.ISTIO, "kind": "Sidecar",
                    "metadata": {"name": "default", "namespace": ns},
                    "spec": {"egress": [{"hosts": ["./*", "ns-0/*"]}]}})
    for n in range(sc.namespaces):
        ns = f"ns-{n}"
        first = sc.name(n)  # the namespace's first service: its pods get a Sidecar
        out.append({"apiVersion": M.ISTIO, "kind": "Sidecar",
                    "metadata": {"name": "narrow", "namespace": ns},
                    "spec": {"workloadSelector": {"labels": {"app": first}},
                             "egress": [{"hosts": ["./*"]}]}})
    return out


def fleet(sc: M.Scenario, proxies: int) -> list[ProxyView]:
    out = []
    for k in range(proxies):
        i = k % sc.services  # the service whose pod this sidecar sits beside
        out.append(ProxyView(
            node_id=f"sidecar-{k}", namespace=sc.namespace(i),
            labels=frozenset({("app", sc.name(i)), ("version", f"v{1 + k % 2}")})))
    return out


def measure(objects: list[dict[str, Any]], proxies: list[ProxyView]) -> dict[str, Any]:
    start = time.perf_counter()
    mesh = build_mesh({key_of(o): o for o in map(parse_object, objects)})
    translation = MeshTranslation(mesh)
    keyed = time.perf_counter()
    keys = [translation.group_key(types.ROUTE, p) for p in proxies]
    keying = time.perf_counter() - keyed
    # What every later push pays per proxy: the views are memoized by (namespace, labels).
    again = time.perf_counter()
    for p in proxies:
        translation.group_key(types.ROUTE, p)
    rekeying = time.perf_counter() - again
    per_key = {key: translation.messages(types.ROUTE, key) for key in dict.fromkeys(keys)}
    elapsed = time.perf_counter() - start
    sizes = {key: sum(len(r.body) for r in rs) for key, rs in per_key.items()}
    distinct = {hashlib.sha256(r.body).digest(): len(r.body)
                for rs in per_key.values() for r in rs}
    per_proxy = [sizes[k] for k in keys]
    return {
        "route configuration sets (group keys)": len(per_key),
        "distinct route configurations": len(distinct),
        "bytes per proxy, mean": round(statistics.fmean(per_proxy)),
        "bytes per proxy, min-max": f"{min(per_proxy)}-{max(per_proxy)}",
        "bytes built (distinct)": sum(distinct.values()),
        "bytes sent to the fleet": sum(per_proxy),
        "build s (mesh, translation, all sets)": round(elapsed, 2),
        "group keys, first / memoized, us per proxy":
            f"{keying / len(proxies) * 1e6:.1f} / {rekeying / len(proxies) * 1e6:.1f}",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--proxies", type=int, default=1000)
    p.add_argument("--scenario", choices=["plain", "scoped", "both"], default="both")
    args = p.parse_args(argv)
    log.configure("warning", "console")
    sc = M.Scenario(services=args.services)
    proxies = fleet(sc, args.proxies)
    scenarios = ["plain", "scoped"] if args.scenario == "both" else [args.scenario]
    for name in scenarios:
        objects = M.objects(sc) if name == "plain" else scoped_objects(sc)
        print(f"\n{name}: {args.services} services, {sc.namespaces} namespaces, "
              f"{args.proxies} proxies")
        for figure, value in measure(objects, proxies).items():
            print(f"  {figure:46s} {value}")
    print(f"\nreproduce: python -m benchmarks.route_views --services {args.services} "
          f"--proxies {args.proxies} --scenario {args.scenario}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
