"""The mesh config (Istio's MeshConfig in the `istio` ConfigMap of istio-system): parsed
as istiod reads it, carried by the store onto the Mesh, changing routes when it changes,
and translated into the outbound traffic policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from controlplane.model.errors import ValidationError
from controlplane.model.mesh_config import (
    ALLOW_ANY,
    REGISTRY_ONLY,
    ConfigMap,
    MeshConfig,
)
from controlplane.model.meta import Key
from controlplane.model.parse import parse_object
from controlplane.sources.files import FileSource
from controlplane.store import Store
from controlplane.translate import route_bases, route_configs
from controlplane.translation import MeshTranslation
from controlplane.xds import types
from tests.harness import write_yaml
from tests.manifests import mesh_config, service

MESH_KEY = Key("ConfigMap", "istio-system", "istio")


def parsed(mesh: str | dict[str, Any] | None) -> MeshConfig:
    obj = parse_object(mesh_config(mesh))
    assert isinstance(obj, ConfigMap)
    return obj.config


def test_istios_defaults_without_a_config_map_or_without_its_mesh_key() -> None:
    assert Store().mesh().config == MeshConfig()
    assert parsed(None) == MeshConfig() == parsed("") == parsed("{}")
    assert MeshConfig().outbound_traffic_policy == ALLOW_ANY


def test_the_fields_read_and_the_many_others_ignored() -> None:
    config = parsed({
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        "defaultVirtualServiceExportTo": ["."],
        "defaultDestinationRuleExportTo": [".", "istio-system"],
        "defaultServiceExportTo": ["*"],
        "rootNamespace": "mesh-root",
        # A MeshConfig has dozens of fields: istiod ignores what it does not know, and so
        # do we for everything we do not read.
        "enableTracing": True, "accessLogFile": "/dev/stdout",
        "defaultConfig": {"holdApplicationUntilProxyStarts": True}, "someFutureField": 3,
    })
    assert config == MeshConfig(
        outbound_traffic_policy=REGISTRY_ONLY, default_virtual_service_export_to=(".",),
        default_destination_rule_export_to=(".", "istio-system"),
        default_service_export_to=("*",), root_namespace="mesh-root")


@pytest.mark.parametrize(("mesh", "mode"), [
    ({"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}, ALLOW_ANY),
    ({"outboundTrafficPolicy": {"mode": 0}}, REGISTRY_ONLY),  # protobuf's enum numbers
    ({"outboundTrafficPolicy": {"mode": 1}}, ALLOW_ANY),
    ({"outboundTrafficPolicy": None}, ALLOW_ANY),  # null: the field left alone
    # Istio decodes the block into a fresh message: without `mode`, the enum's zero.
    ({"outboundTrafficPolicy": {}}, REGISTRY_ONLY),
], ids=["allow-any", "number-0", "number-1", "null", "empty-block"])
def test_outbound_traffic_policy_modes(mesh: dict[str, Any], mode: str) -> None:
    assert parsed(mesh).outbound_traffic_policy == mode


@pytest.mark.parametrize(("mesh", "message"), [
    ({"outboundTrafficPolicy": {"mode": "DENY"}},
     "data.mesh.outboundTrafficPolicy.mode: must be ALLOW_ANY or REGISTRY_ONLY, got 'DENY'"),
    ({"outboundTrafficPolicy": {"mode": "ALLOW_ANY_DYNAMIC_DNS"}},
     "data.mesh.outboundTrafficPolicy.mode: ALLOW_ANY_DYNAMIC_DNS is not served"),
    ({"outboundTrafficPolicy": "REGISTRY_ONLY"},
     "data.mesh.outboundTrafficPolicy: must be an object"),
    ({"defaultServiceExportTo": "."}, "data.mesh.defaultServiceExportTo: must be a list"),
    ({"defaultVirtualServiceExportTo": [1]},
     "data.mesh.defaultVirtualServiceExportTo[0]: must be a string"),
    ({"rootNamespace": "Not A Namespace"}, "data.mesh.rootNamespace: 'Not A Namespace'"),
    ("outboundTrafficPolicy: [unclosed", "data.mesh: invalid YAML"),
    ("- a list", "data.mesh: must be an object"),
], ids=["unknown-mode", "dynamic-dns", "policy-not-object", "export-not-list",
        "export-not-string", "root-namespace", "broken-yaml", "not-a-mapping"])
def test_wrong_values_of_the_fields_read_are_rejected_naming_the_field(
        mesh: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_object(mesh_config(mesh))
    assert str(info.value).startswith("ConfigMap istio-system/istio: "), info.value
    assert message in str(info.value)


def test_the_store_carries_it_onto_the_mesh_and_a_change_redoes_routes_only() -> None:
    store = Store()
    store.apply(parse_object(service("web", 80)))
    first = store.build()
    store.commit(first)
    assert first.config.outbound_traffic_policy == ALLOW_ANY
    store.apply(parse_object(mesh_config({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})))
    second = store.build()
    assert second.config.outbound_traffic_policy == REGISTRY_ONLY
    assert second.routes_changed and second.dirty == frozenset()  # clusters untouched
    store.commit(second)
    store.delete(MESH_KEY)  # gone: Istio's defaults again
    third = store.build()
    assert third.config == MeshConfig() and third.routes_changed


def _catch_all(translation: MeshTranslation) -> Any:
    [config] = route_configs(route_bases(translation.mesh), "default")
    return config.virtual_hosts[-1]


def test_the_catch_all_virtual_host_follows_the_mode() -> None:
    store = Store()
    store.apply(parse_object(service("web", 80)))
    mesh = store.build()
    store.commit(mesh)
    allow = _catch_all(MeshTranslation(mesh))
    assert (allow.name, list(allow.domains)) == ("allow_any", ["*"])
    assert allow.routes[0].route.cluster == "PassthroughCluster"
    store.apply(parse_object(mesh_config({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})))
    translation = MeshTranslation(store.build(), MeshTranslation(mesh))
    block = _catch_all(translation)
    assert (block.name, list(block.domains)) == ("block_all", ["*"])
    assert block.routes[0].direct_response.status == 502
    # Both catch-all clusters whatever the mode, as istiod sends them.
    names = {c.name for c in translation.messages(types.CLUSTER, None)}
    assert {"PassthroughCluster", "BlackHoleCluster"} <= names


def test_file_source_reads_the_istio_config_map_and_passes_others_by_quietly(
        tmp_path: Path) -> None:
    store = Store()
    write_yaml(tmp_path / "mesh.yaml",
               mesh_config({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
               {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app-settings", "namespace": "default"},
                "data": {"mesh": "not ours"}},
               mesh_config("outboundTrafficPolicy: {mode: nonsense}", ns="default"))
    source = FileSource(store, tmp_path)
    with structlog.testing.capture_logs() as logs:
        source.sync_once(settle=False)
    assert [k for k in store._objects] == [MESH_KEY]
    assert store.mesh().config.outbound_traffic_policy == REGISTRY_ONLY
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
    assert source.problems() == []


def test_an_invalid_mesh_config_is_rejected_and_the_last_good_one_kept(
        tmp_path: Path) -> None:
    store = Store()
    f = tmp_path / "mesh.yaml"
    write_yaml(f, mesh_config({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}))
    source = FileSource(store, tmp_path)
    source.sync_once(settle=False)
    write_yaml(f, mesh_config({"outboundTrafficPolicy": {"mode": "ALLOW_ALL"}}))
    with structlog.testing.capture_logs() as logs:
        source.sync_once()
        source.sync_once()
    [entry] = [e for e in logs if e["event"] == "object_rejected"]
    assert entry["object"] == "ConfigMap istio-system/istio"
    assert any("outboundTrafficPolicy.mode" in e for e in entry["errors"]), entry
    assert entry["kept"] == "previous version"
    assert store.mesh().config.outbound_traffic_policy == REGISTRY_ONLY
