"""VirtualService delegation and route names, through a real Envoy: a root
VirtualService hands a prefix to a delegate in another namespace, and requests go where
the delegate says; the routes carry their HTTPRoute names in Envoy's config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Client, ControlPlane, get, wait_until, write_yaml
from tests.manifests import ISTIO, pod, service, virtual_service

pytestmark = pytest.mark.e2e

PORT = 19481
TARGET = 18081


def _route_names(dump: dict[str, Any]) -> set[str]:
    names = set()
    for config in dump["configs"]:
        for rc in config.get("dynamic_route_configs", []):
            for vh in rc["route_config"].get("virtual_hosts", []):
                names.update(r.get("name", "") for r in vh.get("routes", []))
    return names


def test_a_root_delegates_a_prefix_to_a_virtual_service_in_another_namespace(
        file_cp: ControlPlane, config_dir: Path, ip: Any, upstream: Any, envoy: Any) -> None:
    ips = {name: ip() for name in ("web-1", "api-1", "api-v2-1")}
    docs = [service("web", PORT, target=TARGET), service("api", PORT, ns="team", target=TARGET),
            service("api-v2", PORT, ns="team", target=TARGET)]
    for name, addr in ips.items():
        app = name.rsplit("-", 1)[0]
        ns = "default" if app == "web" else "team"
        upstream(addr, TARGET, app, name)
        docs.append(pod(name, addr, {"app": app}, ns=ns))
    write_yaml(config_dir / "mesh.yaml", *docs)
    sidecar = ip()
    proxy = envoy(f"delegate-{sidecar}", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: get(sidecar, PORT, "web")[0] == 200, 10, what="web answers")

    write_yaml(config_dir / "routes.yaml",
               virtual_service("web", ["web"], [
                   {"name": "api", "match": [{"uri": {"prefix": "/api"}}],
                    "delegate": {"name": "api-routes", "namespace": "team"}},
                   {"name": "rest", "route": [{"destination": {"host": "web"}}]}]),
               {"apiVersion": ISTIO, "kind": "VirtualService",
                "metadata": {"name": "api-routes", "namespace": "team"},
                "spec": {"http": [
                    # Short hosts are the delegate's namespace's services.
                    {"name": "v2", "match": [{"name": "v2", "uri": {"prefix": "/api/v2"}}],
                     "route": [{"destination": {"host": "api-v2"}}]},
                    {"name": "v1", "route": [{"destination": {"host": "api"}}]}]}})
    wait_until(lambda: "api-v2.v2" in _route_names(proxy.config_dump()), 10,
               what="the merged routes reached Envoy")

    client = Client(sidecar, PORT)
    assert client.tally("web", 20, "pod", path="/api/v2/items") == {"api-v2-1": 20}
    assert client.tally("web", 20, "pod", path="/api/items") == {"api-1": 20}
    assert client.tally("web", 20, "pod", path="/other") == {"web-1": 20}
    client.close()
    # Envoy's route names: "<root>-<delegate>" plus ".<match>" where the match is named.
    names = _route_names(proxy.config_dump())
    assert {"api-v2.v2", "api-v1", "rest"} <= names, json.dumps(sorted(names))
