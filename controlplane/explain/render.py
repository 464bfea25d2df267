"""An Explanation as text for people: one step per line group, in the order Envoy takes
them. (`-o json` is `Explanation.to_dict`.)"""

from __future__ import annotations

from controlplane.explain.walk import Destination, Explanation


def _origin(vs: str, rule: str, delegate: str = "") -> str:
    if not vs:
        return ""
    text = f"VirtualService {vs}" + (f" {rule}" if rule else "")
    return text + (f" (from delegate {delegate})" if delegate else "")


def _destination(d: Destination) -> list[str]:
    share = f"{d.percent:g}%" + (f" (weight {d.weight})" if d.weight is not None else "")
    where = ""
    if d.service:
        where = f"  service {d.service} port {d.port}" + (f" subset {d.subset}"
                                                           if d.subset else "")
    lines = [f"  {d.cluster}  {share}{where}"]
    if not d.known:
        lines.append("    the proxy holds no such cluster (Envoy answers 503)")
        return lines
    if d.destination_rule:
        lines.append(f"    DestinationRule {d.destination_rule}")
    if d.endpoints:
        for e in d.endpoints:
            extra = "".join(f"  {x}" for x in (
                e.pod and f"pod {e.pod}", e.locality and f"locality {e.locality}",
                e.priority and f"priority {e.priority}") if x)
            lines.append(f"    endpoint {e.address}  {e.health}{extra}")
    elif d.cluster not in ("PassthroughCluster", "BlackHoleCluster"):
        lines.append("    no endpoints")
    for p in d.policies:
        lines.append(f"    {p.name}: {p.value}" + (f"  [{p.source}]" if p.source else ""))
    return lines


def text(e: Explanation) -> str:
    r = e.request
    head = f"{r['method']} {r['url']}" if r["method"] else r["url"]
    lines = [f"request   {head}" + (f"  (Host {r['authority']})" if r["authority"] else "")]
    for name, values in sorted(r["headers"].items()):
        lines.append(f"          {name}: {', '.join(values)}")
    if e.proxy:
        lines.append(f"proxy     {e.proxy}")
    if e.listener:
        lines.append(f"listener  {e.listener} ({e.listener_address})")
        lines.append(f"  filter chain: {e.filter_chain}")
    if e.route_config:
        lines.append(f"routes    route configuration {e.route_config!r}")
    if e.virtual_host:
        lines.append(f"vhost     {e.virtual_host}  (domain {e.domain!r}, {e.domain_match})")
    for s in e.skipped:
        origin = _origin(s.virtual_service, s.rule)
        lines.append(f"  skipped route {s.route}" + (f" ({origin})" if origin else "")
                     + f": {s.reason}")
    if e.route:
        origin = _origin(e.virtual_service, e.rule, e.delegate)
        lines.append(f"route     {e.route}" + (f"  {origin}" if origin else
                                                  "  (no VirtualService rule)"))
        lines.append(f"  matched: {'; '.join(e.match)}")
    elif e.virtual_service:
        lines.append(f"tcp route {_origin(e.virtual_service, e.rule)}")
    if e.answer:
        lines.append(f"answer    {e.answer}")
    if e.destinations:
        lines.append("clusters")
        for d in e.destinations:
            lines.extend(_destination(d))
    if e.policies:
        lines.append("route policies")
        lines.extend(f"  {p.name}: {p.value}" + (f"  [{p.source}]" if p.source else "")
                     for p in e.policies)
    for n in e.notes:
        lines.append(f"note      {n}")
    lines.append(f"verdict   {e.verdict}" + ("" if e.routed else "  (not routed)"))
    return "\n".join(lines) + "\n"
