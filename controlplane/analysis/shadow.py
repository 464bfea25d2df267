"""Which HTTP routes can never match: the shadowed-route decision, over the matches as
our translation hands them to Envoy (first matching route wins).

A request is a point in a space of dimensions: the path, each header (absent or a
value; `:method` and `:authority` are headers that are always there), each query
parameter (absent or a value), and the listener port. The client (sourceLabels,
sourceNamespace, gateways) is decided before the rest: a match covers a target only if
it applies to every client the target applies to, which is the case iff it applies to
the target's *least* client (labels exactly the target's sourceLabels, its
sourceNamespace or a namespace nobody names), since a client with more labels takes
more matches. A match is a box: per dimension a conjunction of literals (exact, prefix,
regex, present, each possibly negated — `withoutHeaders` — and, on the path,
case-insensitive with `ignoreUriCase`).

A target match T is covered by earlier matches E_1..E_n iff T ⊆ union(E_1 .. E_n). The
search splits T dimension by dimension into the finitely many regions the literals
induce on that dimension and checks each region recursively against the earlier matches
that contain it, so a union covers even where no single earlier match does. For exact
and prefix literals a finite set of values meets every region (`_string_values`: a walk
down the trie of the literals' values, with one fresh character wherever a value may
leave every literal), plus "absent" for headers and query parameters. The port takes
the host's port and `:authority` the values that reach the host's virtual host there
(when the caller gives its names): any case spelling of a name, since Envoy picks the
virtual host case-insensitively but matches `:authority` as sent.

Exact where it can be, sound where it cannot (a route called unreachable never is):

- A regex that is a plain string, or a plain string then ".*", is that exact or prefix
  literal (values never hold the newline "." leaves out). Any other regex literal on a
  dimension makes its regions unknown. When the target pins that
  dimension to one value (an exact literal), the regex is evaluated on that value with
  RE2, as Envoy does, and the decision stays exact. Otherwise candidate values (the
  finite set above plus samples of the target's own regex) are tried for a request that
  proves the target reachable; failing that, an earlier match counts as covering the
  dimension only when it provably contains the target's constraint there (no constraint,
  the same literal, a shorter prefix, presence); a verdict that needs more is UNKNOWN.
- Case-insensitive path literals (`ignoreUriCase`) fold ASCII letters, as Envoy's
  matchers do; mixed with case-sensitive ones the regions are still enumerated exactly
  (the walk in `_string_values` follows both cases where that matters).
- Paths are taken as written: Envoy normalizes paths (`normalize_path`), so a literal
  holding `/./`, `/../` or percent-escapes is compared as if it could be received.
- A header sent twice is one value joined by "," for Envoy, just another string here.

Pure: reads model types only; the checks turn verdicts into findings.
"""

from __future__ import annotations

import enum
import importlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import re2

from controlplane.model.istio_common import StringMatch
from controlplane.model.virtual_service import HTTPMatch, HTTPRoute, query_presence

PATH = ("path", "")
PORT = ("port", "")
METHOD = ("header", ":method")
AUTHORITY = ("header", ":authority")
Dim = tuple[str, str]  # ("path", ""), ("header", name), ("query", name), ("port", "")
Value = str | None  # None: the header or query parameter is absent

# Characters to continue a value with when a region needs a fresh one: safe in a path,
# a header value and a query value.
_FRESH = "zqxjkwvy0123456789ZQXJKWVY_-~"
_BUDGET = 200_000  # search steps per target; past it the verdict is UNKNOWN
# Python's regex parser (private, typed Any): only to sample strings a regex matches.
_sre: Any = importlib.import_module("re._parser")


