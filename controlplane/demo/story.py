"""`controlplane demo`: the control plane, demo workloads and two real Envoy sidecars on
loopback, walked through traffic changes made by editing YAML files.

Each step changes the config directory (a copy of the package's `manifests/`, or of
--config-dir), waits until every sidecar holds the change, sends requests through the
sidecars and shows where they went.
With --no-interactive the steps run unattended and the exit code says whether every step
saw what it expected. Ctrl-C (or SIGTERM, SIGHUP) stops every process and thread the demo
started; its children have process groups of their own, so only the demo gets the
terminal's Ctrl-C and stops them in order, and they die with it even if it is killed.

Longer than the ~400 lines a module gets here, on purpose: it is one story, read top to
bottom — the steps, then the runner that plays them — and the steps call back into the
runner, so two modules would import each other.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TextIO

import yaml

from controlplane.demo.prompt import wait_for_enter
from controlplane.samples.traffic import Client, bar
from controlplane.samples.workload import Workload
from controlplane.sidecar import Envoy, owned_process

# The demo's mesh, read through the package: it ships in the wheel (package data in
# pyproject.toml), so `controlplane demo` runs from an installation as from a checkout.
MANIFESTS = files("controlplane.demo") / "manifests"
# Two replicas of a client app, each with its own sidecar: (node id, instance IP).
SIDECARS = (("productpage-0", "127.0.10.2"), ("productpage-1", "127.0.10.3"))
SIDECAR_IP = SIDECARS[0][1]
SERVICE_PORT = 9080
WORKLOAD_PORT = 8080
REQUESTS = 200
NAMESPACE = "default"
DB0_HOST = f"db-0.db.{NAMESPACE}.svc.cluster.local"
DB0_CLUSTER = f"outbound|{SERVICE_PORT}||{DB0_HOST}"
DB0_NEW_IP = "127.0.10.33"
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The control plane's "serving" log line (console format) and the ports on it.
SERVING = re.compile(r"\]\s+serving\s.*\bxds_port=\d+")
PORT = re.compile(r"\b(xds_port|admin_port|http_port)=(\d+)")


@dataclass(frozen=True)
class Pace:
    """How the tally is shown to a person: requests at a steady rate (so the split grows
    as they watch instead of flickering past in a fraction of a second), the line
    redrawn several times a second. Unattended, requests go as fast as they can."""

    rate: float = 50.0  # requests per second: 200 requests take 4 s
    redraws_per_second: float = 10.0

    @property
    def redraw_every(self) -> int:
        """Requests between two redraws of the tally."""
        return max(1, round(self.rate / self.redraws_per_second))

    def redraws(self, requests: int) -> int:
        """How many times the tally of `requests` is drawn: every redraw_every requests,
        and once more at the end when that is not one of them."""
        return -(-requests // self.redraw_every)

    def seconds(self, requests: int) -> float:
        return requests / self.rate


LIVE_PACE = Pace()

# A change to the config; returns, for a sidecar, whether it holds the change yet (None:
# nothing changed, nothing to wait for).
Change = Callable[["Demo"], Callable[[Envoy], bool] | None]


@dataclass
class Probe:
    host: str
    expect: Callable[[Counter[str]], bool]
    expectation: str
    headers: dict[str, str] = field(default_factory=dict)
    key: str = "version"  # the answer's field(s) to count by, comma-separated
    requests: int = REQUESTS


@dataclass
class Step:
    title: str
    explain: str
    probes: list[Probe] = field(default_factory=list)
    change: Change | None = None
    check: Callable[[Demo], bool] | None = None  # instead of probes
    prompt: str = "press Enter to apply"


def _vs(http: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "reviews", "namespace": NAMESPACE},
             "spec": {"hosts": ["reviews"], "http": http}}]


def _split(v1: int, v2: int) -> list[dict[str, Any]]:
    return _vs([{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": v1},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": v2}]}])


def _share(counts: Counter[str], key: str) -> float:
    return counts[key] / max(1, sum(counts.values()))


def _only(label: str, n: int = REQUESTS) -> Callable[[Counter[str]], bool]:
    return lambda c: c[label] == n


def edit(files: dict[str, Any]) -> Change:
    """Write (None: delete) files of the config directory; the sidecars hold the change
    once their route configuration's version moved."""
    def change(demo: Demo) -> Callable[[Envoy], bool] | None:
        before = {e.node_id: e.route_versions() for e in demo.envoys}
        if not demo.write(files):
            return None
        return lambda e: e.route_versions() != before[e.node_id]
    return change


