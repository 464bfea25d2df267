"""Pods, EndpointSlices and Endpoints: where a service's traffic can go."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import as_bool, as_int, as_list, as_map, as_str
from controlplane.model.meta import Meta, parse_meta

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Pod:
    meta: Meta
    ip: str  # "" until the kubelet assigned one
    ready: bool
    hostname: str = ""
    subdomain: str = ""
    container_ports: tuple[tuple[str, int], ...] = ()  # (name, number) of named ports

    def container_port(self, name: str) -> int | None:
        return next((n for pname, n in self.container_ports if pname == name), None)


@dataclass(frozen=True)
class EndpointAddress:
    """One address of a service as published by an EndpointSlice or Endpoints object."""

    ip: str
    ready: bool
    ports: tuple[tuple[str, int], ...]  # (port name, number) reachable on this address
    hostname: str = ""
    pod: str = ""  # name of the Pod behind it, in the same namespace, when known
    zone: str = ""  # an EndpointSlice endpoint's topology zone


@dataclass(frozen=True)
class EndpointSlice:
    meta: Meta
    service: str
    addresses: tuple[EndpointAddress, ...]


@dataclass(frozen=True)
class Endpoints:
    """Core v1 Endpoints, named like its service."""

    meta: Meta
    addresses: tuple[EndpointAddress, ...]


def _ip(value: Any, path: str, errs: Errors) -> str:
    text = as_str(value, path, errs, required=True)
    if text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            errs.add(path, f"must be an IP address, got {text!r}")
            return ""
    return text


def _ports(raw: Any, path: str, errs: Errors) -> tuple[tuple[str, int], ...]:
    ports = []
    for i, p in enumerate(as_list(raw, path, errs)):
        p = as_map(p, f"{path}[{i}]", errs)
        if (p.get("protocol") or "TCP") != "TCP":
            continue
        number = as_int(p.get("port"), f"{path}[{i}].port", errs, lo=1, hi=65535, required=True)
        if number is not None:
            ports.append((as_str(p.get("name"), f"{path}[{i}].name", errs), number))
    return tuple(ports)


def _target_pod(raw: Any, path: str, errs: Errors) -> str:
    ref = as_map(raw, path, errs)
    return as_str(ref.get("name"), f"{path}.name", errs) if ref.get("kind") == "Pod" else ""


def parse_pod(raw: dict[str, Any], errs: Errors) -> Pod:
    meta = parse_meta(raw, errs)
    spec = as_map(raw.get("spec"), "spec", errs)
    status = as_map(raw.get("status"), "status", errs)
    ip = _ip(status["podIP"], "status.podIP", errs) if status.get("podIP") else ""
    conditions = as_list(status.get("conditions"), "status.conditions", errs)
    ready = any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )
    terminating = bool(as_map(raw.get("metadata"), "metadata", errs).get("deletionTimestamp"))
    named = []
    for ci, c in enumerate(as_list(spec.get("containers"), "spec.containers", errs)):
        c = as_map(c, f"spec.containers[{ci}]", errs)
        for pi, p in enumerate(as_list(c.get("ports"), f"spec.containers[{ci}].ports", errs)):
            p = as_map(p, f"spec.containers[{ci}].ports[{pi}]", errs)
            number = as_int(p.get("containerPort"), f"spec.containers[{ci}].ports[{pi}]"
                            ".containerPort", errs, lo=1, hi=65535)
            if p.get("name") and number is not None:
                named.append((str(p["name"]), number))
    return Pod(
        meta=meta,
        ip=ip,
        ready=ready and not terminating and status.get("phase", "Running") == "Running",
        hostname=as_str(spec.get("hostname"), "spec.hostname", errs),
        subdomain=as_str(spec.get("subdomain"), "spec.subdomain", errs),
        container_ports=tuple(named),
    )


def parse_endpoint_slice(raw: dict[str, Any], errs: Errors) -> EndpointSlice:
    meta = parse_meta(raw, errs)
    service = meta.label(SERVICE_NAME_LABEL) or ""
    if not service:
        errs.add(f"metadata.labels[{SERVICE_NAME_LABEL}]", "is required to tie the slice "
                 "to its Service")
    address_type = raw.get("addressType", "IPv4")
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        errs.add("addressType", f"must be IPv4, IPv6 or FQDN, got {address_type!r}")
    ports = _ports(raw.get("ports"), "ports", errs)
    addresses = []
    for i, ep in enumerate(as_list(raw.get("endpoints"), "endpoints", errs)):
        path = f"endpoints[{i}]"
        ep = as_map(ep, path, errs)
        cond = as_map(ep.get("conditions"), f"{path}.conditions", errs)
        # The API says a missing `ready` means ready.
        ready = cond.get("ready") is not False and not as_bool(
            cond.get("terminating"), f"{path}.conditions.terminating", errs)
        for j, addr in enumerate(as_list(ep.get("addresses"), f"{path}.addresses", errs)):
            if address_type == "FQDN":
                continue
            ip = _ip(addr, f"{path}.addresses[{j}]", errs)
            if ip:
                addresses.append(EndpointAddress(
                    ip=ip, ready=ready, ports=ports,
                    hostname=as_str(ep.get("hostname"), f"{path}.hostname", errs),
                    pod=_target_pod(ep.get("targetRef"), f"{path}.targetRef", errs),
                    zone=as_str(ep.get("zone"), f"{path}.zone", errs),
                ))
    return EndpointSlice(meta=meta, service=service, addresses=tuple(addresses))


def parse_endpoints(raw: dict[str, Any], errs: Errors) -> Endpoints:
    meta = parse_meta(raw, errs)
    addresses = []
    for i, subset in enumerate(as_list(raw.get("subsets"), "subsets", errs)):
        path = f"subsets[{i}]"
        subset = as_map(subset, path, errs)
        ports = _ports(subset.get("ports"), f"{path}.ports", errs)
        for field, ready in (("addresses", True), ("notReadyAddresses", False)):
            for j, addr in enumerate(as_list(subset.get(field), f"{path}.{field}", errs)):
                apath = f"{path}.{field}[{j}]"
                addr = as_map(addr, apath, errs)
                ip = _ip(addr.get("ip"), f"{apath}.ip", errs)
                if ip:
                    addresses.append(EndpointAddress(
                        ip=ip, ready=ready, ports=ports,
                        hostname=as_str(addr.get("hostname"), f"{apath}.hostname", errs),
                        pod=_target_pod(addr.get("targetRef"), f"{apath}.targetRef", errs),
                    ))
    return Endpoints(meta=meta, addresses=tuple(addresses))
