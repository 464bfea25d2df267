"""Translator golden files: tests/golden/<case>/in.yaml -> out.<type>.json.

One case per feature, each in.yaml opening with a comment saying which. Regenerate after
an intended change, then review the diff:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

Every case's output is also loaded into a real Envoy (`--mode validate`), so a golden
file can never pin a config Envoy would reject: all cases in one run, each under names
of its own (tools/fuzz/envoy.py), as one Envoy start costs more than the checks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from controlplane.bootstrap import SIDECAR_RUNTIME
from controlplane.model.mesh import build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.model.proxy import ProxyView
from controlplane.translate import route_bases, route_configs
from controlplane.translation import MeshTranslation, route_config_bodies
from controlplane.xds import types
from controlplane.xds.cache import serialize
from tests.harness import envoy_binary
from tools.fuzz.envoy import Validator, to_static

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "in.yaml").exists())
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def translate_case(case: str) -> tuple[dict[str, list[Any]], list[str]]:
    docs = [d for d in yaml.safe_load_all((GOLDEN / case / "in.yaml").read_text()) if d]
    objs = [parse_object(d) for d in docs]
    mesh = build_mesh({key_of(o): o for o in objs})
    proxy_file = GOLDEN / case / "proxy.yaml"
    p = yaml.safe_load(proxy_file.read_text()) if proxy_file.exists() else {}
    proxy = ProxyView(node_id="golden", namespace=p.get("namespace", "default"),
                      instance_ips=(p["instance_ip"],) if p.get("instance_ip") else (),
                      locality=p.get("locality", ""),
                      labels=frozenset((p.get("labels") or {}).items()))
    translation = MeshTranslation(mesh)
    # Through the bytes the cache publishes (route configurations arrive serialized).
    out = {t: [types.decode(t, serialize(m))
               for m in translation.messages(t, translation.group_key(t, proxy))]
           for t in types.PUSH_ORDER}
    return out, list(mesh.problems)


def as_json(messages: list[Any]) -> str:
    return json.dumps([json_format.MessageToDict(m, preserving_proto_field_name=True)
                       for m in messages], indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    out, problems = translate_case(case)
    # Secrets only where a case has some (credentialName).
    files = {f"out.{types.short(t).lower()}.json": as_json(m) for t, m in out.items()
             if m or t != types.SECRET}
    files["out.problems.txt"] = "".join(f"{p}\n" for p in problems)
    for name, text in files.items():
        path = GOLDEN / case / name
        if UPDATE:
            path.write_text(text)
        assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 pytest {__file__}"
        assert text == path.read_text(), f"{case}/{name} differs from the translator output"


def validation_bootstrap(out: dict[str, list[Any]]) -> dict[str, Any]:
    """The case as static config: EDS clusters become STATIC with their assignment and
    listeners carry their route configuration inline, so Envoy checks all four types."""
    assignments = {c.cluster_name: c for c in out[types.ENDPOINT]}
    routes = {r.name: r for r in out[types.ROUTE]}
    clusters = []
    for c in out[types.CLUSTER]:
        d = json_format.MessageToDict(c)
        if "edsClusterConfig" in d:
            d.pop("edsClusterConfig")
            d["type"] = "STATIC"
            d["loadAssignment"] = json_format.MessageToDict(assignments[c.name])
        clusters.append(d)
    listeners = []
    for listener in out[types.LISTENER]:
        for chain in [listener.default_filter_chain, *listener.filter_chains]:
            for f in chain.filters:
                if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    hcm.route_config.CopyFrom(routes[hcm.rds.route_config_name])
                    f.typed_config.Pack(hcm)
        listeners.append(json_format.MessageToDict(listener))
    return {"static_resources": {"clusters": clusters, "listeners": listeners},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 0}}},
            "layered_runtime": SIDECAR_RUNTIME}


@pytest.fixture(scope="module")
def envoy_rejections() -> dict[int, str]:
    """Case index -> Envoy's message, for each case Envoy rejects (one run if none)."""
    statics = [to_static(i, translate_case(case)[0]) for i, case in enumerate(CASES)]
    # From the checkout's root, where the cases' certificate paths are relative to.
    return Validator(envoy_binary(), cwd=GOLDEN.parent.parent).rejected(statics)


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES)
def test_golden_output_passes_envoy_validation(case: str, envoy_rejections: dict[int, str]
                                               ) -> None:
    assert CASES.index(case) not in envoy_rejections, envoy_rejections[CASES.index(case)]


@pytest.mark.parametrize("case", CASES)
def test_route_bytes_are_the_messages_serialized(case: str) -> None:
    """The published route configurations (assembled from per-host bytes) are exactly
    what serializing the messages gives, for every namespace of the case."""
    docs = [d for d in yaml.safe_load_all((GOLDEN / case / "in.yaml").read_text()) if d]
    mesh = build_mesh({key_of(o): o for o in map(parse_object, docs)})
    bases = route_bases(mesh)
    for ns in {s.meta.namespace for s in mesh.services.values()} | {"elsewhere"}:
        assert ([c.body for c in route_config_bodies(bases, ns)]
                == [c.SerializeToString(deterministic=True)
                    for c in route_configs(bases, ns)]), ns
