"""The parts of a DestinationRule's loadBalancer that shape where and how fast traffic
goes beyond the algorithm: `localityLbSetting` (which localities a proxy prefers) and
`warmup` / `warmupDurationSecs` (Envoy's slow start). Checked as Istio checks them,
errors naming the field.
"""

from __future__ import annotations

from typing import Any

from controlplane.model.destination_rule import LocalityLbSetting, Warmup
from controlplane.model.errors import Errors
from controlplane.model.fields import (
    as_bool,
    as_duration,
    as_int,
    as_list,
    as_map,
    as_str,
    reject_unknown_fields,
)

# Istio refuses these in failoverPriority next to `failover`: both would order regions.
_TOPOLOGY_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone",
                    "topology.istio.io/subzone")


def _as_number(value: Any, path: str, errs: Errors) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        errs.add(path, f"must be a number, got {value!r}")
        return None
    return float(value)


def parse_warmup(lb: dict[str, Any], path: str, errs: Errors) -> Warmup | None:
    """`warmup` wins over the older `warmupDurationSecs`, as in Istio."""
    if "warmup" in lb:
        wpath = f"{path}.warmup"
        w = as_map(lb["warmup"], wpath, errs)
        reject_unknown_fields(w, {"duration", "minimumPercent", "aggression"}, wpath, errs)
        if "duration" not in w:
            errs.add(f"{wpath}.duration", "is required")
        duration = as_duration(w.get("duration"), f"{wpath}.duration", errs)
        if duration is not None and duration <= 0:
            errs.add(f"{wpath}.duration", f"must be positive, got {w['duration']!r}")
        minimum = _as_number(w.get("minimumPercent"), f"{wpath}.minimumPercent", errs)
        if minimum is not None and not 0 <= minimum <= 100:
            errs.add(f"{wpath}.minimumPercent", f"must be between 0 and 100, got {minimum:g}")
        aggression = _as_number(w.get("aggression"), f"{wpath}.aggression", errs)
        if aggression is not None and aggression <= 0:
            errs.add(f"{wpath}.aggression", f"must be greater than 0, got {aggression:g}")
        if duration is None or duration <= 0:
            return None
        return Warmup(duration, 10.0 if minimum is None else minimum,
                      1.0 if aggression is None else aggression)
    if "warmupDurationSecs" in lb:
        duration = as_duration(lb["warmupDurationSecs"], f"{path}.warmupDurationSecs", errs)
        return Warmup(duration) if duration else None
    return None


def _locality_parts(locality: str) -> list[str] | None:
    """region, zone, subzone as given; None when one of them is empty ("a//c")."""
    parts = locality.split("/", 2)
    return None if any(not p for p in parts) else parts


def _check_localities(localities: list[tuple[str, str]], errs: Errors) -> None:
    """Istio's rules for the localities of `distribute`: a `*` only once and last, none
    empty, and none overlapping one given before (`us`, then `us/east`)."""
    seen: list[list[str]] = []
    for locality, path in localities:
        stars = locality.count("*")
        if stars and (stars > 1 or not locality.endswith("*")):
            errs.add(path, f"{locality!r}: a '*' may appear once, at the end")
            continue
        parts = _locality_parts(locality)
        if parts is None:
            errs.add(path, f"{locality!r}: region, zone and subzone must not be empty")
            continue
        for earlier in seen:
            if _overlap(earlier, parts):
                errs.add(path, f"{locality!r} overlaps {'/'.join(earlier)!r}, given before")
                break
        else:
            seen.append(parts)


def _overlap(a: list[str], b: list[str]) -> bool:
    for x, y in zip(a, b, strict=False):
        if "*" in (x, y):
            return True
        if x != y:
            return False
    return True  # one is a prefix of the other


def parse_locality_lb(raw: Any, path: str, errs: Errors) -> LocalityLbSetting:
    s = as_map(raw, path, errs)
    reject_unknown_fields(s, {"enabled", "distribute", "failover", "failoverPriority"}, path,
                          errs)
    if s.get("distribute") and s.get("failover"):
        errs.add(path, "use either distribute or failover, not both")
    distribute = []
    sources: list[tuple[str, str]] = []
    for i, d in enumerate(as_list(s.get("distribute"), f"{path}.distribute", errs)):
        dpath = f"{path}.distribute[{i}]"
        d = as_map(d, dpath, errs)
        reject_unknown_fields(d, {"from", "to"}, dpath, errs)
        source = as_str(d.get("from"), f"{dpath}.from", errs)
        sources.append((source, f"{dpath}.from"))
        weights = []
        for to, w in sorted(as_map(d.get("to"), f"{dpath}.to", errs).items(),
                            key=lambda kv: str(kv[0])):
            weight = as_int(w, f"{dpath}.to.{to}", errs, lo=1, hi=100)
            weights.append((str(to), weight or 0))
        total = sum(w for _, w in weights)
        if total != 100:
            errs.add(f"{dpath}.to", f"weights must add up to 100, got {total}")
        _check_localities([(to, f"{dpath}.to.{to}") for to, _ in weights], errs)
        distribute.append((source, tuple(weights)))
    _check_localities(sources, errs)
    failover = []
    for i, f in enumerate(as_list(s.get("failover"), f"{path}.failover", errs)):
        fpath = f"{path}.failover[{i}]"
        f = as_map(f, fpath, errs)
        reject_unknown_fields(f, {"from", "to"}, fpath, errs)
        source = as_str(f.get("from"), f"{fpath}.from", errs)
        to = as_str(f.get("to"), f"{fpath}.to", errs)
        if source == to:
            errs.add(fpath, "from and to must be different regions")
        for key, value in (("from", source), ("to", to)):
            if "/" in value:
                errs.add(f"{fpath}.{key}", f"{value!r}: failover names a region only")
            if "*" in value:
                errs.add(f"{fpath}.{key}", f"{value!r}: no '*' in a failover region")
        failover.append((source, to))
    priority = tuple(as_str(p, f"{path}.failoverPriority[{i}]", errs) for i, p in
                     enumerate(as_list(s.get("failoverPriority"), f"{path}.failoverPriority",
                                       errs)))
    if failover:
        for i, label in enumerate(priority):
            if label in _TOPOLOGY_LABELS:
                errs.add(f"{path}.failoverPriority[{i}]", f"{label!r} cannot be used with "
                         "failover, which already orders regions")
    return LocalityLbSetting(
        enabled=as_bool(s["enabled"], f"{path}.enabled", errs) if "enabled" in s else None,
        distribute=tuple(distribute), failover=tuple(failover), failover_priority=priority)
