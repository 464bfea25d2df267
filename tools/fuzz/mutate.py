"""A seeded, deterministic mutation engine over parsed-YAML objects.

A mutant is a seed file's documents with one VirtualService or DestinationRule changed by
one to three mutations: a value replaced by one chosen for its kind (durations,
percentages, header names and values, regexes, numbers, strings, wrong types), a key
deleted or renamed, a list item duplicated, or a field the object lacks inserted from a
small schema of Istio's optional fields. Mutant `i` of run seed `s` depends on nothing
else (its generator is seeded with both), so any finding replays alone.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Step = str | int
FieldPath = tuple[Step, ...]
SEEDS = Path(__file__).parent / "seeds"
TARGET_KINDS = ("VirtualService", "DestinationRule")

# -- value pools, by the kind of value a field holds ------------------------------------------

NUMBERS: list[Any] = [0, -1, -5, 1, 99, 100, 101, 65535, 65536, 2**31 - 1, 2**31, 2**32,
                      2**63, 10**30, 0.5, 1.5, -0.0001, 1e309, "NaN", "Infinity", "1e3",
                      "12", True]
STRINGS: list[Any] = [
    "", " ", "a" * 5000, "ünïcødé-✓", "名前", "a\x00b", "a\r\nb", "line\n", "%", "%%",
    "%FOO%", "%HOSTNAME%", "100%", "%START_TIME%%", "%REQ(x-a)%", "%REQ(", "\\", "\t",
    ".*", "(?x) a # comment", "\\Z", "a{1001}", "[0-9]{200}", "((((a))))", "(?=a)b",
    "(?<!a)b", "(a)\\1", "a++", "(?P<n>x)(?P=n)", "[", "*", "?", "(?i)ABC", "^$", "\\p{Greek}",
    "x" * 1025, "(a{1000}){1000}", "/", "/a b", "//", "/%2F", "..", "*.example.com", "-",
]
HEADER_NAMES: list[Any] = ["X-Upper", ":authority", ":path", ":method", "host", "Host",
                           "x y", "", " ", "x\x00y", "x\r\ny", "x:y", "ü", "a" * 300,
                           "content-length", "te", "connection", "x-ok", "*",
                           "@request.auth.claims.sub"]
HEADER_VALUES: list[Any] = ["", " ", "%", "%%", "%FOO%", "%HOSTNAME%", "a%b", "100%%",
                            "%START_TIME%%", "%REQ(:path)%", "%REQ(", "a\x00b", "a\r\nb",
                            "a\nb", "\t", "ü", "v" * 20000, 7, True, None]
DURATIONS: list[Any] = ["0s", "0", "1ns", "0.5ns", "999us", "1ms", "1.5ms", "0.0001s", "1",
                        "1.", ".5s", "-1s", "1 s", "1S", "1d", "99999999h", "2562047h",
                        "315576000001s", "9" * 400 + "s", "1" + "0" * 20 + "ms", "1h1h",
                        "1e3s", "NaN", "", 10, 1.5, None]
PERCENTS: list[Any] = [-5, -0.0001, 0, 0.00001, 0.0001, 50, 99.99999, 100, 100.5, 101, 1e309,
                       "50", None, 2**31, 2**32]
WRONG_TYPES: list[Any] = [None, True, False, [], [1], {}, {"a": 1}, "x", 3, 0.25, [[]],
                          [None], {"": None}]
STATUSES: list[Any] = [0, 100, 199, 200, 204, 301, 304, 399, 418, 499, 599, 600, 601, 999,
                       -1, 2**31]

_DURATION_KEYS = {"timeout", "perTryTimeout", "fixedDelay", "maxAge", "connectTimeout",
                  "time", "interval", "baseEjectionTime", "idleTimeout", "ttl",
                  "maxConnectionDuration", "exponentialDelay"}
_PERCENT_KEYS = {"mirrorPercent", "percent", "maxEjectionPercent", "minHealthPercent",
                 "weight"}
_STATUS_KEYS = {"httpStatus", "status", "redirectCode"}
_HEADER_MAPS = {"set", "add", "headers", "withoutHeaders", "queryParams"}
_HEADER_LISTS = {"remove", "allowHeaders", "exposeHeaders"}
_REGEX_KEYS = {"regex", "match"}



# -- the schema of optional fields that may be inserted ---------------------------------------
# (container pattern over the dotted path, field, valid-looking values). Stacked mutations
# then mutate inside what was inserted.
_ROUTE = re.compile(r"^spec\.http\.\d+$")
_TP = re.compile(r"^spec(\.subsets\.\d+)?\.trafficPolicy(\.portLevelSettings\.\d+)?$")
_LB = re.compile(r"\.loadBalancer$")
_CH = re.compile(r"\.consistentHash$")
_TCP_POOL = re.compile(r"\.connectionPool\.tcp$")
_HTTP_POOL = re.compile(r"\.connectionPool\.http$")
_MATCH = re.compile(r"^spec\.http\.\d+\.match\.\d+$")
_DEST = re.compile(r"\.destination$|\.mirror$")

SCHEMA: list[tuple[re.Pattern[str], str, list[Any]]] = [
    (_ROUTE, "fault", [{"delay": {"fixedDelay": "5s", "percentage": {"value": 10}}},
                       {"abort": {"httpStatus": 500, "percentage": {"value": 1}}},
                       {"abort": {"grpcStatus": "INTERNAL"}},
                       {"delay": {"fixedDelay": "1s", "percent": 50}}]),
    (_ROUTE, "mirror", [{"host": "audit"}, {"host": "shop", "subset": "next"}]),
    (_ROUTE, "mirrorPercentage", [{"value": 42.5}]),
    (_ROUTE, "mirrorPercent", [25]),
    (_ROUTE, "mirrors", [[{"destination": {"host": "audit"}, "percentage": {"value": 1}}]]),
    (_ROUTE, "retries", [{"attempts": 3}, {"attempts": 2, "perTryTimeout": "1s",
                                           "retryOn": "5xx,gateway-error"},
                         {"attempts": 1, "retryOn": "retriable-status-codes,418"}]),
    (_ROUTE, "timeout", ["15s", "250ms"]),
    (_ROUTE, "corsPolicy", [{"allowOrigins": [{"exact": "https://a.example"}],
                             "allowMethods": ["GET"], "maxAge": "1h"},
                            {"allowOrigins": [{"regex": "https://.*"}],
                             "allowCredentials": True, "exposeHeaders": ["x-a"]}]),
    (_ROUTE, "headers", [{"request": {"set": {"x-a": "1"}}},
                         {"response": {"add": {"x-b": "2"}, "remove": ["x-c"]}}]),
    (_ROUTE, "rewrite", [{"uri": "/new"}, {"authority": "other.example"},
                         {"uriRegexRewrite": {"match": "^/(.*)$", "rewrite": "/x/\\1"}}]),
    (_ROUTE, "redirect", [{"uri": "/moved"}, {"authority": "elsewhere", "redirectCode": 302},
                          {"derivePort": "FROM_REQUEST_PORT", "scheme": "https"}]),
    (_ROUTE, "directResponse", [{"status": 404}, {"status": 200, "body": {"string": "ok"}}]),
    (_ROUTE, "match", [[{"uri": {"prefix": "/p"}}], [{"headers": {"x-h": {"regex": "a.*"}}}]]),
    (_MATCH, "headers", [{"x-m": {"exact": "1"}}, {"x-n": {}}]),
    (_MATCH, "queryParams", [{"q": {"prefix": "a"}}]),
    (_MATCH, "method", [{"exact": "GET"}, {"regex": "GET|HEAD"}]),
    (_MATCH, "authority", [{"exact": "shop:8000"}]),
    (_MATCH, "ignoreUriCase", [True]),
    (_MATCH, "port", [8000]),
    (_MATCH, "withoutHeaders", [{"x-w": {"exact": "1"}}]),
    (_DEST, "port", [{"number": 8000}, {"number": 7000}]),
    (_DEST, "subset", ["stable", "gold", "nope"]),
    (_TP, "loadBalancer", [{"simple": "RANDOM"},
                           {"consistentHash": {"httpHeaderName": "x-u"}},
                           {"consistentHash": {"useSourceIp": True,
                                               "maglev": {"tableSize": 65537}}},
                           {"consistentHash": {"httpCookie": {"name": "c", "ttl": "0s"},
                                               "ringHash": {"minimumRingSize": 1024}}}]),
    (_TP, "connectionPool", [{"tcp": {"maxConnections": 5, "connectTimeout": "1s"}},
                             {"tcp": {"tcpKeepalive": {"time": "10s"}}},
                             {"http": {"http1MaxPendingRequests": 1, "idleTimeout": "5s"}}]),
    (_TP, "outlierDetection", [{"consecutive5xxErrors": 1, "interval": "1s",
                                "baseEjectionTime": "3m"},
                               {"consecutiveGatewayErrors": 2, "maxEjectionPercent": 100}]),
    # No file paths: the validating Envoy would look for them (SIMPLE with no CA uses the
    # system roots).
    (_TP, "tls", [{"mode": "ISTIO_MUTUAL"}, {"mode": "DISABLE"},
                  {"mode": "SIMPLE", "sni": "shop.example", "subjectAltNames": ["shop"]},
                  {"mode": "SIMPLE", "insecureSkipVerify": True}]),
    (_LB, "consistentHash", [{"httpHeaderName": "x-k"}, {"httpQueryParameterName": "k"}]),
    (_CH, "maglev", [{"tableSize": 65537}, {"tableSize": 1000}]),
    (_CH, "ringHash", [{"minimumRingSize": 2048}]),
    (_CH, "minimumRingSize", [512]),
    (_TCP_POOL, "tcpKeepalive", [{"time": "30s", "interval": "5s", "probes": 3}]),
    (_TCP_POOL, "connectTimeout", ["5s"]),
    (_TCP_POOL, "maxConnections", [100]),
    (_HTTP_POOL, "idleTimeout", ["60s"]),
    (_HTTP_POOL, "maxRequestsPerConnection", [1]),
    (_HTTP_POOL, "maxRetries", [5]),
]


@dataclass
class Seed:
    name: str  # file stem
    docs: list[dict[str, Any]]

    def targets(self) -> list[int]:
        return [i for i, d in enumerate(self.docs) if d.get("kind") in TARGET_KINDS]


@dataclass
class Mutant:
    index: int
    seed: str
    target: int  # which document of `docs` was mutated
    docs: list[dict[str, Any]]
    steps: list[str] = field(default_factory=list)  # what was done, for the report

    @property
    def doc(self) -> dict[str, Any]:
        return self.docs[self.target]

    def to_yaml(self) -> str:
        head = "".join(f"# {s}\n" for s in self.steps)
        return f"# mutant {self.index} of seed {self.seed}\n{head}" + yaml.safe_dump_all(
            self.docs, sort_keys=False, allow_unicode=True, width=1000)


def load_seeds(directory: Path = SEEDS) -> list[Seed]:
    seeds = []
    for path in sorted(directory.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        seeds.append(Seed(path.stem, docs))
    return seeds


# -- paths ------------------------------------------------------------------------------------

def walk(node: Any, path: FieldPath = ()) -> Iterator[tuple[FieldPath, Any]]:
    """Every value under `node` with its path (the node itself excluded)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*path, k), v
            yield from walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*path, i), v
            yield from walk(v, (*path, i))


