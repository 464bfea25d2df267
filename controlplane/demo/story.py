"""`controlplane demo`: the control plane, demo workloads and a real Envoy sidecar on
loopback, walked through traffic changes made by editing YAML files.

Each step edits the config directory (a copy of config/demo), waits for the sidecar to
take the change, sends requests and shows where they went. With --no-interactive the
steps run unattended and the exit code says whether every step saw the traffic it
expected.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controlplane.demo.envoy import Envoy, free_port
from controlplane.demo.traffic import Client
from controlplane.demo.workload import Workload

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo"
SIDECAR_IP = "127.0.10.2"
SERVICE_PORT = 9080
REQUESTS = 200


@dataclass
class Step:
    title: str
    explain: str
    files: dict[str, Any]  # file name -> documents to write (None: delete the file)
    host: str
    headers: dict[str, str]
    expect: Callable[[Counter[str]], bool]
    expectation: str


def _vs(http: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"hosts": ["reviews"], "http": http}}]


def _split(v1: int, v2: int) -> list[dict[str, Any]]:
    return _vs([{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": v1},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": v2}]}])


def _share(counts: Counter[str], key: str) -> float:
    return counts[key] / max(1, sum(counts.values()))


def steps() -> list[Step]:
    vs = "reviews-virtualservice.yaml"
    return [
        Step("Default routing", "No VirtualService: the sidecar balances over every ready "
             "pod of the service.", {vs: None}, "reviews", {},
             lambda c: c["v1"] > 0 and c["v2"] > 0 and c["v1"] + c["v2"] == REQUESTS,
             "both versions answer"),
        Step("Canary 80/20", f"{vs}: 80% to subset v1, 20% to v2.", {vs: _split(80, 20)},
             "reviews", {}, lambda c: 0.7 <= _share(c, "v1") <= 0.9, "about 80% v1"),
        Step("Shift to 50/50", "Edit the weights in the same file.", {vs: _split(50, 50)},
             "reviews", {}, lambda c: 0.4 <= _share(c, "v1") <= 0.6, "about half each"),
        Step("Shift to 0/100", "The canary takes all traffic.", {vs: _split(0, 100)},
             "reviews", {}, lambda c: c["v2"] == REQUESTS, "only v2"),
        Step("Header routing (others)", "Requests from user jason go to v2, everyone else "
             "to v1.", {vs: _vs([
                 {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                  "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
                 {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}])},
             "reviews", {}, lambda c: c["v1"] == REQUESTS, "only v1"),
        Step("Header routing (jason)", "Same rules, with the header end-user: jason.", {},
             "reviews", {"end-user": "jason"}, lambda c: c["v2"] == REQUESTS, "only v2"),
    ]


class Demo:
    def __init__(self, config: Path, interactive: bool, out: Any = sys.stdout) -> None:
        self.source_config = config
        self.interactive = interactive
        self.out = out
        self.workdir = Path(tempfile.mkdtemp(prefix="controlplane-demo-"))
        self.config = self.workdir / "config"
        shutil.copytree(config, self.config)
        self.xds_port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workloads: list[Workload] = []
        self.envoys: list[Envoy] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def start(self) -> None:
        log = (self.workdir / "controlplane.log").open("w")
        self.say(f"config directory: {self.config}  (edit it while the demo runs)")
        self.say(f"control plane log: {self.workdir / 'controlplane.log'}")
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "serve", "--config-dir",
             str(self.config), "--xds-address", f"127.0.0.1:{self.xds_port}"],
            stdout=log, stderr=log))
        for doc in self._pods():
            labels = doc["metadata"].get("labels", {})
            self.workloads.append(Workload(doc["status"]["podIP"], 8080,
                                           labels.get("app", "?"), doc["metadata"]["name"],
                                           labels.get("version", "v1")))
        self.envoys.append(Envoy("sidecar-demo", self.xds_port, instance_ip=SIDECAR_IP))
        self.envoys[0].wait_ready(30)
        self.say(f"sidecar: Envoy listening on {SIDECAR_IP}:{SERVICE_PORT}, admin "
                 f"http://127.0.0.1:{self.envoys[0].admin_port}")

    def _pods(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.config.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Pod":
                    yield doc

    def write(self, files: dict[str, Any]) -> bool:
        """Write (or delete) the step's files; True when any content changed."""
        changed = False
        for name, docs in files.items():
            path = self.config / name
            if docs is None:
                changed |= path.exists()
                path.unlink(missing_ok=True)
                continue
            text = yaml.safe_dump_all(docs, sort_keys=False)
            if path.exists() and path.read_text() == text:
                continue
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(text)
            tmp.replace(path)
            changed = True
        return changed

    def run_step(self, n: int, step: Step, client: Client) -> bool:
        self.say(f"\n[{n}] {step.title}\n    {step.explain}")
        if self.interactive:
            input("    press Enter to apply ")
        envoy = self.envoys[0]
        before = envoy.route_versions()
        written = time.monotonic()
        if self.write(step.files):
            while envoy.route_versions() == before and time.monotonic() - written < 5:
                time.sleep(0.02)
            self.say(f"    the sidecar took the change {time.monotonic() - written:.2f}s "
                     "after the file was written")
        counts = client.tally(step.host, REQUESTS, "version", headers=step.headers)
        bar = "  ".join(f"{k}: {v:3d} {'#' * (v * 40 // REQUESTS)}"
                        for k, v in sorted(counts.items()))
        ok = step.expect(counts)
        self.say(f"    {REQUESTS} requests to {step.host}: {bar}")
        self.say(f"    expected {step.expectation}: {'OK' if ok else 'NOT SEEN'}")
        return ok

    def run(self) -> bool:
        self.start()
        client = Client(SIDECAR_IP, SERVICE_PORT)
        try:
            results = [self.run_step(i, s, client) for i, s in enumerate(steps(), 1)]
        finally:
            client.close()
        self.say(f"\n{sum(results)}/{len(results)} steps saw the expected traffic")
        return all(results)

    def stop(self) -> None:
        for envoy in self.envoys:
            envoy.stop()
        for w in self.workloads:
            w.stop()
        for p in self.processes:
            p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def run(config: Path | None, interactive: bool) -> int:
    demo = Demo(config or DEFAULT_CONFIG, interactive)
    # SIGTERM ends the demo like Ctrl-C: through `finally`, stopping everything it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return 0 if demo.run() else 1
    except KeyboardInterrupt:
        demo.say("\ninterrupted")
        return 130
    finally:
        with contextlib.suppress(Exception):
            demo.stop()
