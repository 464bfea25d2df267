"""Envoy's matching, as pure functions over a config dump's JSON: which filter chain
takes a connection, which virtual host a Host selects, and whether a route matches a
request (and if not, the first condition that failed, in words). Each follows the Envoy
source it names, so explain predicts what the proxy does rather than what a rule says."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import re2

from controlplane.explain.dump import Json
from controlplane.explain.request import Request

_RE2 = re2.Options()
_RE2.log_errors = False
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(s: str) -> str:
    """Envoy's case folding (absl::AsciiStrToLower): A-Z only, so `É` and `é` differ."""
    return s.translate(_ASCII_LOWER)


def regex_full_match(pattern: str, value: str) -> bool:
    """Envoy's RegexMatcher (google_re2): the whole value must match."""
    try:
        return re2.compile(pattern, _RE2).fullmatch(value) is not None
    except re2.error:
        return False


def string_match(m: Json, value: str) -> bool:
    """envoy.type.matcher.v3.StringMatcher (common/common/matchers.cc)."""
    if "safe_regex" in m:
        return regex_full_match(m["safe_regex"].get("regex", ""), value)
    ignore = bool(m.get("ignore_case"))
    v = ascii_lower(value) if ignore else value
    for kind in ("exact", "prefix", "suffix", "contains"):
        if kind in m:
            want = ascii_lower(str(m[kind])) if ignore else str(m[kind])
            if kind == "exact":
                return v == want
            if kind == "prefix":
                return v.startswith(want)
            if kind == "suffix":
                return v.endswith(want)
            return want in v
    return False


def describe_string_match(m: Json) -> str:
    if "safe_regex" in m:
        return f"matches regex {m['safe_regex'].get('regex', '')!r}"
    for kind, words in (("exact", "is"), ("prefix", "starts with"), ("suffix", "ends with"),
                        ("contains", "contains")):
        if kind in m:
            return f"{words} {m[kind]!r}" + (" (any case)" if m.get("ignore_case") else "")
    return "matches (unknown matcher)"


def _legacy_header_match(h: Json) -> Json | None:
    """Envoy's deprecated HeaderMatcher fields, as the string matcher they amount to."""
    for old, new in (("exact_match", "exact"), ("prefix_match", "prefix"),
                     ("suffix_match", "suffix"), ("contains_match", "contains")):
        if old in h:
            return {new: h[old]}
    if "safe_regex_match" in h:
        return {"safe_regex": h["safe_regex_match"]}
    return None


def header_matches(h: Json, req: Request) -> bool:
    """HeaderUtility::matchHeaders: a missing header matches only a present_match that
    asks for absence (or, inverted, presence) unless treat_missing_header_as_empty; all
    values of a repeated header are joined with ","."""
    invert = bool(h.get("invert_match"))
    value = req.header(h.get("name", ""))
    present = "present_match" in h
    if value is None and not h.get("treat_missing_header_as_empty"):
        if invert:
            return present and bool(h["present_match"])
        return present and not h["present_match"]
    value = value or ""
    if present:
        match = bool(h["present_match"])
    elif "string_match" in h:
        match = string_match(h["string_match"], value)
    elif (legacy := _legacy_header_match(h)) is not None:
        match = string_match(legacy, value)
    elif "range_match" in h:
        r = h["range_match"]
        try:
            match = int(r.get("start", 0)) <= int(value) < int(r.get("end", 0))
        except ValueError:
            match = False
    else:
        match = True  # a matcher with no value: presence
    return match != invert


def describe_header(h: Json) -> str:
    name = h.get("name", "")
    if "present_match" in h:
        present = bool(h["present_match"]) != bool(h.get("invert_match"))
        return f"header {name} {'present' if present else 'absent'}"
    m = h.get("string_match") or _legacy_header_match(h) or {}
    text = f"header {name} {describe_string_match(m)}"
    return f"not ({text})" if h.get("invert_match") else text


def query_matches(q: Json, req: Request) -> bool:
    """QueryParameterMatcher: the parameter's first value; present_match needs it present."""
    value = next((v for n, v in req.query() if n == q.get("name")), None)
    if value is None:
        return False
    if q.get("present_match"):
        return True
    if "string_match" in q:
        return string_match(q["string_match"], value)
    return True


