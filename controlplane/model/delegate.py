"""VirtualService delegation: a root route's `delegate` replaced by the delegate
VirtualService's routes, each narrowed to what the root route matches, as istiod merges
them (pilot/pkg/model/virtualservice.go).

Per delegate route: its matches are combined with the root route's (each delegate match
with every root match it does not contradict; a delegate match that contradicts all of
them leaves the route out); what the delegate route leaves unset (timeout, retries,
rewrite, fault, mirrors, CORS, header operations, direct response) it takes from the root
route; names join as "<root>-<delegate>". Destination hosts are resolved in the delegate's
namespace. Each merged route keeps the delegate it came from (`HTTPRoute.origin`).

A delegate that does not exist, is not exported to the root's namespace, or has hosts
(then it is a root of its own) leaves the root route out; that is reported as a Mesh
problem naming both objects, never raised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from controlplane.model.istio_common import StringMatch
from controlplane.model.meta import Key
from controlplane.model.virtual_service import (
    Delegate,
    Destination,
    HTTPMatch,
    HTTPRoute,
    Mirror,
    VirtualService,
    WeightedDestination,
)

# Delegate VirtualServices by (namespace, name).
Delegates = Mapping[tuple[str, str], VirtualService]
# (host, namespace) -> the FQDN it means (Mesh.resolve_host).
Resolve = Callable[[str, str], str]


def _ref(vs: VirtualService) -> str:
    return f"VirtualService {vs.meta.namespace}/{vs.meta.name}"


def _string_conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    """Whether the delegate's match `leaf` can match outside the root's `root` (Istio's
    rule: a regex on either side only with nothing on the other; an exact root takes the
    same exact; a prefix root takes exacts and prefixes under it)."""
    if root is None or leaf is None:
        return False
    if root.kind == "regex" or leaf.kind == "regex":
        return True
    if not root.value:  # an empty exact or prefix root: Istio finds no common ground
        return True
    if root.kind == "exact":
        return leaf.kind != "exact" or leaf.value != root.value
    return not leaf.value.startswith(root.value)


_Named = tuple[tuple[str, StringMatch | None], ...]


def _named_conflict(root: _Named, leaf: _Named) -> bool:
    roots = dict(root)
    for name, m in leaf:
        if name not in roots:
            continue
        r = roots[name]
        # A bare "present" match on either side, both included, leaves nothing Istio
        # compares: a conflict.
        if r is None or m is None or _string_conflict(r, m):
            return True
    return False


def _conflict(root: HTTPMatch, leaf: HTTPMatch) -> bool:
    return (any(_string_conflict(r, m) for r, m in ((root.uri, leaf.uri),
                                                     (root.method, leaf.method),
                                                     (root.authority, leaf.authority)))
            or _named_conflict(root.headers, leaf.headers)
            or _named_conflict(root.without_headers, leaf.without_headers)
            or _named_conflict(root.query_params, leaf.query_params)
            or root.ignore_uri_case != leaf.ignore_uri_case
            or (root.port is not None and leaf.port is not None and root.port != leaf.port)
            # Who may take the match (Istio compares these too): a label both name with
            # different values, or two different source namespaces.
            or any(dict(root.source_labels).get(k, v) != v for k, v in leaf.source_labels)
            or bool(root.source_namespace and leaf.source_namespace
                    and root.source_namespace != leaf.source_namespace))


def _joined(root: str, leaf: str) -> str:
    if not leaf:
        return root
    return f"{root}-{leaf}" if root else leaf


def _merged_named(root: _Named, leaf: _Named) -> _Named:
    out = dict(root)
    out.update(leaf)  # the delegate's own wins
    return tuple(sorted(out.items()))


def _merge_match(root: HTTPMatch, leaf: HTTPMatch) -> HTTPMatch:
    return HTTPMatch(
        uri=leaf.uri or root.uri,
        headers=_merged_named(root.headers, leaf.headers),
        without_headers=_merged_named(root.without_headers, leaf.without_headers),
        method=leaf.method or root.method,
        authority=leaf.authority or root.authority,
        query_params=_merged_named(root.query_params, leaf.query_params),
        ignore_uri_case=leaf.ignore_uri_case,
        port=leaf.port if leaf.port is not None else root.port,
        name=_joined(root.name, leaf.name),
        # As Istio merges them: the root's source labels join the delegate's; its source
        # namespace and gateways apply unless the delegate names its own.
        source_labels=frozenset({**dict(leaf.source_labels),
                                 **dict(root.source_labels)}.items()),
        source_namespace=leaf.source_namespace or root.source_namespace,
        gateways=leaf.gateways or root.gateways,
    )


def merge_matches(root: tuple[HTTPMatch, ...], leaf: tuple[HTTPMatch, ...]
                  ) -> tuple[HTTPMatch, ...] | None:
    """The merged route's matches; None when a delegate match fits none of the root's."""
    if not root:
        return leaf
    if not leaf:
        return root
    out = []
    for m in leaf:
        fits = [_merge_match(r, m) for r in root if not _conflict(r, m)]
        if not fits:
            return None
        out.extend(fits)
    return tuple(out)


def _resolved(dest: Destination, namespace: str, resolve: Resolve) -> Destination:
    return replace(dest, host=resolve(dest.host, namespace))


def merge_route(root: HTTPRoute, leaf: HTTPRoute, delegate: VirtualService,
                resolve: Resolve, rules: tuple[int, int] | None = None) -> HTTPRoute | None:
    """One delegate route under its root route; None when their matches contradict."""
    matches = merge_matches(root.matches, leaf.matches)
    if matches is None:
        return None
    ns = delegate.meta.namespace
    return replace(
        leaf,
        name=_joined(root.name, leaf.name),
        matches=matches,
        route=tuple(WeightedDestination(_resolved(d.destination, ns, resolve), d.weight,
                                        d.headers) for d in leaf.route),
        timeout=leaf.timeout if leaf.timeout is not None else root.timeout,
        retries=leaf.retries if leaf.retries is not None else root.retries,
        fault=leaf.fault or root.fault,
        mirrors=tuple(Mirror(_resolved(m.destination, ns, resolve), m.percent)
                      for m in leaf.mirrors) or root.mirrors,
        rewrite=leaf.rewrite or root.rewrite,
        direct_response=leaf.direct_response or root.direct_response,
        headers=leaf.headers if (leaf.headers.request or leaf.headers.response)
        else root.headers,
        cors=leaf.cors or root.cors,
        delegate=None,
        origin=Key("VirtualService", ns, delegate.meta.name),
        origin_rules=rules,
    )


def find_delegate(vs: VirtualService, delegate: Delegate, delegates: Delegates,
                  default_export_to: tuple[str, ...] = ("*",)
                  ) -> tuple[VirtualService | None, str]:
    """The delegate VirtualService a route of `vs` names, or None and why not: none of
    that name without hosts, or not exported to the root's namespace."""
    ns = delegate.namespace or vs.meta.namespace
    target = delegates.get((ns, delegate.name))
    if target is None:
        return None, f"no delegate VirtualService {ns}/{delegate.name} (one without hosts)"
    if not target.exported_to(vs.meta.namespace, default_export_to):
        return None, f"{_ref(target)} is not exported to namespace {vs.meta.namespace}"
    return target, ""


def merge_delegates(vs: VirtualService, delegates: Delegates, resolve: Resolve,
                    problems: list[str], default_export_to: tuple[str, ...] = ("*",)
                    ) -> VirtualService:
    """`vs` with each delegating route replaced by its delegate's merged routes (the
    very same object when it delegates nothing)."""
    if not any(r.delegate is not None for r in vs.http):
        return vs
    out: list[HTTPRoute] = []
    for i, route in enumerate(vs.http):
        if route.delegate is None:
            out.append(route)
            continue
        where = f"{_ref(vs)}: spec.http[{i}].delegate"
        target, why = find_delegate(vs, route.delegate, delegates, default_export_to)
        if target is None:
            problems.append(f"{where}: {why}; the route is left out")
            continue
        for j, leaf in enumerate(target.http):
            merged = merge_route(route, leaf, target, resolve, (i, j))
            if merged is None:
                problems.append(f"{where}: {_ref(target)} spec.http[{j}] matches nothing "
                                "the root route matches; that route is left out")
            else:
                out.append(merged)
    return replace(vs, http=tuple(out))
