"""Objects that compete for one host, and routes that cannot apply where they sit
(CP0106, CP0107, CP0109).

Which VirtualService wins is the model's decision (model/scoping.py, Istio's
PushContext order: private to the namespace, exported to it by name, public; oldest
first in each, then namespace/name): this check asks it per namespace instead of
deciding again, so exportTo is respected exactly — two VirtualServices that no namespace
sees both are no conflict. A Sidecar's imports are not taken into account.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from controlplane.analysis.checks.common import destination_rules, finding, of_kind, ref
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.mesh import tcp_routes_on_tls_ports
from controlplane.model.scoping import vs_key
from controlplane.model.virtual_service import VirtualService
from controlplane.model.visibility import PUBLIC, is_exported


def _tier(vs: VirtualService, export: frozenset[str], ns: str) -> int:
    """Istio's order for namespace `ns`: private to it, exported to it by name, public."""
    if PUBLIC in export:
        return 2
    return 0 if vs.meta.namespace == ns else 1


_TIERS = ("private to", "exported by name to", "exported everywhere, as is")


def _why(winner: VirtualService, loser: VirtualService, winner_export: frozenset[str],
         loser_export: frozenset[str], ns: str) -> str:
    tw, tl = _tier(winner, winner_export, ns), _tier(loser, loser_export, ns)
    if tw < tl:
        return (f"it is {_TIERS[tw]} namespace {ns}, which comes before a VirtualService "
                f"{_TIERS[tl].removesuffix(', as is').removesuffix(' to')}")
    w, lo = winner.meta.creation_timestamp, loser.meta.creation_timestamp
    if w and lo and w != lo:
        return f"it is older (created {w}; this one {lo})"
    if w and not lo:
        return f"it has a creationTimestamp ({w}) and this one has none"
    return ("both have the same creationTimestamp" if w else "neither has a "
            "creationTimestamp") + ", and its namespace/name sorts first"


def virtual_services(inputs: Inputs) -> Iterator[Finding]:
    mesh = inputs.mesh
    scopes = mesh.scoping()
    namespaces = sorted({k.namespace for k in inputs.objects})
    # (loser, winner, host) -> the namespaces where the winner hides the loser
    hidden: dict[tuple[tuple[str, str], tuple[str, str], str], list[str]] = defaultdict(list)
    by_key: dict[tuple[str, str], VirtualService] = {}
    for fqdn, vses in scopes.candidates.items():
        if len(vses) < 2:
            continue
        for vs in vses:
            by_key[vs_key(vs)] = vs
        for ns in namespaces:
            visible = [v for v in vses if is_exported(scopes.vs_export[vs_key(v)], ns)]
            if len(visible) < 2:
                continue
            winner = scopes.winner(vses, ns)
            for loser in visible:
                if winner is not None and loser is not winner:
                    hidden[(vs_key(loser), vs_key(winner), fqdn)].append(ns)
    for (loser_key, winner_key, fqdn), where in sorted(hidden.items()):
        loser, winner = by_key[loser_key], by_key[winner_key]
        k = next((i for i, h in enumerate(loser.hosts)
                  if mesh.resolve_host(h, loser.meta.namespace) == fqdn), 0)
        reach = ("every namespace that sees both" if len(where) == len(namespaces)
                 else f"namespace{'s' if len(where) > 1 else ''} {', '.join(where)}")
        why = _why(winner, loser, scopes.vs_export[winner_key], scopes.vs_export[loser_key],
                   where[0])
        yield finding(
            "CP0106", loser, f"spec.hosts[{k}]",
            f"host {fqdn} is also routed by VirtualService {ref(winner)}, which wins for "
            f"{reach}: {why}; this one's routes for the host are ignored there",
            f"merge the routes into {ref(winner)} (rules are taken in order, first match "
            "wins), or narrow exportTo so each namespace sees one VirtualService per host")


def rules_per_host(inputs: Inputs) -> Iterator[Finding]:
    for dr, fqdn in destination_rules(inputs):
        winner = inputs.mesh.destination_rules.get(fqdn)
        if winner is None or winner is dr or (winner.meta.namespace, winner.meta.name) == (
                dr.meta.namespace, dr.meta.name):
            continue
        yield finding(
            "CP0107", dr, "spec.host",
            f"host {fqdn} already has DestinationRule {ref(winner)} (older, or first by "
            "namespace/name); this one's subsets and policies are ignored (Istio would "
            "merge the subsets of rules in one namespace; this control plane does not)",
            f"move its subsets and policies into {ref(winner)} and delete this one")


def tcp_on_tls(inputs: Inputs) -> Iterator[Finding]:
    mesh = inputs.mesh
    for vs in of_kind(inputs, VirtualService):
        if not vs.tcp or not vs.applies_to_sidecars:
            continue
        for host in vs.hosts:
            service = mesh.services.get(mesh.resolve_host(host, vs.meta.namespace))
            if service is None:
                continue
            for i, port in tcp_routes_on_tls_ports(vs, service):
                yield finding(
                    "CP0109", vs, f"spec.tcp[{i}]",
                    f"port {port} of {service.fqdn} speaks TLS (its name or appProtocol "
                    "says so): it is routed by `tls` routes, by SNI, and this tcp route "
                    "does nothing there",
                    f"write a `tls` route with match sniHosts (and port {port}) instead")


CHECKS = [virtual_services, rules_per_host, tcp_on_tls]
