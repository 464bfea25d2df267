"""Running it for real: the Dockerfile, docker-compose.yml and the Kubernetes manifests.

There is no Docker engine here, so the container files are checked for what can be
checked without one: the Dockerfile's settings, its build context and the wheel its
builder stage makes; every file the compose file mounts exists, every Envoy bootstrap it
uses is what `controlplane bootstrap` gives and passes `envoy --mode validate`, and its
config directory loads with no errors and matches the compose network's addresses.

The Kubernetes manifests are applied (kustomization.yaml's resources, as `kubectl apply -k`
would; by kubectl itself too when it is installed) to a real API server, with strict field
validation, and read back. The ClusterRole is compared with the kinds the watcher watches,
and the control plane then runs with the ServiceAccount's own token.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from controlplane import cli
from controlplane.bootstrap import split_address
from controlplane.demo.story import MANIFESTS, copy_tree
from controlplane.model.mesh_config import MESH_CONFIG_MAP, ROOT_NAMESPACE
from controlplane.model.meta import Key
from controlplane.samples import traffic, workload
from controlplane.sources.files import FileSource
from controlplane.sources.kubernetes import (
    CONFIG_MAPS,
    ENDPOINT_SLICES,
    ENDPOINTS,
    ISTIO_VERSIONS,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICES,
    istio_collections,
    load_api_client,
)
from controlplane.store import Store
from tests.harness import ControlPlane, envoy_binary, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
KUBERNETES = ROOT / "config" / "kubernetes"
EXAMPLE = KUBERNETES / "example"
DEMO_MANIFESTS = ROOT / "controlplane" / "demo" / "manifests"
PORTS = {"xds": 15010, "admin": 15011, "http": 15014}
WEBHOOK_PORT = 15017  # in the Deployment only: the image's CMD has no certificate to serve


def envoy_validate(config: Path) -> None:
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{config}: {result.stdout[-2000:]}{result.stderr[-2000:]}"


def serve_args(argv: list[str]) -> Any:
    args = cli.parser().parse_args(argv)
    assert args.command == "serve", argv
    return args


def load_config_dir(directory: Path) -> tuple[Store, list[dict[str, Any]]]:
    """The directory as `controlplane serve --config-dir` loads it, and the log events."""
    with structlog.testing.capture_logs() as logs:
        store = Store()
        FileSource(store, directory).sync_once(settle=False)
    return store, logs


def assert_loads_cleanly(directory: Path) -> Store:
    store, logs = load_config_dir(directory)
    bad = [e for e in logs if e["log_level"] in ("warning", "error", "critical")]
    assert not bad, bad
    ignored = [e for e in logs if e["event"] == "document_ignored"]
    assert not ignored, ignored
    assert store.objects(), f"{directory}: nothing loaded"
    assert store.mesh().problems == (), store.mesh().problems
    return store


def generated_by_comment(path: Path, text: str | None = None) -> tuple[list[str], str]:
    """A generated file says which command made it, in a comment line
    `#   controlplane ARGS`; returns (ARGS, the text after the leading comments)."""
    text = path.read_text() if text is None else text
    lines = text.splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith("#")]
    body = "".join(lines[len(header):]) if lines[:len(header)] == header else None
    assert body is not None, f"{path}: comments must come first"
    commands = [ln[1:].strip() for ln in header if ln[1:].strip().startswith("controlplane ")]
    assert len(commands) == 1, f"{path}: no `# controlplane ...` line saying how it was made"
    return shlex.split(commands[0])[1:], body


def run_bootstrap(args: list[str], tmp_path: Path) -> str:
    out = tmp_path / f"bootstrap-{uuid.uuid4().hex[:6]}.yaml"
    assert cli.main([*args, "-o", str(out)]) == 0
    return out.read_text()


# -- Dockerfile -------------------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    out = []
    for item in logical:
        instruction, _, rest = item.strip().partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction, rest in dockerfile():
        if instruction == "FROM":
            result.append([])
        if result:
            result[-1].append((instruction, rest))
    return result


def build_args() -> dict[str, str]:
    args = {}
    for instruction, rest in dockerfile():
        if instruction == "FROM":
            break
        if instruction == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def one(stage: list[tuple[str, str]], instruction: str) -> str:
    found = [rest for i, rest in stage if i == instruction]
    assert len(found) == 1, f"{instruction}: {found}"
    return found[0]


def test_dockerfile_multi_stage_slim_non_root_entrypoint_ports_healthcheck() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "multi-stage: a builder stage and a final one"
    args = build_args()
    for stage in all_stages:
        image = one(stage, "FROM").split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.1[1-9]-slim", image), image
    final = all_stages[-1]
    builder = one(all_stages[0], "FROM").split()[-1]
    assert any(i == "COPY" and f"--from={builder}" in rest for i, rest in final), (
        "the final stage copies what the builder made")
    user = one(final, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: numeric (for runAsNonRoot), not root"
    exposed = {int(p.split("/")[0]) for p in one(final, "EXPOSE").split()}
    assert exposed == set(PORTS.values())
    assert json.loads(one(final, "ENTRYPOINT")) == ["controlplane"]
    cmd = serve_args(json.loads(one(final, "CMD")))
    # Reachable from outside the container: every listener on all interfaces.
    for name, port in PORTS.items():
        assert getattr(cmd, f"{name}_address") == f"0.0.0.0:{port}", name
    healthcheck = one(final, "HEALTHCHECK")
    options, _, check = healthcheck.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(check)
    assert argv[:2] == ["python", "-c"] and "urllib" in argv[2], argv
    assert f"127.0.0.1:{PORTS['http']}/healthz" in argv[2], argv[2]


def test_the_healthcheck_command_passes_on_a_live_control_plane_and_fails_without(
        tmp_path: Path) -> None:
    argv = json.loads(one(stages()[-1], "HEALTHCHECK").partition(" CMD ")[2])
    plane = ControlPlane(tmp_path)
    try:
        check = argv[2].replace(f":{PORTS['http']}/", f":{plane.http_port}/")
        assert subprocess.run([sys.executable, "-c", check], timeout=30).returncode == 0
    finally:
        plane.stop()
    check = argv[2].replace(f":{PORTS['http']}/", f":{free_port()}/")
    assert subprocess.run([sys.executable, "-c", check], capture_output=True,
                          timeout=30).returncode != 0


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per line of .dockerignore, as Docker reads it: paths relative
    to the context, `*` within a path segment, `**` across segments, `!` re-includes;
    the last matching line decides, and a line matching a directory covers its
    contents."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip("/"))
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i:end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((exclude, re.compile(regex)))
    return patterns


def in_context(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for exclude, regex in patterns:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = exclude
    return not excluded


def context_files() -> list[str]:
    patterns = dockerignore_patterns()
    found = []
    for root, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), ROOT)
            if in_context(relative, patterns):
                found.append(relative)
    return sorted(found)


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv/bin/python", ".git/HEAD", "tests/test_deploy.py",
                 "controlplane/__pycache__/cli.cpython-311.pyc", "docker-compose.yml"):
        assert not in_context(path, patterns), f"{path} is sent to the Docker daemon"
    files = context_files()
    for stage in stages():
        for instruction, rest in stage:
            if instruction != "COPY" or "--from=" in rest:
                continue
            *sources, _destination = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert any(f == source or f.startswith(source.rstrip("/") + "/")
                           for f in files), f"COPY {source}: excluded by .dockerignore"
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "controlplane").rglob("*.py")}
    sources |= {str(p.relative_to(ROOT)) for p in DEMO_MANIFESTS.glob("*.yaml")}
    assert sources <= set(files), sources - set(files)


def test_the_builder_stage_makes_a_wheel_with_every_module(tmp_path: Path) -> None:
    """What the builder's RUN lines do, on a copy of the build context: the requirements
    from pyproject.toml, and a wheel holding the whole package (the sample apps of
    docker-compose.yml, the generated admin API and the demo's manifests included)."""
    context = tmp_path / "context"
    for relative in context_files():
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, context / relative)
    [requirements_run] = [rest for i, rest in stages()[0]
                          if i == "RUN" and "requirements.txt" in rest and "tomllib" in rest]
    extract = requirements_run.split("&&")[0].strip()
    assert extract.startswith("python -c ")
    subprocess.run(["sh", "-c", shlex.quote(sys.executable) + extract[len("python"):]],
                   cwd=context, check=True, timeout=60)
    import tomllib

    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert (context / "requirements.txt").read_text().split("\n")[:-1] == expected
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheels"), "."],
                   cwd=context, check=True, timeout=300, capture_output=True)
    [wheel] = (tmp_path / "wheels").glob("controlplane-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "controlplane").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules <= names, modules - names
    manifests = {str(p.relative_to(ROOT)) for p in DEMO_MANIFESTS.glob("*.yaml")}
    assert manifests and manifests <= names, f"package data missing: {manifests - names}"
    assert any(n.endswith("entry_points.txt") for n in names)


# -- docker-compose.yml -----------------------------------------------------------------------

def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path, for the bind mounts of a service."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        assert source.startswith("./"), f"{volume}: a bind mount of this repository"
        out[target] = (COMPOSE.parent / source).resolve()
    return out


def is_envoy(service: dict[str, Any]) -> bool:
    return service.get("image", "").startswith("envoyproxy/envoy:")


def address_of(services: dict[str, Any], name: str) -> str:
    """A service's fixed address (through network_mode: service:X, that of X)."""
    service = services[name]
    mode = service.get("network_mode", "")
    if mode.startswith("service:"):
        return address_of(services, mode.partition(":")[2])
    return service["networks"]["mesh"]["ipv4_address"]


def test_compose_mounts_exist_and_every_container_has_a_fixed_address() -> None:
    spec = compose()
    services = spec["services"]
    subnet = ipaddress.ip_network(spec["networks"]["mesh"]["ipam"]["config"][0]["subnet"])
    assert subnet.is_private
    addresses = []
    for name, service in services.items():
        for target, source in mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
        mode = service.get("network_mode", "")
        if mode:
            assert mode.startswith("service:") and mode[8:] in services, (name, mode)
            continue
        addresses.append(ipaddress.ip_address(service["networks"]["mesh"]["ipv4_address"]))
        assert addresses[-1] in subnet, (name, addresses[-1])
        if not is_envoy(service):
            assert service["image"] == "controlplane:0.1.0" and service["build"] == ".", name
            assert service.get("read_only") is True and service.get("cap_drop") == ["ALL"]
    assert len(addresses) == len(set(addresses)), "every address is one container's"
    assert [s for s in services.values() if is_envoy(s)], "Envoy sidecars"


def test_compose_sidecars_bootstraps_are_generated_valid_and_point_at_the_control_plane(
        tmp_path: Path) -> None:
    services = compose()["services"]
    xds = serve_args(services["controlplane"]["command"]).xds_address
    sidecars = {name: s for name, s in services.items() if is_envoy(s)}
    assert len(sidecars) >= 2
    for name, service in sidecars.items():
        assert service["image"].startswith("envoyproxy/envoy:v1.40"), service["image"]
        argv = service["command"]
        config = mounts(service)[argv[argv.index("-c") + 1]]
        envoy_validate(config)
        args, body = generated_by_comment(config)
        assert run_bootstrap(args, tmp_path) == body, (
            f"{config} is not what `controlplane {shlex.join(args)}` gives: regenerate it")
        boot = yaml.safe_load(body)
        # Outbound listeners bind the sidecar's address: that of the app it sits beside.
        assert boot["node"]["metadata"]["INSTANCE_IPS"] == address_of(services, name)
        [endpoint] = boot["static_resources"]["clusters"][0]["load_assignment"]["endpoints"]
        socket = endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert socket["address"] in services, "the control plane's compose service name"
        assert socket["port_value"] == split_address(xds, 0)[1]


def test_compose_config_dir_loads_with_no_errors_and_its_pods_are_the_workloads() -> None:
    services = compose()["services"]
    plane = services["controlplane"]
    config = mounts(plane)[serve_args(plane["command"]).config_dir]
    assert_loads_cleanly(config)
    workloads = {}
    for name, service in services.items():
        if service.get("entrypoint") == ["python", "-m", "controlplane.samples.workload"]:
            args = workload.parser().parse_args(service["command"])
            workloads[address_of(services, name)] = (name, args)
    docs = [d for p in sorted(config.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    pods = [d for d in docs if d["kind"] == "Pod"]
    assert {p["status"]["podIP"] for p in pods} == set(workloads), "a container per pod"
    for pod in pods:
        name, args = workloads[pod["status"]["podIP"]]
        labels = pod["metadata"]["labels"]
        assert (name, args.pod, args.service, args.version) == (
            pod["metadata"]["name"], pod["metadata"]["name"], labels["app"],
            labels["version"]), name
        svc = find(docs, "Service", labels["app"])
        assert {p["targetPort"] for p in svc["spec"]["ports"]} == {args.port}
    # The client apps call through their own sidecar.
    clients = {n: s for n, s in services.items()
               if s.get("entrypoint") == ["python", "-m", "controlplane.samples.traffic"]}
    assert clients
    for name, service in clients.items():
        args = traffic.parser().parse_args(service["command"])
        assert args.sidecar.rpartition(":")[0] == address_of(services, name)


def test_compose_config_is_the_demo_config_at_the_compose_addresses() -> None:
    """File by file (a user may have copied an example in while trying it)."""
    def normalized(path: Path) -> list[Any]:
        docs = []
        for doc in yaml.safe_load_all(path.read_text()):
            ip = doc.get("status", {}).get("podIP")
            if ip:
                doc["status"]["podIP"] = ip.rsplit(".", 1)[1]
            docs.append(doc)
        return docs
    compose_config = mounts(compose()["services"]["controlplane"])["/config"]
    for demo_file in sorted(DEMO_MANIFESTS.glob("*.yaml")):
        assert normalized(compose_config / demo_file.name) == normalized(demo_file), (
            demo_file.name)


@pytest.mark.parametrize("example", sorted(
    (ROOT / "config" / "compose" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_compose_example_virtualservices_load_cleanly(example: Path, tmp_path: Path) -> None:
    shutil.copytree(mounts(compose()["services"]["controlplane"])["/config"], tmp_path / "c")
    shutil.copy(example, tmp_path / "c" / "reviews-virtualservice.yaml")
    store = assert_loads_cleanly(tmp_path / "c")
    assert store.get(Key("VirtualService", "default", "reviews")) is not None


def test_the_demo_reads_its_manifests_through_the_package_and_they_load_cleanly(
        tmp_path: Path) -> None:
    """What `controlplane demo` serves by default: the manifests as importlib.resources
    reads them from the package (as from an installed wheel), every file and byte."""
    copy_tree(MANIFESTS, tmp_path / "config")
    copied = {p.name: p.read_bytes() for p in (tmp_path / "config").iterdir()}
    assert copied == {p.name: p.read_bytes() for p in DEMO_MANIFESTS.iterdir()}
    assert {"services.yaml", "pods.yaml", "db.yaml"} <= set(copied)
    assert_loads_cleanly(tmp_path / "config")


# -- Kubernetes manifests ---------------------------------------------------------------------

# kubectl's (kustomize's) apply order for the kinds used here; anything else comes last.
KIND_ORDER = ["Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
              "ClusterRoleBinding", "ConfigMap", "Service", "Deployment"]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize DIR` gives for the subset of kustomization.yaml used here
    (a `resources` list of files and directories), in kubectl's apply order."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(spec) - {"apiVersion", "kind", "resources"}
    assert not unsupported, f"{directory}: teach this loader {unsupported} first"
    assert spec["kind"] == "Kustomization"
    docs: list[dict[str, Any]] = []
    for resource in spec["resources"]:
        path = directory / resource
        if path.is_dir():
            docs += kustomize(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return sorted(docs, key=lambda d: KIND_ORDER.index(d["kind"])
                  if d["kind"] in KIND_ORDER else len(KIND_ORDER))


def manifests() -> list[dict[str, Any]]:
    return kustomize(KUBERNETES) + kustomize(EXAMPLE)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def test_kustomizations_list_every_manifest_of_their_directory() -> None:
    for directory in (KUBERNETES, EXAMPLE):
        listed = yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
        files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert set(listed) == files, directory
        for doc in kustomize(directory):
            assert doc["apiVersion"] and doc["metadata"]["name"], doc
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
             for d in manifests()]
    assert len(names) == len(set(names))


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl (Debian's package, on this project's machines) is not "
                           "installed; the test loader's own tests cover the same manifests")
@pytest.mark.parametrize("directory", [KUBERNETES, EXAMPLE], ids=["controlplane", "example"])
def test_kubectl_kustomize_agrees_with_the_test_loader(directory: Path) -> None:
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    def key(d: dict[str, Any]) -> str:
        return json.dumps(d, sort_keys=True)
    assert sorted(map(key, yaml.safe_load_all(result.stdout))) == sorted(
        map(key, kustomize(directory)))


def watched_resources() -> set[tuple[str, str]]:
    """(API group, resource) of every collection the Kubernetes source may watch whole
    (the mesh config's ConfigMap is asked for by name: NAMED_RESOURCES)."""
    collections = [SERVICES, PODS, ENDPOINTS, ENDPOINT_SLICES, NAMESPACES, SECRETS]
    for version in ISTIO_VERSIONS:
        collections += istio_collections(version)
    return {(c.api_version.rpartition("/")[0], c.plural) for c in collections}


# Resources read by name only: (group, resource) -> the names.
NAMED_RESOURCES = {("", CONFIG_MAPS.plural): [MESH_CONFIG_MAP]}


def test_cluster_role_grants_get_list_watch_on_exactly_the_watched_kinds() -> None:
    docs = kustomize(KUBERNETES)
    role = find(docs, "ClusterRole")
    granted = set()
    named = {}
    for rule in role["rules"]:
        assert sorted(rule["verbs"]) == ["get", "list", "watch"], rule
        pairs = {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
        if "resourceNames" in rule:
            assert set(rule) == {"apiGroups", "resources", "resourceNames", "verbs"}, rule
            named |= {pair: rule["resourceNames"] for pair in pairs}
            continue
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no URLs
        granted |= pairs
    assert granted == watched_resources()
    assert named == NAMED_RESOURCES
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    binding = find(docs, "ClusterRoleBinding")
    account = find(docs, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", **{
        k: account["metadata"][k] for k in ("name", "namespace")}}]
    crds = {d["spec"]["names"]["plural"] for d in docs
            if d["kind"] == "CustomResourceDefinition"}
    assert crds == {r for g, r in watched_resources() if g == "networking.istio.io"}


def check_deployment(deployment: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """The control plane's Deployment: probes, resources, least privilege, and args
    `controlplane serve` accepts, on the ports the Service targets."""
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security.get("privileged") in (None, False)
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        port = container[probe]["httpGet"]["port"]
        assert ports.get(port, port) == PORTS["http"], probe
    args = serve_args(container["args"])
    assert not args.config_dir and not args.kubeconfig, "in-cluster config"
    assert args.xds_address == f"0.0.0.0:{PORTS['xds']}"
    assert args.http_address == f"0.0.0.0:{PORTS['http']}"
    assert args.webhook_address == f"0.0.0.0:{WEBHOOK_PORT}"
    service = find(docs, "Service", deployment["metadata"]["name"])
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    targets = {ports.get(p["targetPort"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert targets == {PORTS["xds"], PORTS["http"], WEBHOOK_PORT}
    check_webhook_wiring(deployment, service, docs)


def check_webhook_wiring(deployment: dict[str, Any], service: dict[str, Any],
                         docs: list[dict[str, Any]]) -> None:
    """The webhook configuration calls the Service port that leads to --webhook-address,
    and the certificate files are those of the (optional) Secret volume."""
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = serve_args(container["args"])
    [volume] = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["optional"] is True, "the pod must start without the Secret"
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert {args.webhook_cert, args.webhook_key} == {
        f"{mount['mountPath']}/tls.crt", f"{mount['mountPath']}/tls.key"}
    config = find(docs, "ValidatingWebhookConfiguration")
    named = {p["name"]: p for p in container["ports"]}
    for hook in config["webhooks"]:
        assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        ref = hook["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"]) == (
            service["metadata"]["name"], service["metadata"]["namespace"])
        assert ref["path"] == "/validate"
        [port] = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
        assert named[port["targetPort"]]["containerPort"] == WEBHOOK_PORT


def test_deployment_probes_resources_and_least_privilege() -> None:
    docs = kustomize(KUBERNETES)
    check_deployment(find(docs, "Deployment"), docs)


def test_example_sidecar_bootstrap_is_generated_valid_and_reaches_the_service(
        tmp_path: Path) -> None:
    docs = manifests()
    deployment = find(docs, "Deployment", "productpage")
    pod = deployment["spec"]["template"]["spec"]
    [sidecar] = [c for c in pod["containers"] if c["image"].startswith("envoyproxy/envoy:")]
    assert sidecar["command"] == ["envoy"]
    config_path = Path(sidecar["args"][sidecar["args"].index("-c") + 1])
    [mount] = [m for m in sidecar["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = find(docs, "ConfigMap", volume["configMap"]["name"])
    text = configmap["data"][config_path.name]
    (tmp_path / "envoy.yaml").write_text(text)
    envoy_validate(tmp_path / "envoy.yaml")
    source = EXAMPLE / "envoy-bootstrap.yaml"
    args, _ = generated_by_comment(source, "".join(
        ln for ln in source.read_text().splitlines(keepends=True) if ln.startswith("#")))
    assert run_bootstrap(args, tmp_path) == text, (
        f"{source} is not what `controlplane {shlex.join(args)}` gives: regenerate it")
    boot = yaml.safe_load(text)
    assert boot["node"]["metadata"]["NAMESPACE"] == deployment["metadata"]["namespace"]
    [endpoint] = boot["static_resources"]["clusters"][0]["load_assignment"]["endpoints"]
    socket = endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    service = find(docs, "Service", "controlplane")
    meta = service["metadata"]
    assert socket["address"] in (f"{meta['name']}.{meta['namespace']}.svc",
                                 f"{meta['name']}.{meta['namespace']}.svc.cluster.local")
    assert socket["port_value"] in [p["port"] for p in service["spec"]["ports"]]
    # Each replica is a proxy of its own: the pod name is the node id.
    assert sidecar["args"][sidecar["args"].index("--service-node") + 1] == "$(POD_NAME)"
    [app] = [c for c in pod["containers"] if c is not sidecar]
    client = traffic.parser().parse_args(app["args"])
    assert client.sidecar == f"127.0.0.1:{service_port(docs, client.host)}"
    for name in ("reviews-v1", "reviews-v2"):
        [container] = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", "controlplane.samples.workload"]
        workload.parser().parse_args(container["args"])
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]


def service_port(docs: list[dict[str, Any]], name: str) -> int:
    [port] = find(docs, "Service", name)["spec"]["ports"]
    return int(port["port"])


# -- on a real API server ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from tests.kube.cluster import LocalCluster

    # No pods run (there is no kubelet): no controllers and no pod network are needed.
    with LocalCluster(controllers=False) as c:
        yield c


@pytest.fixture(scope="module")
def api(cluster: Any) -> Any:
    return load_api_client(str(cluster.kubeconfig_path))


def dynamic(api: Any, tmp: Path) -> Any:
    from kubernetes.dynamic import DynamicClient

    return DynamicClient(api, cache_file=str(tmp / f"discovery-{uuid.uuid4().hex}.json"))


def apply(api: Any, docs: list[dict[str, Any]], tmp: Path) -> None:
    """Create each object with strict field validation: an unknown or duplicated field
    is an error, not silently dropped."""
    from kubernetes import client

    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    dyn = dynamic(api, tmp)
    for doc in docs:
        if doc["kind"] not in ("Namespace", "CustomResourceDefinition"):
            continue
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.create(body=doc, query_params=[("fieldValidation", "Strict")])
    ext = client.ApiextensionsV1Api(api)
    wait_until(lambda: all(any(
        c.type == "Established" and c.status == "True" for c in ext.read_custom_resource_definition(
            d["metadata"]["name"]).status.conditions or []) for d in crds), 30,
        what="CRDs established")
    dyn = dynamic(api, tmp)  # discovery again, now with the CRDs' kinds
    for doc in docs:
        if doc["kind"] in ("Namespace", "CustomResourceDefinition"):
            continue
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.create(body=doc, namespace=doc["metadata"].get("namespace"),
                        query_params=[("fieldValidation", "Strict")])


def read_back(api: Any, doc: dict[str, Any], tmp: Path) -> dict[str, Any]:
    resource = dynamic(api, tmp).resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    return resource.get(name=doc["metadata"]["name"],
                        namespace=doc["metadata"].get("namespace")).to_dict()


def subset_of(sent: Any, stored: Any, where: str = "") -> None:
    """Everything sent is stored as sent (the server adds defaults, drops nothing)."""
    if isinstance(sent, dict):
        assert isinstance(stored, dict), where
        for k, v in sent.items():
            assert k in stored, f"{where}.{k} dropped by the API server"
            subset_of(v, stored[k], f"{where}.{k}")
    elif isinstance(sent, list):
        assert isinstance(stored, list) and len(sent) == len(stored), where
        for i, (a, b) in enumerate(zip(sent, stored, strict=True)):
            subset_of(a, b, f"{where}[{i}]")
    else:
        # quantities come back normalized ("1" stays "1"; 100m stays 100m)
        assert sent == stored or str(sent) == str(stored), f"{where}: {sent!r} -> {stored!r}"


@pytest.fixture(scope="module")
def applied(api: Any, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    docs = manifests()
    apply(api, docs, tmp_path_factory.mktemp("discovery"))
    return docs


def test_manifests_are_accepted_by_the_api_server(
        api: Any, applied: list[dict[str, Any]], tmp_path: Path) -> None:
    stored = []
    for doc in applied:
        back = read_back(api, doc, tmp_path)
        subset_of(doc, back, f"{doc['kind']} {doc['metadata']['name']}")
        stored.append(back)
    # The security settings as the server keeps them.
    check_deployment(find(stored, "Deployment", "controlplane"), stored)


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl (Debian's package, on this project's machines) is not "
                           "installed; the test loader's own tests cover the same manifests")
def test_kubectl_apply_k_as_documented(cluster: Any, applied: list[dict[str, Any]]) -> None:
    """The README's command, against the API server (server-side dry run: the objects
    exist already)."""
    for directory in (KUBERNETES, EXAMPLE):
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(cluster.kubeconfig_path), "apply", "-k",
             str(directory), "--dry-run=server", "--validate=strict"],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(result.stdout.splitlines()) == len(kustomize(directory)), result.stdout


def service_account_kubeconfig(cluster: Any, api: Any, tmp_path: Path) -> Path:
    from kubernetes import client

    account = find(kustomize(KUBERNETES), "ServiceAccount")["metadata"]
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        account["name"], account["namespace"],
        {"spec": {"expirationSeconds": 3600}}).status.token
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server_url,
                                                   "insecure-skip-tls-verify": True}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}]}))
    return path


def test_the_service_account_may_read_what_is_watched_and_nothing_else(
        api: Any, applied: list[dict[str, Any]]) -> None:
    from kubernetes import client

    account = find(applied, "ServiceAccount")["metadata"]
    user = f"system:serviceaccount:{account['namespace']}:{account['name']}"
    auth = client.AuthorizationV1Api(api)

    def allowed(verb: str, group: str, resource: str, namespace: str = "",
                name: str = "") -> bool:
        return auth.create_subject_access_review({"spec": {"user": user, "groups": [
            "system:serviceaccounts", f"system:serviceaccounts:{account['namespace']}",
            "system:authenticated"], "resourceAttributes": {
                "verb": verb, "group": group, "resource": resource,
                "namespace": namespace, "name": name}}}).status.allowed
    for group, resource in sorted(watched_resources()):
        for verb in ("get", "list", "watch"):
            assert allowed(verb, group, resource), (verb, group, resource)
            assert allowed(verb, group, resource, "demo"), (verb, group, resource)
        for verb in ("create", "update", "patch", "delete"):
            assert not allowed(verb, group, resource), (verb, group, resource)
    for (group, resource), names in NAMED_RESOURCES.items():
        for name in names:
            for verb in ("get", "list", "watch"):
                assert allowed(verb, group, resource, ROOT_NAMESPACE, name), (verb, resource)
            assert not allowed("update", group, resource, ROOT_NAMESPACE, name), resource
        assert not allowed("get", group, resource, ROOT_NAMESPACE, "another"), resource
    for group, resource in [("", "configmaps"), ("apps", "deployments"),
                            ("rbac.authorization.k8s.io", "clusterroles")]:
        assert not allowed("list", group, resource), (group, resource)


@pytest.mark.parametrize("options", [{}, {"revision": "blue", "endpoints_api": "endpoints"}],
                         ids=["default", "revision-and-endpoints"])
def test_the_control_plane_runs_on_the_service_accounts_permissions(
        cluster: Any, api: Any, applied: list[dict[str, Any]], tmp_path: Path,
        options: dict[str, Any]) -> None:
    """Every watch (Namespaces with --revision, Endpoints or EndpointSlices, Services,
    Pods, the Istio kinds) with the ServiceAccount's token: nothing refused."""
    from kubernetes import client

    if options.get("revision"):
        client.CoreV1Api(api).patch_namespace(
            "demo", {"metadata": {"labels": {"istio.io/rev": options["revision"]}}})
    kubeconfig = service_account_kubeconfig(cluster, api, tmp_path)
    with structlog.testing.capture_logs() as logs:
        plane = ControlPlane(kubernetes={"api_client": load_api_client(str(kubeconfig)),
                                         "crd_retry": 0.5, "watch_timeout": 5, **options})
        try:
            wait_until(lambda: plane.run(lambda: plane.store.synced), 30,
                       what="initial sync with the ServiceAccount's token")
            for key in (Key("Service", "demo", "reviews"),
                        Key("VirtualService", "demo", "reviews"),
                        Key("DestinationRule", "demo", "reviews")):
                wait_until(lambda k=key: plane.run(lambda: plane.store.get(k)), 10,
                           what=f"{key} mirrored")
            time.sleep(0.5)  # any refused watch would have logged by now
        finally:
            plane.stop()
    # A 429 ("storage is (re)initializing": a CRD applied moments ago) is the API server
    # not ready yet, retried by the watcher; a permission refusal is what this is about.
    refused = [e for e in logs if e["log_level"] in ("warning", "error")
               and not str(e.get("error", "")).startswith("ApiError: 429")]
    assert not refused, refused
