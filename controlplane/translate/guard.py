"""Each unit of translation made and checked on its own, and traced to the objects behind it.

A unit is what one service contributes (its clusters and load assignments) or what one
service port's virtual host routes to. Building a unit may raise (a value the validation let
through and the translator cannot express), and what it builds may break one of Envoy's own
constraints (`constraints.check`). Either way the unit's messages are withheld, and the
`Failure` names the source objects that shaped it, the likeliest first, so the push loop
can reject one and translate again without it. Nothing here raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.model.mesh import Mesh
from controlplane.model.meta import Key
from controlplane.model.service import Service
from controlplane.model.virtual_service import VirtualService
from controlplane.translate.constraints import check


@dataclass(frozen=True)
class Failure:
    what: str  # the unit, e.g. "virtual host reviews.default.svc.cluster.local:9080"
    suspects: tuple[Key, ...]  # the objects that shaped it, the likeliest first
    reason: str  # the resource and field, and what is wrong with it
    by: str  # "translation" (it raised) or "constraints" (Envoy would reject it)


def _key(obj: Any) -> Key:
    return Key(type(obj).__name__, obj.meta.namespace, obj.meta.name)


def service_suspects(mesh: Mesh, service: Service) -> tuple[Key, ...]:
    """Behind a service's clusters: its DestinationRule, then the Service itself."""
    rule = mesh.destination_rules.get(service.fqdn)
    return tuple(dict.fromkeys([*([_key(rule)] if rule else []), _key(service)]))


def listener_suspects(mesh: Mesh) -> tuple[Key, ...]:
    """Behind a proxy's listeners, besides the Services: the VirtualServices whose `tcp`
    or `tls` routes shape filter chains (any namespace's view may hold them)."""
    in_force = [*mesh.virtual_services.values(),
                *(vs for _, vs in mesh.scoping().alternates())]
    return tuple(dict.fromkeys(_key(vs) for vs in in_force if vs.tcp or vs.tls))


def route_suspects(mesh: Mesh, service: Service, vs: VirtualService | None = None
                   ) -> tuple[Key, ...]:
    """Behind a service's routes: its VirtualService (the shared one unless given), the
    delegates merged into it, the DestinationRules whose hash policies its destinations
    take, then the Service."""
    keys: list[Key] = []
    if vs is None:
        vs = mesh.virtual_services.get(service.fqdn)
    if vs is not None:
        keys.append(_key(vs))
        # The delegates whose routes were merged in (model/delegate.py).
        keys.extend(route.origin for route in vs.http if route.origin is not None)
        for route in vs.http:
            for wd in route.route:
                rule = mesh.destination_rules.get(
                    mesh.resolve_host(wd.destination.host, vs.meta.namespace))
                if rule is not None:
                    keys.append(_key(rule))
    rule = mesh.destination_rules.get(service.fqdn)
    if rule is not None:
        keys.append(_key(rule))
    keys.append(_key(service))
    return tuple(dict.fromkeys(keys))


def _label(message: Any) -> str:
    name = getattr(message, "name", "") or getattr(message, "cluster_name", "")
    return f"{type(message).__name__} {name!r}" if name else type(message).__name__


def checked(what: str, suspects: tuple[Key, ...], build: Callable[[], Sequence[Any]]
            ) -> tuple[list[Any], Failure | None]:
    """`build()`'s messages if it returns and every message passes Envoy's constraints;
    else no messages and the Failure."""
    try:
        messages = list(build())
    except Exception as exc:  # any translator bug, attributed instead of stopping a push
        return [], Failure(what, suspects, f"translation failed: {type(exc).__name__}: "
                           f"{str(exc)[:300]}", "translation")
    for message in messages:
        try:
            violations = check(message)
        except Exception as exc:  # a checker bug: withhold (fail closed), say why
            return [], Failure(what, suspects, f"{_label(message)} could not be checked: "
                               f"{type(exc).__name__}: {str(exc)[:300]}", "constraints")
        if violations:
            shown = "; ".join(f"{v.path}: {v.message}" for v in violations[:3])
            more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
            return [], Failure(what, suspects, f"{_label(message)} would be rejected by "
                               f"Envoy: {shown}{more}", "constraints")
    return messages, None