def _parse(pattern: str) -> Any:
    """Python's parse of an RE2 pattern. RE2 syntax such as `[[:alpha:]]` makes Python
    warn of its own future semantics (FutureWarning "Possible nested set"), which is
    noise about a pattern Python never runs: that warning is dropped, for this call
    only; every other warning still shows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _sre.parse(pattern)


@dataclass(frozen=True)
class Lit:
    kind: str  # "exact", "prefix", "regex", "present"
    value: str = ""
    negated: bool = False  # withoutHeaders: Envoy's invert_match
    ci: bool = False  # case-insensitive (a path with ignoreUriCase)

    def holds(self, v: Value) -> bool:
        if v is None:
            # Envoy: a missing header matches only an inverted presence check; a missing
            # query parameter matches nothing.
            return self.negated and self.kind == "present"
        return self._on(v) != self.negated

    def _on(self, v: str) -> bool:
        if self.kind == "present":
            return True
        if self.kind == "regex":
            return _regex(self.value, self.ci).fullmatch(v) is not None
        a, b = (_fold(v), _fold(self.value)) if self.ci else (v, self.value)
        return a == b if self.kind == "exact" else a.startswith(b)

    def __str__(self) -> str:
        text = "present" if self.kind == "present" else f"{self.kind} {self.value!r}"
        return ("not " if self.negated else "") + text + (" (any case)" if self.ci else "")


Box = dict[Dim, tuple[Lit, ...]]  # a match: per dimension a conjunction; absent: any


@lru_cache(maxsize=1024)
def _regex(pattern: str, ci: bool) -> re2._Regexp:
    return re2.compile(f"(?i){pattern}" if ci else pattern)


def _fold(s: str) -> str:
    """ASCII case folding, as Envoy's case-insensitive matchers compare."""
    return s.translate(_LOWER)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _has_letters(s: str) -> bool:
    return any(c.isascii() and c.isalpha() for c in s)


def _lit(m: StringMatch | None, negated: bool = False) -> Lit:
    """A header's, method's, authority's or query parameter's match (case-sensitive)."""
    if m is None:
        return Lit("present", negated=negated)
    if m.kind == "regex":
        return _regex_lit(m.value, negated)
    return Lit(m.kind, m.value, negated)


_UNICODE, _DOTALL = 32, 16  # Python's parser flags a plain pattern may carry


def _regex_lit(pattern: str, negated: bool = False) -> Lit:
    """A case-sensitive regex as the exact or prefix literal it equals, where it is one:
    plain characters ("/a/b": exact), or plain characters then ".*" ("/api/.*":
    prefix), optionally between ^ and $. (No value a request carries holds a newline,
    the one character "." leaves out.) Anything else stays a regex."""
    try:
        parsed = _parse(pattern)
    except Exception:  # an RE2-only construct: a regex it stays
        return Lit("regex", pattern, negated)
    items = list(parsed)
    if items and str(items[0][0]) == "AT" and str(items[0][1]) == "AT_BEGINNING":
        items = items[1:]
    if items and str(items[-1][0]) == "AT" and str(items[-1][1]) == "AT_END":
        items = items[:-1]
    kind = "exact"
    if items and str(items[-1][0]) == "MAX_REPEAT" and items[-1][1][:2] == (0, _sre.MAXREPEAT) \
            and [str(op) for op, _ in items[-1][1][2]] == ["ANY"]:
        kind, items = "prefix", items[:-1]
    if parsed.state.flags & ~(_UNICODE | _DOTALL) or \
            not all(str(op) == "LITERAL" for op, _ in items):
        return Lit("regex", pattern, negated)
    value = "".join(chr(arg) for _, arg in items)
    # A cheap cross-check that RE2 reads the pattern the same way.
    probe = _regex(pattern, False)
    if probe.fullmatch(value) is None or (kind == "prefix") != (
            probe.fullmatch(value + "z/") is not None):
        return Lit("regex", pattern, negated)
    return Lit(kind, value, negated)


