"""The command line as a user runs it: `controlplane bootstrap` and `controlplane serve`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import envoy_binary, free_port, get, wait_until, write_yaml
from tests.manifests import pod, service

CLI = [sys.executable, "-m", "controlplane.cli"]


@pytest.mark.parametrize("extra", [[], ["--instance-ip", "127.0.0.5", "--namespace", "prod"],
                                   ["--delta"]])
def test_bootstrap_passes_envoy_validation(tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "bootstrap.yaml"
    subprocess.run([*CLI, "bootstrap", "--node-id", "web-1", "--cluster", "web",
                    "--xds-address", "127.0.0.1:15010", "-o", str(out), *extra], check=True)
    doc = yaml.safe_load(out.read_text())
    assert doc["node"]["id"] == "web-1" and doc["node"]["cluster"] == "web"
    if "--instance-ip" in extra:
        assert doc["node"]["metadata"] == {"INSTANCE_IPS": "127.0.0.5", "NAMESPACE": "prod"}
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.e2e
def test_serve_from_a_directory_to_a_real_envoy(tmp_path: Path, ip: Any, upstream: Any,
                                                envoy: Any) -> None:
    config = tmp_path / "config"
    config.mkdir()
    pod_ip, sidecar = ip(), ip()
    upstream(pod_ip, 18080, "web", "web-1")
    write_yaml(config / "web.yaml", service("web", 19090, target=18080),
               pod("web-1", pod_ip, {"app": "web"}))
    (config / "broken.yaml").write_text("kind: [")
    xds_port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [*CLI, "--log-format", "json", "serve", "--config-dir", str(config),
             "--xds-address", f"127.0.0.1:{xds_port}"], stdout=log_file, stderr=log_file)
    try:
        envoy("cli-1", xds_port, instance_ip=sidecar)
        wait_until(lambda: get(sidecar, 19090, "web")[0] == 200, what="route through envoy")
        assert get(sidecar, 19090, "web")[1]["pod"] == "web-1"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    text = log.read_text()
    assert '"event": "file_rejected"' in text and "broken.yaml" in text
    assert '"event": "push"' in text and '"event": "ack"' in text
