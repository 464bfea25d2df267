"""Small builders for the Kubernetes and Istio objects tests feed in."""

from __future__ import annotations

from typing import Any

ISTIO = "networking.istio.io/v1"


def service(name: str, port: int, *, ns: str = "default", target: int | str | None = None,
            selector: dict[str, str] | None = None, cluster_ip: str = "",
            port_name: str = "http", extra_ports: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": selector if selector is not None else {"app": name},
        "ports": [{"name": port_name, "port": port, "targetPort": target or port},
                  *(extra_ports or [])],
    }
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def pod(name: str, ip: str, labels: dict[str, str], *, ns: str = "default", ready: bool = True,
        ports: dict[str, int] | None = None, hostname: str = "", subdomain: str = ""
        ) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "demo"}
    if ports:
        container["ports"] = [{"name": k, "containerPort": v} for k, v in ports.items()]
    spec: dict[str, Any] = {"containers": [container]}
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def destination_rule(name: str, host: str, subsets: dict[str, dict[str, str]], *,
                     ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": ISTIO, "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"host": host, "subsets": [{"name": k, "labels": v}
                                               for k, v in subsets.items()]}}


def virtual_service(name: str, hosts: list[str], http: list[dict[str, Any]], *,
                    ns: str = "default", created: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": ISTIO, "kind": "VirtualService", "metadata": meta,
            "spec": {"hosts": hosts, "http": http}}


def weighted(host: str, weights: dict[str, int]) -> list[dict[str, Any]]:
    return [{"destination": {"host": host, "subset": subset}, "weight": w}
            for subset, w in weights.items()]


def pods_yaml(count: int) -> str:
    """`count` Pod documents; formatted directly, dumping them with PyYAML takes seconds."""
    return "".join(
        f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: default\n"
        f"  labels: {{app: a{i % 50}}}\nspec:\n  containers: [{{name: app, image: demo}}]\n"
        f"status:\n  phase: Running\n  podIP: 10.{i // 65536}.{i // 256 % 256}.{i % 256}\n"
        f"  conditions: [{{type: Ready, status: 'True'}}]\n" for i in range(count))


def mesh_config(mesh: str | dict[str, Any] | None, *, name: str = "istio",
                ns: str = "istio-system") -> dict[str, Any]:
    """The ConfigMap istiod reads its MeshConfig from: `mesh` as YAML text (a dict is
    dumped to it; None leaves the key out)."""
    import yaml

    data = {} if mesh is None else {
        "mesh": mesh if isinstance(mesh, str) else yaml.safe_dump(mesh, sort_keys=False)}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns}, "data": data}