def dotted(path: FieldPath) -> str:
    return ".".join(str(s) for s in path)


def get_at(doc: Any, path: FieldPath) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def set_at(doc: Any, path: FieldPath, value: Any) -> None:
    get_at(doc, path[:-1])[path[-1]] = value


# -- choosing a value for a position ---------------------------------------------------------

def _key_of(path: FieldPath) -> str:
    """The nearest mapping key along the path (list indexes skipped)."""
    return next((str(s) for s in reversed(path) if isinstance(s, str)), "")


def _pool_for(path: FieldPath, value: Any) -> list[Any]:
    key = _key_of(path)
    parent = str(path[-2]) if len(path) >= 2 else ""
    if key in _DURATION_KEYS:
        return DURATIONS
    if key == "value" and parent in ("percentage", "mirrorPercentage"):
        return PERCENTS
    if key in _PERCENT_KEYS:
        return PERCENTS
    if key in _STATUS_KEYS:
        return STATUSES
    if parent in ("set", "add") and isinstance(value, str):
        return HEADER_VALUES
    if key in _HEADER_LISTS and isinstance(path[-1], int):
        return HEADER_NAMES
    if key == "httpHeaderName":
        return HEADER_NAMES
    if key in _REGEX_KEYS and isinstance(value, str):
        return STRINGS
    if isinstance(value, bool):
        return WRONG_TYPES
    if isinstance(value, int | float):
        return NUMBERS
    if isinstance(value, str):
        return STRINGS
    return WRONG_TYPES


