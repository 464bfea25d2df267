"""Istio's Sidecar resource: which hosts the proxies it applies to can reach (egress
hosts), and which proxies those are (a workloadSelector, else its whole namespace; one
without a selector in the mesh's root namespace is every namespace's default).

Only egress hosts are served: they scope the virtual hosts a proxy gets. Everything else
a Sidecar says (ingress listeners, port-scoped egress listeners, outbound traffic policy,
connection pools) is accepted with a warning and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import as_int, as_list, as_map, as_str, reject_unknown_fields
from controlplane.model.meta import Meta, parse_meta
from controlplane.model.visibility import PUBLIC, is_dns1123_label, workload_selector

CURRENT = "."  # the namespace the Sidecar applies in
EXCLUDE = "~"


@dataclass(frozen=True)
class EgressHost:
    namespace: str  # "*", "." or a namespace name
    host: str  # "*", "*.suffix" or an exact name
    excluded: bool = False  # "~ns/host": hosts it matches are not imported

    def matches(self, hostname: str) -> bool:
        """Istio's hostname rule: the hostname lies within the pattern."""
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return hostname.endswith(self.host[1:])
        return hostname == self.host

    def overlaps(self, hostname: str) -> bool:
        """Either lies within the other (how Istio picks a VirtualService's hosts)."""
        if self.matches(hostname):
            return True
        return hostname.startswith("*.") and (
            self.host.endswith(hostname[1:]) or self.host == hostname)


@dataclass(frozen=True)
class Sidecar:
    meta: Meta
    workload_selector: frozenset[tuple[str, str]] | None  # None: the whole namespace
    egress_hosts: tuple[EgressHost, ...]  # every egress listener's hosts
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def _by_namespace(self, config_ns: str) -> dict[str, list[EgressHost]]:
        out: dict[str, list[EgressHost]] = {}
        for h in self.egress_hosts:
            ns = config_ns if h.namespace == CURRENT else h.namespace
            out.setdefault(ns, []).append(h)
        return out

    def imports_service(self, namespace: str, hostname: str, config_ns: str) -> bool:
        """Istio's selectServices: an exclusion for the service's namespace (or "*") wins;
        then a host of its namespace, then one of "*", must match."""
        hosts = self._by_namespace(config_ns)
        mine, anyone = hosts.get(namespace, []), hosts.get(PUBLIC, [])
        if any(h.excluded and h.matches(hostname) for h in (*mine, *anyone)):
            return False
        return any(not h.excluded and h.matches(hostname) for h in (*mine, *anyone))

    def imports_virtual_service(self, namespace: str, hostnames: tuple[str, ...],
                                config_ns: str) -> bool:
        """Istio's SelectVirtualServices: a host of the VirtualService's namespace (or of
        "*") overlaps one of its hosts, which no exclusion removes."""
        hosts = self._by_namespace(config_ns)
        mine, anyone = hosts.get(namespace, []), hosts.get(PUBLIC, [])
        for name in hostnames:
            if any(h.excluded and h.matches(name) for h in (*mine, *anyone)):
                continue
            if any(not h.excluded and h.overlaps(name) for h in (*mine, *anyone)):
                return True
        return False


def _check_dns_name(name: str, path: str, errs: Errors) -> None:
    """An egress host's name part: "*", or a dotted name whose first label alone may be
    "*" (Istio allows no short names and no partial wildcards)."""
    if name == "*":
        return
    if "." not in name:
        errs.add(path, f"{name!r} is a short name; use a fully qualified name or '*'")
        return
    labels = name.split(".")
    first, rest = labels[0], labels[1:]
    if len(name) > 255 or not (first == "*" or is_dns1123_label(first)) or not all(
            is_dns1123_label(label) for label in rest):
        errs.add(path, f"{name!r} is not a valid host name (a wildcard may only be the "
                 "whole first label)")


