"""Shadowed HTTP routes (CP0110) and matches (CP0111), from the decision in
analysis/shadow.py, for every VirtualService some sidecar routes by.

A route merged from a delegate is reported on the delegate, at its own index there,
and only when it is unreachable under every root that merges it (a delegate may be
shared; under another root it may still be taken, and then nothing is reported: the
delegate's own author cannot fix one root's order).
A route configuration is per port, so the routes are decided per HTTP port of each
host (its port, the names a client may send there); a route is reported only when it
is unreachable on every one of them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from controlplane.analysis.findings import CODES, Finding
from controlplane.analysis.inputs import Inputs
from controlplane.analysis.shadow import MatchRef, Outcome, RouteVerdict, Space, decide_in
from controlplane.model.delegate import merge_matches, merge_route
from controlplane.model.mesh import Mesh
from controlplane.model.meta import Key
from controlplane.model.parse import Object
from controlplane.model.service import Service
from controlplane.model.virtual_service import HTTPRoute, VirtualService

UNREACHABLE = CODES["CP0110"]
INEFFECTIVE = CODES["CP0111"]


@dataclass(frozen=True)
class _Where:
    """Where a merged route was written: the object and its index there, and per
    merged match the object and path of the match it came from."""

    object: Key
    route: str  # "spec.http[2]"
    matches: tuple[tuple[Key, str], ...]


def _key(vs: VirtualService) -> Key:
    return Key("VirtualService", vs.meta.namespace, vs.meta.name)


def _plain(key: Key, i: int, route: HTTPRoute) -> _Where:
    return _Where(key, f"spec.http[{i}]", tuple((key, f"spec.http[{i}].match[{k}]")
                                              for k in range(len(route.matches))))


def _origins(vs: VirtualService, objects: dict[Key, Object], mesh: Mesh
             ) -> list[_Where]:
    """Per route of the merged `vs`, where it was written: replays model/delegate.py's
    merge over the objects as written (the Mesh keeps merged routes only)."""
    key = _key(vs)
    written = objects.get(key)
    plain = [_plain(key, i, r) for i, r in enumerate(vs.http)]
    if not isinstance(written, VirtualService) or written.http == vs.http:
        return plain
    out: list[_Where] = []
    for i, root in enumerate(written.http):
        if root.delegate is None:
            out.append(_plain(key, i, root))
            continue
        dkey = Key("VirtualService", root.delegate.namespace or key.namespace,
                   root.delegate.name)
        target = objects.get(dkey)
        if not isinstance(target, VirtualService) or not target.is_delegate or \
                not target.exported_to(key.namespace,
                                       mesh.config.default_virtual_service_export_to):
            continue
        for j, leaf in enumerate(target.http):
            if merge_route(root, leaf, target, mesh.resolve_host) is None:
                continue
            if not leaf.matches:
                matches = tuple((key, f"spec.http[{i}].match[{r}]")
                                for r in range(len(root.matches)))
            else:
                matches = tuple((dkey, f"spec.http[{j}].match[{n}]")
                                for n, m in enumerate(leaf.matches)
                                for _ in merge_matches(root.matches, (m,)) or ())
            out.append(_Where(dkey, f"spec.http[{j}]", matches))
    if len(out) == len(vs.http) and all(
            len(w.matches) == len(r.matches) for w, r in zip(out, vs.http, strict=True)):
        return out
    # The replay disagrees with the Mesh's merge: the merged list's indexes need not
    # exist in the object as written, so name only its route list.
    return [_Where(key, "spec.http", tuple((key, "spec.http") for _ in r.matches))
            for r in vs.http]


def spaces(service: Service) -> list[Space]:
    """Per HTTP port of the service, what its virtual host there receives: the port,
    and the Host values that reach it (each name, bare or with that port; the short
    name only from the service's namespace, which only makes a cover rarer)."""
    names = [*service.aliases(), service.meta.name]  # the virtual host's domains
    return [Space((p.port,), tuple([*names, *(f"{n}:{p.port}" for n in names)]))
            for p in service.ports if p.l7.is_http]


def _name(ref: MatchRef, where: Sequence[_Where], here: Key) -> str:
    w = where[ref[0]]
    path = w.route if ref[1] is None else w.matches[ref[1]][1]
    obj = w.object if ref[1] is None else w.matches[ref[1]][0]
    return path if obj == here else f"{obj} {path}"


def _names(refs: Sequence[MatchRef], where: Sequence[_Where], here: Key) -> str:
    names = [_name(r, where, here) for r in refs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _findings(verdicts: list[RouteVerdict], where: list[_Where]) -> Iterator[Finding]:
    for v in verdicts:
        w = where[v.route]
        if v.outcome is Outcome.COVERED:
            if v.covered_by:
                cover = where[v.covered_by[0][0]]
                first = cover.route if cover.object == w.object else \
                    f"{cover.object} {cover.route}"
                message = (f"this route can never match: {_names(v.covered_by, where, w.object)}"
                           f" {'covers' if len(v.covered_by) == 1 else 'together cover'} "
                           "every request it matches")
                fix = (f"move it before {first} or narrow the earlier "
                       f"{'match' if len(v.covered_by) == 1 else 'matches'}")
            else:
                message = "this route can never match: no request this host receives " \
                          "meets its matches"
                fix = "correct its matches (a path starts with '/'; a port must be one " \
                      "of the host's HTTP ports)"
            yield Finding(UNREACHABLE, w.object, w.route, message, fix)
            continue
        for m in v.ineffective:
            if m.match is None:
                continue
            obj, path = w.matches[m.match]
            if m.covered_by:
                message = (f"this match can never be taken: {_names(m.covered_by, where, obj)}"
                           f" {'covers' if len(m.covered_by) == 1 else 'together cover'} it "
                           "(the route is still reached by another match)")
                fix = "remove the match, or move the route before the covering one"
            else:
                message = "this match can never be taken: no request this host receives " \
                          "meets it (the route is still reached by another match)"
                fix = "remove or correct the match"
            yield Finding(INEFFECTIVE, obj, path, message, fix)


@lru_cache(maxsize=1 << 14)
def _decided(routes: tuple[HTTPRoute, ...], where: tuple[Space, ...]) -> list[RouteVerdict]:
    """Memoized on the (immutable) routes and their hosts' spaces: the live analysis and
    the webhook analyse the whole mesh again after each change, and a VirtualService
    that did not change is not decided again (the search is most of the analysis's
    cost). Callers never mutate the result."""
    return decide_in(routes, where)


def forget() -> None:
    """Drop the memoized decisions (benchmarks measure a cold analysis)."""
    _decided.cache_clear()


@dataclass
class _Delegated:
    """What the roots say about a delegate's routes and matches: a delegate is shared,
    so a route of it is unreachable (a match ineffective) only if so in every place a
    root merges it; the finding stands for all of them."""

    # Per delegate route or match (object, path): its merged copies some sidecar
    # takes, those never taken, and per route those unreachable.
    places: Counter[tuple[Key, str]] = field(default_factory=Counter)
    dead: Counter[tuple[Key, str]] = field(default_factory=Counter)
    routes_dead: Counter[tuple[Key, str]] = field(default_factory=Counter)
    first: dict[tuple[str, Key, str], tuple[Finding, Key]] = field(default_factory=dict)
    roots: defaultdict[tuple[Key, str], list[Key]] = field(
        default_factory=lambda: defaultdict(list))

    def add(self, key: Key, verdicts: list[RouteVerdict], where: list[_Where],
            found: list[Finding]) -> Iterator[Finding]:
        """Takes the root's findings on its delegates; yields those on the root."""
        for v in verdicts:
            w = where[v.route]
            if w.object == key:
                continue
            dead = v.outcome is Outcome.COVERED
            self.places[(w.object, w.route)] += 1
            if key not in self.roots[(w.object, w.route)]:
                self.roots[(w.object, w.route)].append(key)
            self.routes_dead[(w.object, w.route)] += dead
            for m in v.matches:
                if m.match is not None and w.matches[m.match][0] == w.object:
                    self.places[w.matches[m.match]] += 1
                    if key not in self.roots[w.matches[m.match]]:
                        self.roots[w.matches[m.match]].append(key)
                    self.dead[w.matches[m.match]] += dead or m.outcome is Outcome.COVERED
        for f in found:
            if f.object == key:
                yield f
                continue
            self.first.setdefault((f.code.code, f.object, f.path), (f, key))

    def findings(self) -> Iterator[Finding]:
        for (code, obj, path), (f, root) in self.first.items():
            if code == UNREACHABLE.code:
                copies, dead = self.places[(obj, path)], self.routes_dead[(obj, path)]
            else:
                copies, dead = self.places[(obj, path)], self.dead[(obj, path)]
                route = path.split(".match[")[0]
                if self.routes_dead[(obj, route)] == self.places[(obj, route)]:
                    continue  # the route's CP0110 says it
            if dead < copies:
                continue  # some root still takes it
            others = [r for r in self.roots[(obj, path)] if r != root]
            f = replace(f, related=tuple(self.roots[(obj, path)]))
            yield f if not others else replace(
                f, message=f"{f.message} (and likewise under "
                           f"{', '.join(str(r) for r in others)}, which also "
                           f"merge{'s' if len(others) == 1 else ''} this delegate)")


def check(inputs: Inputs) -> Iterator[Finding]:
    mesh = inputs.mesh
    objects = dict(inputs.objects)
    in_force = dict.fromkeys([*mesh.virtual_services.values(),
                              *(vs for _, vs in mesh.scoping().alternates())])
    delegated = _Delegated()
    for vs in in_force:
        if not vs.applies_to_sidecars or not vs.http:
            continue
        services = [mesh.services[f] for f in dict.fromkeys(
            mesh.resolve_host(h, vs.meta.namespace) for h in vs.hosts)
            if f in mesh.services]
        if not services:
            continue
        verdicts = _decided(vs.http, tuple(sp for s in services for sp in spaces(s)))
        where = _origins(vs, objects, mesh)
        yield from delegated.add(_key(vs), verdicts, where, list(_findings(verdicts, where)))
    yield from delegated.findings()


CHECKS = [check]