def _pick(rng: random.Random, pool: list[Any]) -> Any:
    # Now and then a value from anywhere: wrong types where a type is expected.
    if rng.random() < 0.08:
        pool = WRONG_TYPES + NUMBERS + STRINGS
    return copy.deepcopy(rng.choice(pool))


# -- operators -------------------------------------------------------------------------------

def _replace(rng: random.Random, spec_paths: list[tuple[FieldPath, Any]], doc: dict[str, Any]
             ) -> str | None:
    # Mostly leaves: a whole subtree replaced mostly tests "must be an object".
    leaves = [(p, v) for p, v in spec_paths if not isinstance(v, dict | list)]
    path, value = rng.choice(leaves if leaves and rng.random() < 0.85 else spec_paths)
    new = _pick(rng, _pool_for(path, value))
    set_at(doc, path, new)
    return f"replace {dotted(path)} = {_short(new)}"


def _delete(rng: random.Random, spec_paths: list[tuple[FieldPath, Any]], doc: dict[str, Any]
            ) -> str | None:
    path, _ = rng.choice(spec_paths)
    parent = get_at(doc, path[:-1])
    del parent[path[-1]]
    return f"delete {dotted(path)}"


def _rename_key(rng: random.Random, spec_paths: list[tuple[FieldPath, Any]],
                doc: dict[str, Any]) -> str | None:
    """A header name (or any map key) replaced, keeping its value."""
    keyed = [(p, v) for p, v in spec_paths if isinstance(p[-1], str) and len(p) >= 2
             and str(p[-2]) in _HEADER_MAPS]
    if not keyed:
        return None
    path, value = rng.choice(keyed)
    parent = get_at(doc, path[:-1])
    new_key = rng.choice(HEADER_NAMES)
    if not isinstance(new_key, str):
        return None
    del parent[path[-1]]
    parent[new_key] = value
    return f"rename key {dotted(path)} -> {_short(new_key)}"