def describe_query(q: Json) -> str:
    name = q.get("name", "")
    if q.get("present_match") or "string_match" not in q:
        return f"query {name} present"
    return f"query {name} {describe_string_match(q['string_match'])}"


def path_condition(match: Json) -> str:
    case = "" if match.get("case_sensitive", True) else " (any case)"
    if "prefix" in match:
        return f"prefix {match['prefix']!r}{case}"
    if "path" in match:
        return f"path {match['path']!r}{case}"
    if "safe_regex" in match:
        return f"path regex {match['safe_regex'].get('regex', '')!r}"
    if "path_separated_prefix" in match:
        return f"path-separated prefix {match['path_separated_prefix']!r}{case}"
    return "path (unknown matcher)"


def path_matches(match: Json, path: str) -> bool:
    """The route's path condition (router/config_impl.cc: Prefix/Path/Regex/
    PathSeparatedPrefixRouteEntryImpl) on the normalized path without its query."""
    sensitive = match.get("case_sensitive", True)
    p = path if sensitive else ascii_lower(path)

    def c(s: str) -> str:
        return s if sensitive else ascii_lower(s)
    if "prefix" in match:
        return p.startswith(c(match["prefix"]))
    if "path" in match:
        return p == c(match["path"])
    if "safe_regex" in match:
        return regex_full_match(match["safe_regex"].get("regex", ""), path)
    if "path_separated_prefix" in match:
        prefix = c(match["path_separated_prefix"])
        return p == prefix or p.startswith(prefix + "/")
    return False


def route_mismatch(match: Json, req: Request) -> str | None:
    """None when the route matches the request, else the first condition that failed,
    in Envoy's order (path, then headers, query parameters, runtime fraction). The
    request's path is as the routes see it (`paths.handle_path` has been applied)."""
    path = req.path_only()
    if not path_matches(match, path):
        return f"{path_condition(match)} does not match path {path!r}"
    for h in match.get("headers", []):
        if not header_matches(h, req):
            got = req.header(h.get("name", ""))
            return f"{describe_header(h)}: " + ("absent" if got is None else f"got {got!r}")
    for q in match.get("query_parameters", []):
        if not query_matches(q, req):
            got = next((v for n, v in req.query() if n == q.get("name")), None)
            return f"{describe_query(q)}: " + ("absent" if got is None else f"got {got!r}")
    if "grpc" in match and "grpc" not in (req.header("content-type") or ""):
        return "only gRPC requests (content-type application/grpc)"
    return None


def match_conditions(match: Json) -> list[str]:
    """What a route asks of a request, in words."""
    out = [path_condition(match)]
    out += [describe_header(h) for h in match.get("headers", [])]
    out += [describe_query(q) for q in match.get("query_parameters", [])]
    if "runtime_fraction" in match:
        out.append(f"{fraction_percent(match['runtime_fraction'].get('default_value', {}))}%"
                   " of requests (runtime fraction)")
    return out


def fraction_percent(f: Json) -> float:
    """A FractionalPercent as a percentage (the denominator defaults to HUNDRED)."""
    scale = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}[
        f.get("denominator", "HUNDRED")]
    return int(f.get("numerator", 0)) * 100 / scale


# -- virtual hosts ----------------------------------------------------------------------

