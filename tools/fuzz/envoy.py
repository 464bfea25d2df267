"""`envoy --mode validate` over many mutants at once.

Each mutant's published resources become static config (EDS clusters turned STATIC with
their assignment, route configurations inlined into the listeners, as tests/test_golden.py
does, SDS secrets made static) under names of its own: every cluster and secret name it
uses gets the mutant's tag, and its listeners bind to an address of their own. One
Envoy run checks a whole batch; a failing batch is halved until each rejection is pinned
to one mutant.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from controlplane.bootstrap import SIDECAR_RUNTIME
from controlplane.sidecar import envoy_binary
from controlplane.xds import types


@dataclass
class Static:
    """One mutant's resources as static config, already under its own names."""

    index: int
    clusters: list[dict[str, Any]]
    listeners: list[dict[str, Any]]
    secrets: list[dict[str, Any]] = field(default_factory=list)


def _rename(node: Any, names: dict[str, str]) -> Any:
    """Every string equal to a cluster name replaced by the tagged name."""
    if isinstance(node, dict):
        return {k: _rename(v, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename(v, names) for v in node]
    if isinstance(node, str):
        return names.get(node, node)
    return node


def _static_secrets(node: Any, names: set[str]) -> Any:
    """Every SdsSecretConfig naming one of `names` without its config source: Envoy then
    takes the static secret of that name (validate mode cannot reach an ADS server)."""
    if isinstance(node, dict):
        if node.get("name") in names and "sdsConfig" in node:
            return {k: v for k, v in node.items() if k != "sdsConfig"}
        return {k: _static_secrets(v, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_static_secrets(v, names) for v in node]
    return node


def to_static(index: int, resources: dict[str, list[Any]]) -> Static:
    tag = f"m{index}~"
    assignments = {c.cluster_name: c for c in resources[types.ENDPOINT]}
    routes = {r.name: r for r in resources[types.ROUTE]}
    names: dict[str, str] = {}
    for c in resources[types.CLUSTER]:
        names[c.name] = tag + c.name
        if c.eds_cluster_config.service_name:
            names[c.eds_cluster_config.service_name] = tag + c.eds_cluster_config.service_name
    for s in resources.get(types.SECRET, []):
        names[s.name] = tag + s.name
    secret_names = {tag + s.name for s in resources.get(types.SECRET, [])}
    # Routes and TCP proxies may name clusters that do not exist (yet): tag those too.
    clusters = []
    for c in resources[types.CLUSTER]:
        d = json_format.MessageToDict(c)
        if "edsClusterConfig" in d:
            d.pop("edsClusterConfig")
            d["type"] = "STATIC"
            cla = assignments.get(c.eds_cluster_config.service_name or c.name)
            d["loadAssignment"] = (json_format.MessageToDict(cla) if cla is not None
                                   else {"clusterName": c.name})
        clusters.append(_static_secrets(_rename(d, names), secret_names))
    listeners = []
    # Each mutant's listeners get their own loopback address (validate mode binds
    # nothing, but two listeners on one address are an error).
    address = f"127.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    for listener in resources[types.LISTENER]:
        listener_copy = type(listener)()
        listener_copy.CopyFrom(listener)
        for chain in [listener_copy.default_filter_chain, *listener_copy.filter_chains]:
            for f in chain.filters:
                if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    route = routes.get(hcm.rds.route_config_name)
                    if route is not None:
                        hcm.route_config.CopyFrom(route)
                    f.typed_config.Pack(hcm)
        d = _rename(json_format.MessageToDict(listener_copy), names)
        d["name"] = tag + d.get("name", "")
        d["address"]["socketAddress"]["address"] = address
        listeners.append(d)
    secrets = [_rename(json_format.MessageToDict(s), names)
               for s in resources.get(types.SECRET, [])]
    return Static(index, clusters, listeners, secrets)


def bootstrap(batch: list[Static]) -> dict[str, Any]:
    return {"static_resources": {"clusters": [c for s in batch for c in s.clusters],
                                 "listeners": [x for s in batch for x in s.listeners],
                                 "secrets": [x for s in batch for x in s.secrets]},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 0}}},
            "layered_runtime": SIDECAR_RUNTIME}


_CONSTRAINT = re.compile(r"(Proto constraint validation failed \(.*\))", re.S)
_ERROR = re.compile(r"error initializing configuration '[^']*': (.*)", re.S)


class Validator:
    """Runs `envoy --mode validate`; counts runs so the report can say what it cost."""

    def __init__(self, binary: str | None = None, cwd: Path | None = None) -> None:
        self.binary = binary or envoy_binary()
        # Where relative file names in the config (certificates) are found.
        self.cwd = cwd
        self.runs = 0
        self._dir = Path(tempfile.mkdtemp(prefix="fuzz-envoy-"))

    def validate(self, batch: list[Static]) -> str | None:
        """None when Envoy accepts the batch, else its error message."""
        self.runs += 1
        config = self._dir / "static.json"
        config.write_text(json.dumps(bootstrap(batch)))
        result = subprocess.run([self.binary, "--mode", "validate", "-l", "critical",
                                 "-c", str(config)],
                                capture_output=True, text=True, timeout=120, cwd=self.cwd)
        if result.returncode == 0:
            return None
        out = result.stdout + result.stderr
        # A constraint failure dumps the whole message first; the verdict is at the end.
        m = _CONSTRAINT.search(out) or _ERROR.search(out)
        return (m.group(1) if m else out[-2000:]).strip()

    def rejected(self, batch: list[Static],
                 on_reject: Callable[[Static, str], None] | None = None) -> dict[int, str]:
        """Mutant index -> Envoy's message, for each mutant of `batch` Envoy rejects."""
        if not batch:
            return {}
        message = self.validate(batch)
        if message is None:
            return {}
        if len(batch) == 1:
            if on_reject is not None:
                on_reject(batch[0], message)
            return {batch[0].index: message}
        half = len(batch) // 2
        return {**self.rejected(batch[:half], on_reject),
                **self.rejected(batch[half:], on_reject)}
