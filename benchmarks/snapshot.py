"""The control plane's own snapshots of the benchmark mesh, dumped for the floor and the
go-control-plane peer so all three serve byte-identical resources.

A dump directory holds one subdirectory per state (0 = the base mesh, then one per
change, cumulative), each with `<TYPE>.<group>.bin` (varint-length-prefixed serialized
resources, as protodelim reads them) and `manifest.json` (type -> group -> version).
Clusters, endpoints and listeners have one group (`all`; proxies send no INSTANCE_IPS,
so every listener binds 0.0.0.0); route configurations one per namespace.

    python -m benchmarks.snapshot --out DIR [--services 1000 --endpoints 10 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import mesh as M
from controlplane.model.parse import parse_object
from controlplane.model.proxy import ProxyView
from controlplane.pipeline import PushLoop
from controlplane.store import Store
from controlplane.xds import types, wire
from controlplane.xds.cache import Resource, SnapshotCache

SHARED_GROUP = "all"


def change_plan(repeats: int) -> list[tuple[str, int]]:
    """The changes a run makes, in order: state k (k >= 1) is the mesh after plan[k-1]."""
    return ([("endpoint", g) for g in range(1, repeats + 1)]
            + [("vs", g) for g in range(1, repeats + 1)])


def groups(sc: M.Scenario) -> dict[str, list[str]]:
    return {"CDS": [SHARED_GROUP], "EDS": [SHARED_GROUP], "LDS": [SHARED_GROUP],
            "RDS": sorted({sc.namespace(i) for i in range(sc.namespaces)})}


def proxy_for(group: str) -> ProxyView:
    return ProxyView(node_id="bench-dump",
                     namespace=group if group != SHARED_GROUP else "default")


State = dict[str, dict[str, tuple[str, list[Resource]]]]  # type -> group -> (version, res)


def states(sc: M.Scenario, plan: list[tuple[str, int]]) -> Iterator[State]:
    store = Store()
    cache = SnapshotCache()
    loop = PushLoop(store, cache)
    for raw in M.objects(sc):
        store.apply(parse_object(raw))
    for step in [None, *plan]:
        if step is not None:
            for raw in M.make_change(sc, *step).objects:
                store.apply(parse_object(raw))
        if not loop.publish():
            raise RuntimeError(f"snapshot rejected at {step}")
        snap = cache.snapshot
        assert snap is not None
        out: State = {}
        for short, gs in groups(sc).items():
            t = types.BY_SHORT[short]
            out[short] = {}
            for g in gs:
                res = snap.resources(t, proxy_for(g))
                out[short][g] = (res.version, [res.items[n] for n in sorted(res.items)])
        yield out


def dump(out_dir: Path, sc: M.Scenario, plan: list[tuple[str, int]]) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for k, state in enumerate(states(sc, plan)):
        d = out_dir / str(k)
        d.mkdir(exist_ok=True)
        manifest: dict[str, dict[str, str]] = {}
        for short, by_group in state.items():
            manifest[short] = {}
            for g, (version, resources) in by_group.items():
                manifest[short][g] = version
                with open(d / f"{short}.{g}.bin", "wb") as f:
                    for r in resources:
                        f.write(wire.varint(len(r.body)))
                        f.write(r.body)
        (d / "manifest.json").write_text(json.dumps(manifest))
        n = k + 1
    (out_dir / "states.json").write_text(json.dumps({"states": n, "plan": plan}))
    return n


def _read_delimited(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, i = [], 0
    while i < len(data):
        size, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            size |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append(data[i:i + size])
        i += size
    return out


def load(dump_dir: Path) -> list[dict[str, dict[str, tuple[str, dict[str, bytes]]]]]:
    """[state] -> type -> group -> (version, {name: body})."""
    meta = json.loads((dump_dir / "states.json").read_text())
    out = []
    for k in range(meta["states"]):
        d = dump_dir / str(k)
        manifest = json.loads((d / "manifest.json").read_text())
        state: dict[str, dict[str, tuple[str, dict[str, bytes]]]] = {}
        for short, by_group in manifest.items():
            t = types.BY_SHORT[short]
            state[short] = {}
            for g, version in by_group.items():
                bodies = _read_delimited(d / f"{short}.{g}.bin")
                named = {types.resource_name(t, types.decode(t, b)): b for b in bodies}
                state[short][g] = (version, named)
        out.append(state)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    t0 = time.monotonic()
    n = dump(a.out, M.Scenario(a.services, a.endpoints), change_plan(a.repeats))
    print(json.dumps({"states": n, "seconds": round(time.monotonic() - t0, 2)}))


def structlog_quiet() -> None:
    from controlplane import log
    log.configure("warning")


if __name__ == "__main__":
    structlog_quiet()
    main()