def box(m: HTTPMatch | None) -> Box:
    """A match as translate/routes.py emits it (route_match), as constraints: both read
    the path's case rules and the query's presence rule from the model."""
    out: dict[Dim, list[Lit]] = {}
    if m is None:
        return {}

    def add(dim: Dim, lit: Lit) -> None:
        out.setdefault(dim, []).append(lit)

    if m.uri_regex is not None:
        # With ignoreUriCase it carries "(?i)" (RE2 folds Unicode, so it stays a regex).
        add(PATH, _regex_lit(m.uri_regex))
    elif m.uri is not None:  # exact and prefix: ignoreUriCase compares ASCII-folded
        add(PATH, Lit(m.uri.kind, m.uri.value, False,
                      not m.uri_case_sensitive and _has_letters(m.uri.value)))
    for name, hm in m.headers:
        add(("header", name.lower()), _lit(hm))
    for name, hm in m.without_headers:
        add(("header", name.lower()), _lit(hm, negated=True))
    if m.method is not None:
        add(METHOD, _lit(m.method))
    if m.authority is not None:
        add(AUTHORITY, _lit(m.authority))
    for name, qm in m.query_params:
        add(("query", name), Lit("present") if query_presence(qm) else _lit(qm))
    if m.port is not None:
        add(PORT, Lit("exact", str(m.port)))
    return {d: tuple(lits) for d, lits in out.items()}


# -- the client ----------------------------------------------------------------------------

_NOBODYS = "\x00"  # a namespace no match names


def sidecars_take(m: HTTPMatch | None) -> bool:
    """Whether any sidecar takes the match (gateways without "mesh": none does)."""
    return m is None or not m.gateways or "mesh" in m.gateways


def covers_clients(earlier: HTTPMatch | None, target: HTTPMatch | None) -> bool:
    """Whether `earlier` applies to every sidecar `target` applies to: it does iff it
    applies to the target's least client."""
    if earlier is None:
        return True
    labels: frozenset[tuple[str, str]]
    if target is None or target.gateways:
        labels, namespace = frozenset(), _NOBODYS  # every sidecar
    else:
        labels, namespace = target.source_labels, target.source_namespace or _NOBODYS
    return earlier.applies_to(labels, namespace)


# -- values per dimension ------------------------------------------------------------------

@dataclass(frozen=True)
class Space:
    """What the host's requests can carry: its HTTP ports and the names a client may
    send as the Host, each in any case spelling (empty: any value, which only makes the
    decision more cautious)."""

    ports: tuple[int, ...] = ()
    authorities: tuple[str, ...] = ()


@lru_cache(maxsize=4096)
def _string_values(lits: tuple[Lit, ...], base: str) -> tuple[tuple[str, ...], bool]:
    """One value in every region the exact and prefix literals induce (complete): a walk
    down the trie of their values, case-sensitive ones as written and case-insensitive
    ones folded. At each node t the next characters that keep some literal alive are
    followed, plus one fresh character that keeps none (any other continuation of t
    meets exactly the literals t+fresh meets). An uppercase letter is followed besides
    its folded form only where a case-sensitive literal continues with the lowercase
    one: elsewhere both cases meet the same literals. `base` ("/" for a path) is a
    literal every value starts with."""
    cs = {lit.value for lit in lits if lit.kind in ("exact", "prefix") and not lit.ci}
    ci = {_fold(lit.value) for lit in lits if lit.kind in ("exact", "prefix") and lit.ci}
    if base:
        cs.add(base)
    out: list[str] = []
    complete = True
    stack = [""]
    while stack:
        t = stack.pop()
        out.append(t)
        n, ft = len(t), _fold(t)
        cs_next = {a[n] for a in cs if len(a) > n and a.startswith(t)}
        ci_next = {a[n] for a in ci if len(a) > n and a.startswith(ft)}
        chars = cs_next | ci_next
        chars |= {c.upper() for c in ci_next if c in cs_next and c != c.upper()}
        taken = {_fold(c) for c in chars}
        fresh = next((c for c in _FRESH if _fold(c) not in taken), None)
        if fresh is None:
            complete = False
        else:
            out.append(t + fresh)
        stack.extend(t + c for c in chars)
        if len(out) > 5_000:  # literals this many: give up on exactness, stay sound
            complete = False
            break
    # Non-empty values first: a witness with a header of some value reads better.
    return tuple(sorted((v for v in out if v.startswith(base)),
                        key=lambda v: (not v, v))), complete


