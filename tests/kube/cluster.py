"""A real, local Kubernetes control plane for tests: etcd + kube-apiserver
(+ optionally kube-controller-manager), all listening on 127.0.0.1 only.

Stdlib only.  The binaries are built from Go modules by ``tools/kube/build.sh``
into ``${CONTROLPLANE_CACHE:-~/.cache/controlplane}/kube/<version>/bin``.

    from tests.kube.cluster import LocalCluster

    with LocalCluster(controllers=True) as c:
        c.kubeconfig_path   # kubeconfig (bearer token, insecure-skip-tls-verify)
        c.server_url        # https://127.0.0.1:<port>
        c.token             # admin bearer token (user "admin", group system:masters)
        c.request("GET", "/api/v1/namespaces")          # tiny JSON helper

There is no scheduler and no kubelet: Pods created by controllers stay
unscheduled/Pending until a test binds them to a Node (``pods/binding``) and
writes their status (``pods/status``) itself -- see ``tests/kube/kubelet.py`` and
``tools/kube/NOTES.md``.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

KUBE_VERSION = os.environ.get("KUBE_VERSION", "v1.37.2")
BUILD_SH = Path(__file__).resolve().parents[2] / "tools" / "kube" / "build.sh"

# Controllers needed for StatefulSets + EndpointSlices, plus the ones that make
# a cluster behave normally for tests (cascading deletes, namespace deletion,
# default ServiceAccount).  NOT included on purpose: node-lifecycle (would taint
# and evict pods of fake nodes that never heartbeat), pod-garbage-collector
# (deletes pods bound to missing nodes), ttl, ipam, volume controllers.
DEFAULT_CONTROLLERS = (
    "statefulset-controller",
    "endpointslice-controller",
    "endpoints-controller",
    "replicaset-controller",
    "deployment-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
)


class ClusterError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("CONTROLPLANE_CACHE") or Path.home() / ".cache" / "controlplane")


def bin_dir(version: str = KUBE_VERSION) -> Path:
    return cache_root() / "kube" / version / "bin"


BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")


def find_binaries(build: bool = True, version: str = KUBE_VERSION,
                  names: Iterable[str] = BINARIES) -> Path:
    """Return the bin dir holding `names` (etcd/kube-apiserver/kube-controller-manager).

    Env overrides: KUBE_BIN_DIR (a dir with all three binaries); KUBE_BUILD=0
    (never build).  If missing and ``build`` is true, runs build.sh (slow the
    first time: 10-25 min; its output goes to <cache>/kube/<version>/build.log)."""
    override = os.environ.get("KUBE_BIN_DIR")
    d = Path(override) if override else bin_dir(version)
    missing = [b for b in names if not os.access(d / b, os.X_OK)]
    if not missing:
        return d
    if override or not build:
        raise ClusterError(
            f"missing Kubernetes binaries {missing} in {d}; run {BUILD_SH} "
            f"(needs Go + the Go module proxy; first build takes 10-25 min)"
        )
    if os.environ.get("KUBE_BUILD") == "0":
        raise ClusterError(f"missing Kubernetes binaries {missing} in {d} and KUBE_BUILD=0; "
                           f"run {BUILD_SH}")
    env = dict(os.environ, KUBE_VERSION=version)
    build_log = cache_root() / "kube" / version / "build.log"
    build_log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[LocalCluster] building {missing} with {BUILD_SH} (first time: up to about 20 "
          f"min on 2 cores); log: {build_log}", file=sys.stderr, flush=True)
    with open(build_log, "w") as lf:
        proc = subprocess.run(["bash", str(BUILD_SH)], env=env, stdout=subprocess.PIPE,
                              stderr=lf, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"{BUILD_SH} failed (exit {proc.returncode}); log {build_log}:\n"
                           f"{_tail(build_log)}")
    d = Path(proc.stdout.strip().splitlines()[-1])
    missing = [b for b in names if not os.access(d / b, os.X_OK)]
    if missing:
        raise ClusterError(f"{BUILD_SH} finished but {missing} are not in {d}")
    return d


def kubectl_binary(build: bool = True, version: str = KUBE_VERSION) -> Path:
    """kubectl of the API server's version, built by build.sh next to it (the Debian
    package's kubectl is older, and not on every machine)."""
    return find_binaries(build, version, names=("kubectl",)) / "kubectl"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail_text(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return _tail_text(f.read().decode("utf-8", "replace"), lines)
    except OSError as e:
        return f"<no log: {e}>"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _gen_sa_key(path: Path) -> None:
    """EC P-256 private key for signing/verifying service account tokens."""
    openssl = shutil.which("openssl")
    if openssl:
        subprocess.run([openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                        "-out", str(path)], check=True, capture_output=True)
        return
    try:  # fallback: python 'cryptography', if installed
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        raise ClusterError("need the `openssl` CLI (or the python `cryptography` package) "
                           "to generate the service account key") from None
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


class _Proc:
    def __init__(self, name: str, argv: list[str], log: Path, die_with_parent: bool):
        self.name, self.argv, self.log_path = name, argv, log
        self._log = open(log, "wb")  # noqa: SIM115 - the child writes to it until stop()
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent if die_with_parent else None,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            try:
                self.popen.terminate()
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()


class LocalCluster:
    """etcd + kube-apiserver (+ kube-controller-manager) on 127.0.0.1.

    Arguments:
      controllers: False (default) = no controller manager; True = start it with
        DEFAULT_CONTROLLERS; or an iterable of controller names
        (kube-controller-manager --controllers syntax, e.g. "*" or "-foo" work too).
      build: run build.sh if the binaries are missing (else raise ClusterError).
      authorization_mode: kube-apiserver --authorization-mode ("RBAC" default;
        the admin token is in system:masters so it can do everything).
      admission_plugins_disabled: default ("ServiceAccount",) so Pods can be
        created in a fresh namespace before the "default" ServiceAccount exists.
      extra_apiserver_args / extra_controller_manager_args: appended verbatim.
      workdir: use this dir instead of a fresh temp dir (kept on stop()).
      keep_workdir: don't delete the temp dir on stop() (also: env KUBE_KEEP_WORKDIR=1).
      start_timeout: seconds to wait for each component to become healthy.
      die_with_parent: PR_SET_PDEATHSIG so children are SIGKILLed if the Python
        process (precisely: the thread that started them) dies.

    Attributes after start(): kubeconfig_path, server_url, token, workdir,
    etcd_url, apiserver_port, controller_manager_url, bin_dir, startup_seconds.
    """

    def __init__(self, controllers: bool | Iterable[str] = False, *, build: bool = True,
                 version: str = KUBE_VERSION, authorization_mode: str = "RBAC",
                 admission_plugins_disabled: Iterable[str] = ("ServiceAccount",),
                 extra_apiserver_args: Iterable[str] = (),
                 extra_controller_manager_args: Iterable[str] = (),
                 workdir: os.PathLike | None = None, keep_workdir: bool = False,
                 start_timeout: float = 60.0, die_with_parent: bool = True,
                 verbosity: int = 0):
        if controllers is True:
            self.controllers: tuple[str, ...] = DEFAULT_CONTROLLERS
        elif controllers is False or controllers is None:
            self.controllers = ()
        else:
            self.controllers = tuple(controllers)
        self.build, self.version = build, version
        self.authorization_mode = authorization_mode
        self.admission_plugins_disabled = tuple(admission_plugins_disabled)
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.extra_controller_manager_args = list(extra_controller_manager_args)
        self._given_workdir = Path(workdir) if workdir else None
        self.keep_workdir = keep_workdir or os.environ.get("KUBE_KEEP_WORKDIR") == "1"
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.verbosity = verbosity

        self.token = uuid.uuid4().hex
        self.workdir: Path | None = None
        self.kubeconfig_path: str | None = None
        self.server_url: str | None = None
        self.etcd_url: str | None = None
        self.apiserver_port: int | None = None
        self.controller_manager_url: str | None = None
        self.bin_dir: Path | None = None
        self.startup_seconds: dict[str, float] = {}
        self._procs: dict[str, _Proc] = {}
        self._ssl = ssl.create_default_context()
        self._ssl.check_hostname = False
        self._ssl.verify_mode = ssl.CERT_NONE

    # ------------------------------------------------------------------ api
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        if self._procs:
            raise ClusterError("already started")
        t0 = time.monotonic()
        self.bin_dir = find_binaries(self.build, self.version)
        atexit.register(self.stop)   # in case the caller never calls stop()
        if self._given_workdir:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="kube-local-"))
        try:
            self._start_etcd()
            self._start_apiserver()
            if self.controllers:
                self._start_controller_manager()
        except BaseException:
            # keep the logs for debugging (the etcd data is dropped)
            self.stop(keep_logs=True)
            raise
        self.startup_seconds["total"] = round(time.monotonic() - t0, 2)
        return self

    def stop(self, keep_logs: bool = False) -> None:
        """Terminate (SIGTERM, then SIGKILL after 10s) all processes, newest first,
        and remove the temp dir (unless keep_workdir / a given workdir / keep_logs).
        Idempotent."""
        atexit.unregister(self.stop)
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            p = self._procs.pop(name, None)
            if p:
                p.stop()
        if self.workdir and not self._given_workdir and not self.keep_workdir:
            if keep_logs:
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone (an outage): etcd and the controllers stay up."""
        p = self._procs.pop("kube-apiserver", None)
        if p is None:
            raise ClusterError("kube-apiserver is not running")
        p.stop()

    def start_apiserver(self) -> None:
        """Start kube-apiserver again, on the same port, etcd, certificates and token, so
        clients holding the kubeconfig reconnect as to a restarted server. Returns once
        /readyz answers 200."""
        if "kube-apiserver" in self._procs:
            raise ClusterError("kube-apiserver is already running")
        self._start_apiserver()

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def log_path(self, component: str) -> Path:
        """Path of 'etcd' / 'kube-apiserver' / 'kube-controller-manager' log."""
        assert self.workdir is not None
        return self.workdir / f"{component}.log"

    def log_tail(self, component: str, lines: int = 40) -> str:
        return _tail(self.log_path(component), lines)

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json", timeout: float = 10.0) -> Any:
        """Minimal JSON REST call as admin. Raises urllib.error.HTTPError on >= 400."""
        data = None if body is None else (
            body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.server_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as r:
            raw = r.read()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    # ------------------------------------------------------------ internals
    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        log = self.log_path(name)
        if log.exists():  # a restart: keep the previous run's log next to the new one
            log.replace(log.with_name(log.name + ".previous"))
        p = _Proc(name, argv, log, self.die_with_parent)
        self._procs[name] = p
        return p

    def _fail(self, name: str, why: str) -> ClusterError:
        msg = f"{name} {why}; log {self.log_path(name)} (kept)"
        try:  # cobra prints 'Error: ...' and then the whole usage text: surface it
            errs = [ln for ln in self.log_path(name).read_text("utf-8", "replace").splitlines()
                    if ln.startswith("Error:")][:3]
        except OSError:
            errs = []
        if errs:
            msg += "\n" + "\n".join(errs)
        return ClusterError(f"{msg}\nlast lines:\n{self.log_tail(name)}")

    def _wait(self, name: str, check, what: str, key: str | None = None) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        last_err: Any = None
        while True:
            p = self._procs[name]
            if not p.alive():
                raise self._fail(name, f"exited with code {p.popen.returncode} before {what}")
            try:
                if check():
                    self.startup_seconds[key or name] = round(time.monotonic() - t0, 2)
                    return
            except Exception as e:  # not up yet
                last_err = e
            if time.monotonic() > deadline:
                raise self._fail(name, f"not {what} after {self.start_timeout}s "
                                       f"(last error: {last_err!r})")
            time.sleep(0.1)

    def _get(self, url: str, token: str | None = None, timeout: float = 2.0) -> tuple[int, str]:
        req = urllib.request.Request(url)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            ctx = self._ssl if url.startswith("https") else None
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def _start_etcd(self) -> None:
        assert self.workdir and self.bin_dir
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self._spawn("etcd", [
            str(self.bin_dir / "etcd"),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",          # test data only: much faster
            "--snapshot-count=100000",
            "--log-level=warn",
        ])
        self._wait("etcd", lambda: self._get(self.etcd_url + "/health")[0] == 200, "healthy")

    def _start_apiserver(self) -> None:
        assert self.workdir and self.bin_dir
        wd = self.workdir
        # A restart keeps the port, the serving certificate (cert-dir) and the keys.
        port = self.apiserver_port or free_port()
        self.apiserver_port = port
        self.server_url = f"https://127.0.0.1:{port}"
        sa_key = wd / "sa.key"
        if not sa_key.exists():
            _gen_sa_key(sa_key)
        (wd / "tokens.csv").write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        (wd / "apiserver-certs").mkdir(exist_ok=True)
        argv = [
            str(self.bin_dir / "kube-apiserver"),
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={wd / 'apiserver-certs'}",   # self-signed serving cert generated here
            f"--etcd-servers={self.etcd_url}",
            f"--token-auth-file={wd / 'tokens.csv'}",
            f"--authorization-mode={self.authorization_mode}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",  # only allocates ClusterIPs; no traffic
            "--allow-privileged=true",
            "--profiling=false",
            # The 'kubernetes' service's endpoints would be 127.0.0.1: invalid in a slice.
            "--endpoint-reconciler-type=none",
            f"-v={self.verbosity}",
        ]
        if self.admission_plugins_disabled:
            argv.append("--disable-admission-plugins=" + ",".join(self.admission_plugins_disabled))
        argv += self.extra_apiserver_args
        self._spawn("kube-apiserver", argv)
        self._wait("kube-apiserver",
                   lambda: self._get(self.server_url + "/readyz", self.token)[0] == 200,
                   "ready (/readyz)")
        self.kubeconfig_path = str(wd / "kubeconfig")
        Path(self.kubeconfig_path).write_text(self._kubeconfig())

    def _kubeconfig(self) -> str:
        # JSON is valid YAML: no yaml dependency needed.
        return json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.server_url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin",
                                                       "namespace": "default"}}],
            "current-context": "local",
            "preferences": {},
        }, indent=2) + "\n"

    def _start_controller_manager(self) -> None:
        assert self.workdir and self.bin_dir
        wd = self.workdir
        port = free_port()
        self.controller_manager_url = f"https://127.0.0.1:{port}"
        (wd / "kcm-certs").mkdir(exist_ok=True)
        argv = [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig_path}",
            f"--authentication-kubeconfig={self.kubeconfig_path}",
            f"--authorization-kubeconfig={self.kubeconfig_path}",
            # no client-CA / requestheader config exists in this cluster: don't look
            # it up (avoids 'configmap "extension-apiserver-authentication" not found')
            "--authentication-skip-lookup=true",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={wd / 'kcm-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={wd / 'sa.key'}",
            "--controllers=" + ",".join(self.controllers),
            "--profiling=false",
            f"-v={self.verbosity}",
        ]
        argv += self.extra_controller_manager_args
        self._spawn("kube-controller-manager", argv)
        self._wait("kube-controller-manager",
                   lambda: self._get(self.controller_manager_url + "/healthz")[0] == 200,
                   "healthy (/healthz)")
        if any(c in ("serviceaccount-controller", "serviceaccount", "*") for c in self.controllers):
            # proof that the controllers are actually running (informers synced)
            def sa_exists() -> bool:
                return self._get(self.server_url
                                 + "/api/v1/namespaces/default/serviceaccounts/default",
                                 self.token)[0] == 200
            self._wait("kube-controller-manager", sa_exists,
                       "running controllers (default ServiceAccount)", key="controllers-running")