def parse_egress_host(raw: Any, path: str, errs: Errors) -> EgressHost | None:
    value = as_str(raw, path, errs)
    if value.count("/") != 1:
        errs.add(path, f"{value!r} must be namespace/dnsName")
        return None
    ns, name = value.split("/")
    if not ns or not name:
        errs.add(path, "the namespace and the name cannot be empty")
        return None
    excluded = ns.startswith(EXCLUDE)
    if excluded:
        ns = ns[1:] or PUBLIC
    if ns not in (PUBLIC, CURRENT) and not is_dns1123_label(ns):
        errs.add(path, f"{ns!r} is not '*', '.' or a namespace name")
    _check_dns_name(name, path, errs)
    return EgressHost(ns, name.lower(), excluded)


_EGRESS_FIELDS = {"port", "bind", "captureMode", "hosts"}


def parse_sidecar(raw: dict[str, Any], errs: Errors) -> Sidecar:
    meta = parse_meta(raw, errs)
    spec = as_map(raw.get("spec"), "spec", errs)
    reject_unknown_fields(spec, {"workloadSelector", "ingress", "egress",
                                 "outboundTrafficPolicy", "inboundConnectionPool"},
                          "spec", errs)
    warnings: list[str] = []
    selector = workload_selector(spec.get("workloadSelector"), "spec.workloadSelector", errs)
    if selector is not None and not selector:
        warnings.append("spec.workloadSelector: no labels; applies to every workload of "
                        "the namespace")
        selector = None
    if not any(spec.get(k) for k in ("egress", "ingress", "outboundTrafficPolicy",
                                     "inboundConnectionPool")):
        errs.add("spec", "empty: needs egress, ingress, outboundTrafficPolicy or "
                 "inboundConnectionPool")
    for key in ("ingress", "outboundTrafficPolicy", "inboundConnectionPool"):
        if key in spec:
            warnings.append(f"spec.{key}: not supported; ignored")
    for i, ingress in enumerate(as_list(spec.get("ingress"), "spec.ingress", errs)):
        port = as_map(as_map(ingress, f"spec.ingress[{i}]", errs).get("port"),
                      f"spec.ingress[{i}].port", errs)
        as_int(port.get("number"), f"spec.ingress[{i}].port.number", errs, lo=1, hi=65535,
               required=True)
    egress = as_list(spec.get("egress"), "spec.egress", errs)
    hosts: list[EgressHost] = []
    ports: set[int] = set()
    for i, listener in enumerate(egress):
        path = f"spec.egress[{i}]"
        e = as_map(listener, path, errs)
        reject_unknown_fields(e, _EGRESS_FIELDS, path, errs)
        if "port" not in e:
            if i != len(egress) - 1:
                errs.add(path, "the egress listener without a port must be the last one")
        else:
            port = as_map(e["port"], f"{path}.port", errs)
            number = as_int(port.get("number"), f"{path}.port.number", errs, lo=1, hi=65535,
                            required=True)
            if number is not None and number in ports:
                errs.add(f"{path}.port.number", f"port {number} is listed twice")
            ports.add(number or 0)
            warnings.append(f"{path}.port: egress listeners per port are not supported; "
                            "its hosts apply on every port")
        for key in ("bind", "captureMode"):
            if key in e:
                warnings.append(f"{path}.{key}: not supported; ignored")
        raw_hosts = as_list(e.get("hosts"), f"{path}.hosts", errs)
        if not raw_hosts:
            errs.add(f"{path}.hosts", "needs at least one host")
        for j, h in enumerate(raw_hosts):
            host = parse_egress_host(h, f"{path}.hosts[{j}]", errs)
            if host is not None:
                hosts.append(host)
    if not egress:  # Istio: no egress listener imports everything
        hosts.append(EgressHost(PUBLIC, "*"))
    return Sidecar(meta=meta, workload_selector=selector, egress_hosts=tuple(hosts),
                   warnings=tuple(warnings))