def select_virtual_host(vhosts: Iterable[Json], authority: str
                        ) -> tuple[Json, str, str] | None:
    """RouteMatcher::findVirtualHost: a copy of the Host lowercased (ASCII; the request's
    :authority itself keeps its case for header matchers); an exact domain first, then the
    longest suffix wildcard (`*.example.com`, `*-bar.example.com`; the `*` must cover at
    least one character), then the longest prefix wildcard (`example.*`), then `*`.
    Returns (virtual host, the domain that matched, how)."""
    host = ascii_lower(authority)
    exact: dict[str, Json] = {}
    suffixes: list[tuple[str, Json]] = []
    prefixes: list[tuple[str, Json]] = []
    default: Json | None = None
    for vh in vhosts:
        for domain in vh.get("domains", []):
            d = ascii_lower(domain)
            if d == "*":
                default = default or vh
            elif d.startswith("*"):
                suffixes.append((d[1:], vh))
            elif d.endswith("*"):
                prefixes.append((d[:-1], vh))
            else:
                exact.setdefault(d, vh)
    if host in exact:
        return exact[host], host, "exact domain"
    # Envoy keeps wildcards in maps ordered by length, longest first; among equals the
    # first configured wins (a domain twice is rejected anyway).
    for suffix, vh in sorted(suffixes, key=lambda s: -len(s[0])):
        if len(host) > len(suffix) and host.endswith(suffix):
            return vh, "*" + suffix, "suffix wildcard"
    for prefix, vh in sorted(prefixes, key=lambda s: -len(s[0])):
        if len(host) > len(prefix) and host.startswith(prefix):
            return vh, prefix + "*", "prefix wildcard"
    if default is not None:
        return default, "*", "catch-all domain"
    return None


# -- listeners and filter chains --------------------------------------------------------

def listener_address(listener: Json) -> tuple[str, int]:
    sa = listener.get("address", {}).get("socket_address", {})
    return str(sa.get("address", "")), int(sa.get("port_value", 0))


def _in_prefix(ip: str, r: Json) -> int | None:
    """The prefix length if `ip` is in the CidrRange, else None."""
    try:
        length = int(r.get("prefix_len", 0) or 0)
        net = ipaddress.ip_network(f"{r.get('address_prefix', '')}/{length}", strict=False)
        return length if ipaddress.ip_address(ip) in net else None
    except ValueError:
        return None


def _sni_rank(names: list[str], sni: str) -> int | None:
    """How specifically a chain's server_names take `sni`: an exact name beats the longest
    wildcard (`*.example.com`); None if they do not take it. No names: any SNI (-1)."""
    if not names:
        return -1
    best: int | None = None
    for n in names:
        if n == sni:
            return 1 << 16
        if n.startswith("*.") and sni.endswith(n[1:]) and len(sni) > len(n) - 1:
            best = max(best or 0, len(n))
    return best


def select_filter_chain(listener: Json, dest_ip: str, sni: str, transport: str
                        ) -> tuple[Json | None, str]:
    """FilterChainManagerImpl's order, criterion by criterion (destination port, then the
    most specific destination prefix, server name, transport protocol); the default chain
    when none is left. Returns (chain, why)."""
    candidates: list[Json] = list(listener.get("filter_chains", []))
    _, port = listener_address(listener)

    def narrow(score: Any) -> None:
        nonlocal candidates
        scored = [(score(c.get("filter_chain_match", {})), c) for c in candidates]
        scored = [(s, c) for s, c in scored if s is not None]
        if not scored:
            candidates = []
            return
        top = max(s for s, _ in scored)
        candidates = [c for s, c in scored if s == top]

    narrow(lambda m: 1 if m.get("destination_port") == port else
           (0 if not m.get("destination_port") else None))
    narrow(lambda m: -1 if not m.get("prefix_ranges") else max(
        (x for r in m["prefix_ranges"] if (x := _in_prefix(dest_ip, r)) is not None),
        default=None))
    narrow(lambda m: _sni_rank(list(m.get("server_names", [])), sni))
    narrow(lambda m: 1 if m.get("transport_protocol") == transport else
           (0 if not m.get("transport_protocol") else None))
    if candidates:
        m = candidates[0].get("filter_chain_match", {})
        why = []
        if m.get("prefix_ranges"):
            why.append(f"destination {dest_ip} in " + ", ".join(
                f"{r.get('address_prefix')}/{r.get('prefix_len', 0)}"
                for r in m["prefix_ranges"]))
        if m.get("server_names"):
            why.append(f"SNI {sni!r} in {m['server_names']}")
        if m.get("transport_protocol"):
            why.append(f"transport {m['transport_protocol']}")
        return candidates[0], "; ".join(why) or "a chain with no conditions"
    if "default_filter_chain" in listener:
        if not listener.get("filter_chains"):
            return listener["default_filter_chain"], "the default chain (the only one)"
        return listener["default_filter_chain"], "no filter chain matches: the default chain"
    return None, "no filter chain matches and the listener has no default chain"
