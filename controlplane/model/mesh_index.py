"""The mirrored objects, indexed as they change, the way the Mesh is computed from
them (services and pods by namespace, slices by service, which pods each service's
endpoint objects name). The store owns one and is its only writer; `build_mesh` reads
it and never writes it.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from controlplane.model.destination_rule import DestinationRule
from controlplane.model.mesh_config import ConfigMap, MeshConfig
from controlplane.model.meta import Key
from controlplane.model.secret import Secret
from controlplane.model.service import Service
from controlplane.model.sidecar import Sidecar
from controlplane.model.virtual_service import VirtualService
from controlplane.model.workload import Endpoints, EndpointSlice, Pod

ServiceId = tuple[str, str]  # (namespace, name)


class MeshIndex:
    """The mirrored objects, indexed the way the mesh is computed from them."""

    def __init__(self) -> None:
        self.services: dict[ServiceId, Service] = {}
        self.services_by_ns: dict[str, dict[str, Service]] = defaultdict(dict)
        self.pods_by_ns: dict[str, dict[str, Pod]] = defaultdict(dict)
        self.slices: dict[ServiceId, dict[str, EndpointSlice]] = defaultdict(dict)
        self.endpoints: dict[ServiceId, Endpoints] = {}
        self.virtual_services: dict[ServiceId, VirtualService] = {}
        self.destination_rules: dict[ServiceId, DestinationRule] = {}
        self.sidecars: dict[ServiceId, Sidecar] = {}
        self.secrets: dict[ServiceId, Secret] = {}
        self.slice_by_name: dict[ServiceId, EndpointSlice] = {}
        # Which services' slices or Endpoints name a pod (targetRef): a pod's labels feed
        # those services' subsets. Kept here, as objects change, and only here: building
        # a Mesh reads the index and never writes it, so a Mesh can be built again from
        # the same state (a rejected object's retry) with the same result.
        self.pod_services: dict[ServiceId, set[ServiceId]] = defaultdict(set)
        self.service_pods: dict[ServiceId, set[str]] = {}
        # The mesh config in force (istio-system/istio), else Istio's defaults.
        self.mesh_config = MeshConfig()

    def update(self, key: Key, old: object | None, new: object | None) -> None:
        ident = (key.namespace, key.name)
        if isinstance(old, EndpointSlice):
            self.slices[(key.namespace, old.service)].pop(key.name, None)
            self.slice_by_name.pop(ident, None)
        if isinstance(new, EndpointSlice):
            self.slices[(key.namespace, new.service)][key.name] = new
            self.slice_by_name[ident] = new
        tables: dict[str, dict[ServiceId, Any]] = {
            "Service": self.services, "Endpoints": self.endpoints,
            "VirtualService": self.virtual_services,
            "DestinationRule": self.destination_rules,
            "Sidecar": self.sidecars,
            "Secret": self.secrets,
        }
        table = tables.get(key.kind)
        if table is not None:
            if new is None:
                table.pop(ident, None)
            else:
                table[ident] = new
        if key.kind == "Service":
            if new is None:
                self.services_by_ns[key.namespace].pop(key.name, None)
            else:
                self.services_by_ns[key.namespace][key.name] = new  # type: ignore[assignment]
        elif key.kind == "ConfigMap":
            self.mesh_config = new.config if isinstance(new, ConfigMap) else MeshConfig()
        elif key.kind == "Pod":
            if new is None:
                self.pods_by_ns[key.namespace].pop(key.name, None)
            else:
                self.pods_by_ns[key.namespace][key.name] = new  # type: ignore[assignment]
        # The pods a service's endpoint objects name, after this change.
        for obj in (old, new):
            if isinstance(obj, EndpointSlice):
                self._link_pods((key.namespace, obj.service))
            elif isinstance(obj, Endpoints):
                self._link_pods(ident)

    def _link_pods(self, service: ServiceId) -> None:
        ns = service[0]
        for pod_name in self.service_pods.pop(service, ()):
            self.pod_services[(ns, pod_name)].discard(service)
        named = {a.pod for s in self.slices.get(service, {}).values() for a in s.addresses
                 if a.pod}
        endpoints = self.endpoints.get(service)
        if endpoints is not None:
            named |= {a.pod for a in endpoints.addresses if a.pod}
        if named:
            self.service_pods[service] = named
        for pod_name in named:
            self.pod_services[(ns, pod_name)].add(service)

    def overlay(self, key: Key, new: object | None) -> MeshIndex:
        """This index as it would be with `new` in force for `key` (None: deleted), for a
        what-if build (the admission webhook's analysis); this index is not touched. Only
        the table the kind lives in is copied, everything else is shared, read-only: a
        routing object costs one dict copy. Routing kinds and the mesh config only (the
        other kinds feed tables that are linked to each other)."""
        tables = {"VirtualService": "virtual_services", "DestinationRule": "destination_rules",
                  "Sidecar": "sidecars"}
        if key.kind not in (*tables, "ConfigMap"):
            raise ValueError(f"overlay: {key.kind} is not a routing kind")
        out = copy.copy(self)
        ident = (key.namespace, key.name)
        if key.kind in tables:
            table: dict[ServiceId, Any] = dict(getattr(self, tables[key.kind]))
            setattr(out, tables[key.kind], table)
            old = table.get(ident)
        else:
            old = None  # update() reads only `new` for the mesh config
        out.update(key, old, new)
        return out

    @classmethod
    def of(cls, objects: Mapping[Key, object]) -> MeshIndex:
        index = cls()
        for key, obj in objects.items():
            index.update(key, None, obj)
        return index
