"""References that lead nowhere: a route's destination host or subset, a
VirtualService's or DestinationRule's host, a delegate (CP0101, CP0102, CP0104, CP0105,
CP0108).

Every VirtualService that applies to sidecars is checked, the ones no proxy routes by
too (another VirtualService wins their host): a broken reference is broken wherever it
may come into force. Gateway-only VirtualServices are not served here and not checked.
"""

from __future__ import annotations

from collections.abc import Iterator

from controlplane.analysis.checks.common import destination_rules, finding, of_kind, ref
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.delegate import find_delegate
from controlplane.model.tls_route_parse import within
from controlplane.model.virtual_service import Destination, VirtualService

# What each section's broken destination does to traffic.
_OUTCOME = {"http": "requests routed to it answer 503",
            "tcp": "connections routed to it are closed",
            "tls": "connections routed to it are closed"}


def destinations(vs: VirtualService) -> Iterator[tuple[str, str, Destination]]:
    """(section, field path, destination) for every destination a VirtualService names:
    routes of each section, and mirrors."""
    for i, r in enumerate(vs.http):
        for j, wd in enumerate(r.route):
            yield "http", f"spec.http[{i}].route[{j}].destination", wd.destination
        # `mirror` holds the destination itself; `mirrors` a list of {destination}. The
        # model keeps one list, so a single mirror is taken for the `mirror` form (a path
        # not written falls back to spec.http[i] in the file).
        for k, m in enumerate(r.mirrors):
            yield "http", (f"spec.http[{i}].mirror" if len(r.mirrors) == 1 else
                           f"spec.http[{i}].mirrors[{k}].destination"), m.destination
    for section, routes in (("tcp", [r.route for r in vs.tcp]),
                            ("tls", [r.route for r in vs.tls])):
        for i, dests in enumerate(routes):
            for j, wd in enumerate(dests):
                yield section, f"spec.{section}[{i}].route[{j}].destination", wd.destination


def route_references(inputs: Inputs) -> Iterator[Finding]:
    mesh = inputs.mesh
    for vs in of_kind(inputs, VirtualService):
        if not vs.applies_to_sidecars:
            continue
        for section, path, dest in destinations(vs):
            fqdn = mesh.resolve_host(dest.host, vs.meta.namespace)
            outcome = _OUTCOME[section]
            if "mirror" in path:
                outcome = "the mirrored copies go nowhere"
            if fqdn not in mesh.services:
                yield finding(
                    "CP0101", vs, f"{path}.host",
                    f"{dest.host!r} ({fqdn}) matches no service; {outcome}",
                    "name an existing Service (short names resolve in the VirtualService's "
                    "namespace), or create the Service")
                continue
            if not dest.subset:
                continue
            dr = mesh.destination_rules.get(fqdn)
            if dr is None:
                yield finding(
                    "CP0102", vs, f"{path}.subset",
                    f"subset {dest.subset!r} of {fqdn}: no DestinationRule for that host "
                    f"defines subsets; {outcome}",
                    f"add a DestinationRule for {fqdn} with a subset {dest.subset!r}, or "
                    "drop the subset")
            elif dr.subset(dest.subset) is None:
                have = ", ".join(repr(s.name) for s in dr.subsets) or "none"
                yield finding(
                    "CP0102", vs, f"{path}.subset",
                    f"subset {dest.subset!r} of {fqdn} is not defined by DestinationRule "
                    f"{ref(dr)}, the one in force for that host (its subsets: {have}); "
                    f"{outcome}",
                    f"add the subset to DestinationRule {ref(dr)}, or use one it defines")


def host_references(inputs: Inputs) -> Iterator[Finding]:
    mesh = inputs.mesh
    for vs in of_kind(inputs, VirtualService):
        if not vs.applies_to_sidecars:
            continue
        fqdns = [mesh.resolve_host(host, vs.meta.namespace) for host in vs.hosts]
        serves = any(fqdn in mesh.services for fqdn in fqdns)
        for k, (host, fqdn) in enumerate(zip(vs.hosts, fqdns, strict=True)):
            if fqdn not in mesh.services and not (serves and _scopes_sni(vs, host)):
                yield finding(
                    "CP0104", vs, f"spec.hosts[{k}]",
                    f"host {host!r} ({fqdn}) matches no service: its routes apply to no "
                    "request (ServiceEntries and wildcard hosts are not served)",
                    "name an existing Service's host, or create the Service")
    for dr, fqdn in destination_rules(inputs):
        # A wildcard host: the parser's warning (CP0002) says it is not matched.
        if "*" not in dr.host and fqdn not in mesh.services:
            yield finding(
                "CP0105", dr, "spec.host",
                f"host {dr.host!r} ({fqdn}) matches no service: its subsets and policies "
                "apply to nothing",
                "name an existing Service's host (short names resolve in the rule's "
                "namespace), or create the Service")


def _scopes_sni(vs: VirtualService, host: str) -> bool:
    """Whether `host` holds some of the tls routes' sniHosts. Istio requires every SNI
    name within one of the hosts, so such a host (often `*.example.com`) is needed even
    when no service has it: the routes apply on the ports of the hosts that are
    services, by SNI, and dropping it would make the object invalid."""
    return any(within(sni, host) for r in vs.tls for m in r.matches for sni in m.sni_hosts)


def delegates(inputs: Inputs) -> Iterator[Finding]:
    default_export = inputs.mesh.config.default_virtual_service_export_to
    vses = list(of_kind(inputs, VirtualService))
    # As the Mesh build finds them (model/delegate.py): only hostless ones are delegates.
    targets = {(v.meta.namespace, v.meta.name): v for v in vses if v.is_delegate}
    for vs in vses:
        if vs.is_delegate:
            continue
        for i, route in enumerate(vs.http):
            if route.delegate is None:
                continue
            target, why = find_delegate(vs, route.delegate, targets, default_export)
            if target is None:
                name = f"{route.delegate.namespace or vs.meta.namespace}/{route.delegate.name}"
                yield finding(
                    "CP0108", vs, f"spec.http[{i}].delegate",
                    f"{why}; the route is left out, so its requests fall to the next route",
                    f"create {name} without hosts (exported to {vs.meta.namespace}), or fix "
                    "the delegate's name and namespace")


CHECKS = [route_references, host_references, delegates]