def recreate_db0(demo: Demo) -> Callable[[Envoy], bool]:
    """What a rescheduled StatefulSet pod does: db-0 goes away, comes back under the same
    name with a new IP, and the EndpointSlice (here: the pod's file) says so."""
    old = next(w for w in demo.workloads if w.identity["pod"] == "db-0")
    demo.say(f"    db-0 at {old.ip} stops ...")
    demo.stop_workload(old)
    demo.start_workload(DB0_NEW_IP, "db", "db-0", "v1")
    demo.say(f"    ... and starts again at {DB0_NEW_IP}; db.yaml gets its new podIP")
    docs = list(yaml.safe_load_all((demo.config / "db.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "Pod" and doc["metadata"]["name"] == "db-0":
            doc["status"]["podIP"] = DB0_NEW_IP
    demo.write({"db.yaml": docs})
    return lambda e: e.cluster_hosts(DB0_CLUSTER) == {f"{DB0_NEW_IP}:{WORKLOAD_PORT}"}


def copy_tree(source: Traversable, target: Path) -> None:
    """Copy a directory, or one inside the installed package: read through
    importlib.resources, that need not be a directory on disk."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.is_dir():
            copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())


def cli_command() -> str:
    """How the user runs the control plane's command line from their shell: the bare name
    when PATH finds this installation's, else the path of the script installed beside
    this interpreter (scripts/demo installs into .venv, which it does not put on PATH)."""
    beside = Path(sys.executable).parent / "controlplane"
    found = shutil.which("controlplane")
    if found is not None and (not beside.exists() or Path(found).resolve() == beside.resolve()):
        return "controlplane"
    return str(beside) if beside.exists() else f"{sys.executable} -m controlplane.cli"


def proxy_status(demo: Demo) -> bool:
    """`controlplane proxy-status`, as a user runs it; retried for a few seconds while a
    sidecar has not answered the last push yet."""
    cmd = ["proxy-status", "--server", demo.admin_address]
    demo.say(f"    $ {cli_command()} {' '.join(cmd)}")
    deadline = time.monotonic() + 10
    while True:
        code, output = demo.command([sys.executable, "-m", "controlplane.cli", *cmd])
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for line in output.rstrip().splitlines():
        demo.say(f"    {line}")
    return code == 0


def steps() -> list[Step]:
    vs = "reviews-virtualservice.yaml"
    db0 = f"db-0 @ 127.0.10.31:{WORKLOAD_PORT}"
    db0_new = f"db-0 @ {DB0_NEW_IP}:{WORKLOAD_PORT}"
    db1 = f"db-1 @ 127.0.10.32:{WORKLOAD_PORT}"
    return [
        Step("Default routing", "No VirtualService: each sidecar balances over every ready "
             "pod of the service.", [Probe(
                 "reviews", lambda c: c["v1"] > 0 and c["v2"] > 0
                 and c["v1"] + c["v2"] == REQUESTS, "both versions answer")],
             edit({vs: None}), prompt="press Enter to send requests"),
        Step("Canary 80/20", f"{vs}: 80% to subset v1, 20% to v2.", [Probe(
            "reviews", lambda c: 0.7 <= _share(c, "v1") <= 0.9, "about 80% v1")],
             edit({vs: _split(80, 20)})),
        Step("Shift to 50/50", "Edit the weights in the same file.", [Probe(
            "reviews", lambda c: 0.4 <= _share(c, "v1") <= 0.6, "about half each")],
             edit({vs: _split(50, 50)})),
        Step("Shift to 0/100", "The canary takes all traffic.", [Probe(
            "reviews", _only("v2"), "only v2")], edit({vs: _split(0, 100)})),
        Step("Header routing", "Requests from user jason go to v2, everyone else to v1.", [
            Probe("reviews", _only("v1"), "only v1 for everyone else"),
            Probe("reviews", _only("v2"), "only v2 for jason", headers={"end-user": "jason"})],
             edit({vs: _vs([
                 {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                  "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
                 {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}])})),
        Step("Headless StatefulSet", "db (clusterIP: None) has pods db-0 and db-1; each pod "
             f"also has a name of its own, like {DB0_HOST}.", [
                 Probe("db", lambda c: c[db0] > 0 and c[db1] > 0 and c[db0] + c[db1]
                       == REQUESTS, "both pods answer", key="pod,address"),
                 Probe(DB0_HOST, _only(db0, REQUESTS // 2), "only db-0",
                       key="pod,address", requests=REQUESTS // 2)],
             prompt="press Enter to send requests"),
        Step("db-0 recreated with a new IP", "The pod is deleted and comes back as db-0 on "
             "another address: an endpoint update, no restart of anything.", [
                 Probe("db", lambda c: c[db0_new] > 0 and c[db1] > 0
                       and c[db0_new] + c[db1] == REQUESTS, "both answer, db-0 from "
                       f"{DB0_NEW_IP}", key="pod,address"),
                 Probe(DB0_HOST, _only(db0_new, REQUESTS // 2), f"only db-0, from "
                       f"{DB0_NEW_IP}", key="pod,address", requests=REQUESTS // 2)],
             recreate_db0),
        Step("proxy-status", "Has each sidecar taken its config? (SYNCED: the last push "
             "of that type was ACKed)", check=proxy_status, prompt="press Enter to run it"),
    ]


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """A signal arriving inside is acted on at the end: a process is never started
    without being recorded for stop()."""
    received: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: received.append(signum))
           for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if received:
            raise KeyboardInterrupt


class DemoFailed(Exception):
    """The demo cannot go on (a part did not start); the message says what and why."""


class Demo:
    def __init__(self, config: Traversable, interactive: bool, out: TextIO = sys.stdout,
                 pace: Pace = LIVE_PACE) -> None:
        self.source_config = config
        self.interactive = interactive
        self.out = out
        self.live = interactive and out.isatty()
        self.pace = pace
        self.workdir = Path(tempfile.mkdtemp(prefix="controlplane-demo-"))
        self.config = self.workdir / "config"
        copy_tree(config, self.config)
        # Known once the control plane listens (`start`): it binds port 0 and says which
        # ports it got, so no port picked beforehand can be taken in between.
        self.xds_port = 0
        self.admin_address = self.http_address = ""
        self.serve: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "controlplane.log"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workloads: list[Workload] = []
        self.envoys: list[Envoy] = []
        self.clients: list[Client] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # -- starting and stopping ------------------------------------------------------------
    def spawn(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with deferred_interrupts():
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs,
                                    **owned_process())
            self.processes.append(proc)
        return proc

    def command(self, argv: list[str], timeout: float = 30) -> tuple[int, str]:
        proc = self.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            output, _ = proc.communicate(timeout=timeout)
        finally:
            self._end([proc])
            self.processes.remove(proc)
        return proc.returncode, output.decode(errors="replace")

    def start_workload(self, ip: str, service: str, pod: str, version: str) -> None:
        with deferred_interrupts():
            self.workloads.append(Workload(ip, WORKLOAD_PORT, service, pod, version))

    def stop_workload(self, workload: Workload) -> None:
        workload.stop()
        self.workloads.remove(workload)

    def start(self) -> None:
        self.say(f"config directory:  {self.config}  (edit it while the demo runs)")
        with self.log_path.open("w") as log:
            self.serve = self.spawn(
                [sys.executable, "-m", "controlplane.cli", "serve", "--config-dir",
                 str(self.config), "--xds-address", "127.0.0.1:0",
                 "--admin-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"],
                stdout=log, stderr=log)
        ports = self._serving(60)
        self.xds_port = ports["xds_port"]
        self.admin_address = f"127.0.0.1:{ports['admin_port']}"
        self.http_address = f"127.0.0.1:{ports['http_port']}"
        self.say(f"control plane:     pid {self.serve.pid}, xDS on 127.0.0.1:{self.xds_port}, "
                 f"admin {self.admin_address}, http://{self.http_address}/debug/configz, "
                 f"log {self.log_path}")
        for doc in self._pods():
            labels = doc["metadata"].get("labels", {})
            self.start_workload(doc["status"]["podIP"], labels.get("app", "?"),
                                doc["metadata"]["name"], labels.get("version", "v1"))
        self.say("demo pods:         " + ", ".join(
            f"{w.identity['pod']} {w.ip}:{w.port}" for w in self.workloads))
        for node_id, ip in SIDECARS:
            with deferred_interrupts():
                self.envoys.append(Envoy(node_id, self.xds_port, instance_ip=ip,
                                         namespace=NAMESPACE, owned=True))
        for envoy in self.envoys:
            try:
                envoy.wait_ready(30)
            except (TimeoutError, RuntimeError) as e:  # not ready; exited
                raise DemoFailed(f"{e}\n{self._control_plane_state()}") from None
            assert envoy.proc is not None
            self.say(f"sidecar {envoy.node_id}: Envoy pid {envoy.proc.pid} on "
                     f"{envoy.instance_ip}:{SERVICE_PORT}, admin "
                     f"http://127.0.0.1:{envoy.admin_port}, bootstrap {envoy.config}")
            self.clients.append(Client(envoy.instance_ip, SERVICE_PORT))

    def _serving(self, timeout: float) -> dict[str, int]:
        """The ports of the control plane's `serving` line, once it is logged. Raises,
        with the log's end, if the control plane exits or says nothing in time."""
        assert self.serve is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # whole lines only: a line still being written may hold half a port
            for line in self.log_path.read_text(errors="replace").split("\n")[:-1]:
                if SERVING.search(line):
                    return {k: int(v) for k, v in PORT.findall(line)}
            if self.serve.poll() is not None:
                break
            time.sleep(0.05)
        raise DemoFailed(f"the control plane is not serving\n{self._control_plane_state()}")

    def _control_plane_state(self) -> str:
        assert self.serve is not None
        code = self.serve.poll()
        tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        return (f"control plane (pid {self.serve.pid}) "
                f"{'is running' if code is None else f'exited with {code}'}; "
                f"the end of its log ({self.log_path}):\n{tail}")

    def _end(self, procs: list[subprocess.Popen[bytes]], timeout: float = 5.0) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop(self) -> None:
        """Stop everything started, whatever state the demo is in; further signals are
        ignored until it is done."""
        old = {s: signal.signal(s, signal.SIG_IGN) for s in SIGNALS}
        try:
            for client in self.clients:
                client.close()
            self._end([*(e.proc for e in self.envoys if e.proc), *self.processes])
            threads = [threading.Thread(target=w.stop) for w in self.workloads]
            for t in threads:
                t.start()
            for t in threads:
                t.join(5)
            for envoy in self.envoys:
                envoy.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    # -- the story ------------------------------------------------------------------------
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

    def pause(self, prompt: str) -> None:
        if not self.interactive:
            return
        if not wait_for_enter(f"    {prompt} ", self.out):
            self.say("\n    (end of input: the remaining steps run unattended)")
            self.interactive = self.live = False

    def send(self, probe: Probe) -> Counter[str]:
        """Requests alternate between the sidecars; the tally is shown as it grows when
        the output is a terminal."""
        counts: Counter[str] = Counter()
        prefix = f"    {probe.requests} requests to {probe.host}"
        if probe.headers:
            prefix += " with " + ", ".join(f"{k}: {v}" for k, v in probe.headers.items())
        width = 40 if "," not in probe.key else 20
        pace = self.pace
        began = time.monotonic()
        for i in range(probe.requests):
            if self.live:
                # request i goes out at began + i/rate: a steady rate, whatever each
                # request took (a slow one is caught up on, not added to every later one)
                time.sleep(max(0.0, began + i / pace.rate - time.monotonic()))
            client = self.clients[i % len(self.clients)]
            counts[client.label(probe.host, probe.key, headers=probe.headers)] += 1
            if self.live and ((i + 1) % pace.redraw_every == 0 or i + 1 == probe.requests):
                # cut to the terminal's width: a wrapped line could not be redrawn
                line = f"{prefix}: {bar(counts, probe.requests, width)}"
                self.out.write(f"\r{line[:shutil.get_terminal_size().columns - 1]}\x1b[K")
                self.out.flush()
        if self.live:
            self.out.write("\r\x1b[K")
        self.say(f"{prefix}: {bar(counts, probe.requests, width)}")
        return counts

    def run_step(self, n: int, step: Step) -> bool:
        self.say(f"\n[{n}] {step.title}\n    {step.explain}")
        self.pause(step.prompt)
        if step.change is not None:
            holds = step.change(self)
            written = time.monotonic()
            if holds is not None:
                waiting = list(self.envoys)
                while waiting and time.monotonic() - written < 10:
                    waiting = [e for e in waiting if not holds(e)]
                    time.sleep(0.02)
                took = time.monotonic() - written
                if waiting:
                    self.say(f"    {', '.join(e.node_id for e in waiting)} did not take the "
                             f"change within {took:.0f}s")
                else:
                    self.say(f"    every sidecar took the change {took:.2f}s after the file "
                             "was written")
        if step.check is not None:
            ok = step.check(self)
            self.say(f"    {'OK' if ok else 'NOT SEEN'}")
            return ok
        ok = True
        for probe in step.probes:
            seen = probe.expect(self.send(probe))
            self.say(f"    expected {probe.expectation}: {'OK' if seen else 'NOT SEEN'}")
            ok &= seen
        return ok

    def run(self) -> bool:
        self.start()
        results = [self.run_step(i, s) for i, s in enumerate(steps(), 1)]
        self.say(f"\n{sum(results)}/{len(results)} steps saw what they expected")
        if self.interactive:
            self.say(f"\nEverything still runs. Try:\n"
                     f"    curl -H 'Host: reviews' http://{SIDECAR_IP}:{SERVICE_PORT}/\n"
                     f"    {cli_command()} proxy-status --server {self.admin_address}\n"
                     f"    edit the files in {self.config}")
            self.pause("press Enter (or Ctrl-C) to stop everything")
        return all(results)


def run(config: Path | None, interactive: bool) -> int:
    # Ctrl-C, SIGTERM and SIGHUP all end the demo through `finally`, stopping everything
    # it started. SIGINT is set explicitly: a shell starting us in the background may
    # have left it ignored.
    old = {s: signal.signal(s, signal.default_int_handler) for s in SIGNALS}
    demo: Demo | None = None
    try:
        demo = Demo(config or MANIFESTS, interactive)
        return 0 if demo.run() else 1
    except DemoFailed as e:
        print(f"\nthe demo cannot go on: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the demo started", flush=True)
        return 130
    finally:
        if demo is not None:
            demo.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