def _duplicate(rng: random.Random, spec_paths: list[tuple[FieldPath, Any]],
               doc: dict[str, Any]) -> str | None:
    lists = [(p, v) for p, v in spec_paths if isinstance(v, list) and v]
    if not lists:
        return None
    path, value = rng.choice(lists)
    i = rng.randrange(len(value))
    value.insert(i, copy.deepcopy(value[i]))
    return f"duplicate {dotted(path)}[{i}]"


def _insert(rng: random.Random, spec_paths: list[tuple[FieldPath, Any]], doc: dict[str, Any]
            ) -> str | None:
    options = []
    for path, value in spec_paths:
        if not isinstance(value, dict):
            continue
        where = dotted(path)
        options += [(path, name, values) for pattern, name, values in SCHEMA
                    if pattern.search(where) and name not in value]
    if not options:
        return None
    path, name, values = rng.choice(options)
    new = copy.deepcopy(rng.choice(values))
    get_at(doc, path)[name] = new
    return f"insert {dotted((*path, name))} = {_short(new)}"


_OPERATORS: list[tuple[float, Callable[..., str | None]]] = [
    (0.50, _replace), (0.25, _insert), (0.10, _delete), (0.08, _rename_key),
    (0.07, _duplicate),
]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} chars)"


def mutate_doc(rng: random.Random, doc: dict[str, Any], count: int) -> list[str]:
    """Apply `count` mutations to `doc` in place (metadata/kind untouched); what was done."""
    steps: list[str] = []
    attempts = 0
    while len(steps) < count and attempts < 20:
        attempts += 1
        spec_paths = list(walk(doc.get("spec"), ("spec",)))
        if not spec_paths:
            doc["spec"] = {}
            spec_paths = [(("spec",), doc["spec"])]
        op = rng.choices([o for _, o in _OPERATORS], weights=[w for w, _ in _OPERATORS])[0]
        step = op(rng, spec_paths, doc)
        if step is not None:
            steps.append(step)
    return steps


def mutant(seeds: list[Seed], run_seed: int, index: int) -> Mutant:
    rng = random.Random(f"{run_seed}:{index}")
    seed = seeds[rng.randrange(len(seeds))]
    docs = copy.deepcopy(seed.docs)
    target = rng.choice(seed.targets())
    count = rng.choices((1, 2, 3), weights=(5, 3, 2))[0]
    steps = mutate_doc(rng, docs[target], count)
    return Mutant(index, seed.name, target, docs, steps)


def mutants(seeds: list[Seed], run_seed: int, n: int, start: int = 0) -> Iterator[Mutant]:
    for i in range(start, start + n):
        yield mutant(seeds, run_seed, i)