def _regex_samples(lits: Iterable[Lit]) -> list[str]:
    out = []
    for lit in lits:
        if lit.kind == "regex" and not lit.negated:
            for extra in (0, 1):
                s = _sample(lit.value, extra)
                if s is not None and lit.holds(s):
                    out.append(s)
    return out


def _sample(pattern: str, extra: int) -> str | None:
    """A string the regex matches (repetitions at their minimum plus `extra`); None when
    the pattern uses what this small sampler does not know."""
    try:
        return _emit(_parse(pattern), extra)
    except Exception:  # an RE2-only construct, or one not handled: no sample
        return None


def _emit(items: Iterable[tuple[Any, Any]], extra: int) -> str:
    out = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "ANY":
            out.append("z")
        elif name == "IN":
            out.append(_one_of(arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, hi, sub = arg
            n = min(lo + extra, hi)
            out.append(_emit(sub, extra) * n)
        elif name == "SUBPATTERN":
            out.append(_emit(arg[-1], extra))
        elif name == "BRANCH":
            out.append(_emit(arg[1][0], extra))
        elif name == "AT":
            continue
        else:
            raise ValueError(name)
    return "".join(out)


def _one_of(items: list[tuple[Any, Any]]) -> str:
    if items and str(items[0][0]) == "NEGATE":
        raise ValueError("negated class")
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            return {"CATEGORY_DIGIT": "0", "CATEGORY_WORD": "a"}[str(arg)]
    raise ValueError("class")


def _candidates(dim: Dim, target: Sequence[Lit], earlier: Sequence[Lit], space: Space
                ) -> tuple[list[Value], bool]:
    """Values to try on a dimension, and whether they meet every region (complete)."""
    finite: list[Value]
    if dim == PORT:
        known = sorted({int(lit.value) for lit in (*target, *earlier)})
        finite = [str(p) for p in space.ports or [*known, max(known, default=0) + 1]]
        return finite, True
    lits = tuple(dict.fromkeys([*target, *earlier]))
    if dim == AUTHORITY and space.authorities:
        return _authorities(target, lits, space.authorities)
    absent: list[Value] = [None] if dim[0] in ("header", "query") and dim not in (
        METHOD, AUTHORITY) else []
    pinned = [lit.value for lit in target
              if lit.kind == "exact" and not lit.negated and not lit.ci]
    if pinned:  # one value: every literal, regexes too, is evaluated on it exactly
        if dim == PATH and not pinned[0].startswith("/"):
            return [], True  # no request has that path
        return [pinned[0]], True
    regex = any(lit.kind == "regex" for lit in lits)
    base = "/" if dim == PATH else ""
    strings, complete = _string_values(lits, base)
    values: list[Value] = list(strings)
    if regex:
        values += _regex_samples(target)
    # Real methods first, so a witness is a request any client can send.
    common = ["GET", "POST", "PUT", "DELETE", "PATCH"] if dim == METHOD else []
    seen = list(dict.fromkeys([*absent, *common, *values]))
    return seen, complete and not regex


def _authorities(target: Sequence[Lit], lits: tuple[Lit, ...], names: tuple[str, ...]
                 ) -> tuple[list[Value], bool]:
    """The `:authority` values that reach the host's virtual host: Envoy picks the
    virtual host on the ASCII-lowercased Host, but header matchers see it as sent, so
    any string whose fold is one of the names. One case-insensitive exact literal per
    name makes that set a union of the literals' regions; the walk then yields one value
    in each, and those outside the names are dropped."""
    folded = {_fold(n) for n in names}
    pinned = [lit.value for lit in target
              if lit.kind == "exact" and not lit.negated and not lit.ci]
    if pinned:
        return ([pinned[0]] if _fold(pinned[0]) in folded else []), True
    strings, complete = _string_values(
        tuple(dict.fromkeys([*lits, *(Lit("exact", n, ci=True) for n in sorted(folded))])), "")
    values: list[Value] = [v for v in strings if _fold(v) in folded]
    regex = any(lit.kind == "regex" for lit in lits)
    if regex:
        values += [v for v in _regex_samples(target) if _fold(v) in folded]
    # The names as written first, so a witness reads like a request a client sends.
    values = list(dict.fromkeys([*(n for n in names if n in values), *values]))
    return values, complete and not regex


def _implies(target: Sequence[Lit], lit: Lit) -> bool:
    """Whether every value meeting `target` meets `lit` (only what can be proved
    cheaply: the same literal, a shorter prefix, presence)."""
    if lit in target:
        return True
    for t in target:
        if t.negated:
            continue
        if lit.kind == "present" and not lit.negated:
            return True
        if lit.kind == "prefix" and not lit.negated and t.kind in ("exact", "prefix"):
            if lit.ci or t.ci:
                folded_ok = _fold(t.value).startswith(_fold(lit.value))
                if folded_ok and (lit.ci or not _has_letters(lit.value)):
                    return True
            elif t.value.startswith(lit.value):
                return True
    return False


# -- the search ----------------------------------------------------------------------------

class Outcome(enum.Enum):
    COVERED = "covered"
    REACHABLE = "reachable"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Request:
    """A request that reaches a route: what a test sends to prove it."""

    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()  # without :method and :authority
    query: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    authority: str = ""  # "": any name of the host
    port: int | None = None  # None: any port of the host
    # The least client it holds for: sourceLabels and sourceNamespace ("": any).
    source_labels: frozenset[tuple[str, str]] = frozenset()
    source_namespace: str = ""


@dataclass
class _Result:
    outcome: Outcome
    by: set[int] = field(default_factory=set)  # covered: the earlier matches used
    witness: dict[Dim, Value] | None = None


class _Search:
    def __init__(self, target: Box, space: Space) -> None:
        self.target = target
        self.space = space
        self.steps = 0

    def run(self, dims: list[Dim], i: int, earlier: list[tuple[int, Box]],
            chosen: dict[Dim, Value]) -> _Result:
        self.steps += 1
        if self.steps > _BUDGET:
            return _Result(Outcome.UNKNOWN)
        rest = dims[i:]
        for idx, e in earlier:
            if not any(e.get(d) for d in rest):
                return _Result(Outcome.COVERED, {idx})
        if i == len(dims):
            return _Result(Outcome.REACHABLE, witness=dict(chosen))
        dim = dims[i]
        want = self.target.get(dim, ())
        values, complete = _candidates(dim, want, [lit for _, e in earlier
                                                   for lit in e.get(dim, ())], self.space)
        by: set[int] = set()
        unknown = False
        for v in values:
            if not all(lit.holds(v) for lit in want):
                continue
            inside = [(idx, e) for idx, e in earlier
                      if all(lit.holds(v) for lit in e.get(dim, ()))]
            r = self.run(dims, i + 1, inside, {**chosen, dim: v})
            if r.outcome is Outcome.REACHABLE:
                return r
            if r.outcome is Outcome.UNKNOWN:
                unknown = True
            by |= r.by
        if complete:
            return _Result(Outcome.UNKNOWN) if unknown else _Result(Outcome.COVERED, by)
        # Regions unknown: an earlier match covers this dimension only where it provably
        # contains the target's constraint; whatever is left undecided is UNKNOWN.
        proved = [(idx, {d: lits for d, lits in e.items() if d != dim}) for idx, e in earlier
                  if all(_implies(want, lit) for lit in e.get(dim, ()))]
        r = self.run(dims, i + 1, proved, {**chosen, dim: None})
        return r if r.outcome is Outcome.COVERED else _Result(Outcome.UNKNOWN)


def cover(target: Box, earlier: Sequence[Box], space: Space = Space()) -> _Result:
    """Whether the earlier boxes cover `target` (their indexes), or a request in the
    target outside all of them."""
    dims = sorted({*target, *(d for e in earlier for d in e)},
                  key=lambda d: (d not in target, d))
    return _Search(target, space).run(dims, 0, list(enumerate(earlier)), {})


# -- per route -----------------------------------------------------------------------------

MatchRef = tuple[int, int | None]  # (route index, match index; None: a route without)


@dataclass(frozen=True)
class MatchVerdict:
    match: int | None  # the match's index in its route; None: the route has none
    outcome: Outcome
    covered_by: tuple[MatchRef, ...] = ()  # COVERED: the earlier matches that do
    witness: Request | None = None  # REACHABLE: a request this match takes


@dataclass(frozen=True)
class RouteVerdict:
    route: int
    outcome: Outcome  # COVERED: unreachable; REACHABLE: a witness reaches it
    covered_by: tuple[MatchRef, ...] = ()  # COVERED: earlier routes' matches that cover it
    matches: tuple[MatchVerdict, ...] = ()  # per match (only matches sidecars take)
    witness: Request | None = None

    @property
    def ineffective(self) -> tuple[MatchVerdict, ...]:
        """Matches covered by earlier ones while the route itself is not unreachable."""
        if self.outcome is Outcome.COVERED:
            return ()
        return tuple(m for m in self.matches if m.outcome is Outcome.COVERED)


def _request(w: dict[Dim, Value], m: HTTPMatch | None, space: Space) -> Request:
    headers = tuple((d[1], v) for d, v in sorted(w.items(), key=lambda x: x[0])
                    if d[0] == "header" and d not in (METHOD, AUTHORITY) and v is not None)
    query = tuple((d[1], v) for d, v in sorted(w.items(), key=lambda x: x[0])
                  if d[0] == "query" and v is not None)
    # Dimensions nothing constrains take the space's first port and name, if any.
    port = w.get(PORT) or (str(space.ports[0]) if space.ports else None)
    authority = w.get(AUTHORITY) or (space.authorities[0] if space.authorities else "")
    return Request(path=w.get(PATH) or "/", headers=headers, query=query,
                   method=w.get(METHOD) or "GET", authority=authority,
                   port=int(port) if port is not None else None,
                   source_labels=m.source_labels if m and not m.gateways else frozenset(),
                   source_namespace=m.source_namespace if m and not m.gateways else "")


def _entries(routes: Sequence[HTTPRoute]) -> list[tuple[MatchRef, HTTPMatch | None]]:
    """Every route's matches in Envoy's order (a route without matches: one that
    matches everything), only those some sidecar takes."""
    out: list[tuple[MatchRef, HTTPMatch | None]] = []
    for i, route in enumerate(routes):
        if not route.matches:
            out.append(((i, None), None))
        for k, m in enumerate(route.matches):
            if sidecars_take(m):
                out.append(((i, k), m))
    return out


def _against(target: HTTPMatch | None, before: Sequence[tuple[MatchRef, HTTPMatch | None]],
             space: Space) -> tuple[Outcome, tuple[MatchRef, ...], Request | None]:
    kept = [(ref, m) for ref, m in before if covers_clients(m, target)]
    r = cover(box(target), [box(m) for _, m in kept], space)
    if r.outcome is Outcome.COVERED:
        # Name an irredundant cover: drop each match the others cover without.
        used = sorted(r.by)
        for i in reversed(list(used)):
            rest = [j for j in used if j != i]
            if cover(box(target), [box(kept[j][1]) for j in rest],
                     space).outcome is Outcome.COVERED:
                used = rest
        return r.outcome, tuple(kept[i][0] for i in used), None
    if r.outcome is Outcome.REACHABLE:
        assert r.witness is not None
        return r.outcome, (), _request(r.witness, target, space)
    return r.outcome, (), None


def decide(routes: Sequence[HTTPRoute], space: Space = Space()) -> list[RouteVerdict]:
    """A verdict per route (routes no sidecar takes get none): unreachable with the
    earlier matches covering it, reachable with a request that reaches it, or unknown
    (a regex or mixed-case literal left the question open)."""
    entries = _entries(routes)
    out = []
    for i in range(len(routes)):
        own = [(ref, m) for ref, m in entries if ref[0] == i]
        if not own:
            continue
        earlier_routes = [(ref, m) for ref, m in entries if ref[0] < i]
        verdicts = []
        for n, (ref, m) in enumerate(own):
            # Envoy's order: earlier routes, then this route's earlier matches.
            outcome, by, witness = _against(m, earlier_routes + own[:n], space)
            verdicts.append(MatchVerdict(ref[1], outcome, by, witness))
        reachable = next((v for v in verdicts if v.outcome is Outcome.REACHABLE), None)
        if reachable is not None:
            out.append(RouteVerdict(i, Outcome.REACHABLE, (), tuple(verdicts),
                                    reachable.witness))
        elif all(v.outcome is Outcome.COVERED for v in verdicts):
            # Each match is inside earlier routes' matches (its own earlier matches
            # are, in turn): name those.
            names: set[MatchRef] = set()
            for (_, m), v in zip(own, verdicts, strict=True):
                outcome, refs, _ = _against(m, earlier_routes, space)
                # (Left open only where the sound fallback needs the route's own
                # earlier match to see it: those matches' covers stand in.)
                names.update(refs if outcome is Outcome.COVERED
                          else (r for r in v.covered_by if r[0] != i))
            out.append(RouteVerdict(i, Outcome.COVERED, tuple(sorted(names, key=_order)),
                                    tuple(verdicts)))
        else:
            out.append(RouteVerdict(i, Outcome.UNKNOWN, (), tuple(verdicts)))
    return out


def _order(ref: MatchRef) -> tuple[int, int]:
    return ref[0], -1 if ref[1] is None else ref[1]


def decide_in(routes: Sequence[HTTPRoute], spaces: Sequence[Space]) -> list[RouteVerdict]:
    """The verdicts over several request spaces (a host's ports, each with the names
    a client may send there; several hosts): a route is unreachable, or a match
    ineffective, only if so in every space; reachable if so in any (its witness)."""
    per_space = [{v.route: v for v in decide(routes, s)} for s in spaces]
    out = []
    for i in sorted({i for verdicts in per_space for i in verdicts}):
        vs = [verdicts[i] for verdicts in per_space if i in verdicts]
        matches = tuple(_joined_match([m for v in vs for m in v.matches if m.match == k])
                        for k in dict.fromkeys(m.match for v in vs for m in v.matches))
        reachable = next((v for v in vs if v.outcome is Outcome.REACHABLE), None)
        if reachable is not None:
            out.append(RouteVerdict(i, Outcome.REACHABLE, (), matches, reachable.witness))
        elif all(v.outcome is Outcome.COVERED for v in vs):
            by = tuple(sorted({r for v in vs for r in v.covered_by}, key=_order))
            out.append(RouteVerdict(i, Outcome.COVERED, by, matches))
        else:
            out.append(RouteVerdict(i, Outcome.UNKNOWN, (), matches))
    return out


def _joined_match(vs: list[MatchVerdict]) -> MatchVerdict:
    reachable = next((v for v in vs if v.outcome is Outcome.REACHABLE), None)
    if reachable is not None:
        return reachable
    if all(v.outcome is Outcome.COVERED for v in vs):
        by = tuple(sorted({r for v in vs for r in v.covered_by}, key=_order))
        return MatchVerdict(vs[0].match, Outcome.COVERED, by)
    return MatchVerdict(vs[0].match, Outcome.UNKNOWN)
