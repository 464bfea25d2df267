"""The benchmark driver: the same simulated proxies against our control plane, the floor
and the go-control-plane peer, one after the other, figures side by side.

    python -m benchmarks.run --proxies 100 [--services 1000 --endpoints 10]
        [--targets ours,floor,go] [--mode sotw] [--repeats 3] [--per-process 250]

For each target: start the server (its own process), start the client processes, wait
until every proxy ACKed CDS, EDS, LDS and RDS, then `--repeats` endpoint changes and
`--repeats` VirtualService changes (each armed in the clients, triggered, collected),
then a connect storm (every proxy drops its stream and reconnects at the same instant).
Every process is started in a session of its own and killed at the end, on error and on
Ctrl-C. Times are CLOCK_MONOTONIC, shared by every process on Linux.

Latency "from change" starts at the store write for ours (so it includes the debounce
window and the translation) and at the trigger for the floor and go (which swap
prebuilt snapshots); for ours it is also given from the end of the debounce window (the
publish start) and from the end of the publish (pushing alone, comparable to the others).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import queue
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import mesh as M
from benchmarks.snapshot import change_plan

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CONTROLPLANE_BENCH_CACHE",
                            Path.home() / ".cache" / "controlplane" / "bench"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# -- child processes ---------------------------------------------------------------------------
class Child:
    """A child process speaking one JSON object per line on stdin/stdout."""

    live: list[Child] = []

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.stderr = open(log_dir / f"{name}.stderr", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            text=True, bufsize=1, start_new_session=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        Child.live.append(self)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no answer within {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"{self.name} exited ({self.proc.poll()}); see "
                               f"{self.stderr.name}")
        return json.loads(line)

    def ask(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(cmd)
        return self.recv(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # its own session: only its tree
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.stderr.close()
        if self in Child.live:
            Child.live.remove(self)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask({"cmd": "quit"}, 5)
                self.proc.wait(timeout=5)
            except Exception:
                pass
        self.kill()


def kill_all() -> None:
    for child in list(Child.live):
        child.kill()


def _on_signal(signum: int, frame: Any) -> None:
    kill_all()
    sys.exit(128 + signum)


# -- /proc --------------------------------------------------------------------------------------
def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


# -- figures -------------------------------------------------------------------------------------
def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


@dataclass
class Push:
    kind: str
    gen: int
    latencies: list[float]  # from the change (store write / trigger), seconds
    after_debounce: list[float] | None
    after_publish: list[float] | None
    missing: int
    bytes: int
    responses: int
    cpu: float
    translate: float | None


@dataclass
class Result:
    target: str
    proxies: int
    error: str | None = None
    initial_sync: float = float("nan")
    rss_idle: float = float("nan")
    rss_connected: float = float("nan")
    rss_peak: float = float("nan")
    cpu_connect: float = float("nan")
    pushes: list[Push] = field(default_factory=list)
    storm: float = float("nan")
    storm_missing: int = 0
    storm_cpu: float = float("nan")
    full_translate: float | None = None


# -- profiles --------------------------------------------------------------------------------------
def start_py_spy(a: argparse.Namespace, pid: int, logs: Path, target: str
                 ) -> subprocess.Popen[bytes] | None:
    """py-spy over the server's changes phase (Python targets, with --py-spy)."""
    if not a.py_spy or target == "go":
        return None
    out = logs / f"{target}.py-spy.txt"
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                            str(pid), "--rate", "250", "--format", "raw", "--nonblocking",
                            *(["--duration", str(a.py_spy_seconds)] if a.py_spy_seconds else []),
                            "-o", str(out)], stdout=subprocess.DEVNULL,
                           stderr=open(logs / f"{target}.py-spy.stderr", "w"),  # noqa: SIM115
                           start_new_session=True)
    time.sleep(1.0)
    print(f"  py-spy recording {target} into {out}", file=sys.stderr)
    return spy


def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


# -- one target -----------------------------------------------------------------------------------
def start_server(target: str, a: argparse.Namespace, dump: Path | None, logs: Path) -> Child:
    py = sys.executable
    if target == "ours":
        argv = [py, "-m", "benchmarks.ours", "--services", str(a.services),
                "--endpoints", str(a.endpoints)]
        if a.trace_memory:
            argv += ["--trace-memory", str(logs / "ours.memory.txt")]
        if a.large_push_limit is not None:
            argv += ["--large-push-limit", str(a.large_push_limit)]
    elif target == "floor":
        argv = [py, "-m", "benchmarks.floor", "--dump", str(dump)]
    else:
        argv = [str(a.go_binary), "--dump", str(dump)]
    server = Child(f"server-{target}", argv, logs)
    ready = server.recv(300)
    server.port = ready["port"]  # type: ignore[attr-defined]
    return server


def run_target(target: str, a: argparse.Namespace, dump: Path | None, logs: Path) -> Result:
    res = Result(target, a.proxies)
    server = start_server(target, a, dump, logs)
    clients: list[Child] = []
    try:
        pid = server.pid
        time.sleep(0.5)
        res.rss_idle = rss_mb(pid)
        cpu0 = cpu_s(pid)
        t0 = now()
        n_procs = math.ceil(a.proxies / a.per_process)
        for i in range(n_procs):
            count = min(a.per_process, a.proxies - i * a.per_process)
            clients.append(Child(f"clients-{target}-{i}", [
                sys.executable, "-m", "benchmarks.clients",
                "--target", f"127.0.0.1:{server.port}",  # type: ignore[attr-defined]
                "--count", str(count), "--first-index", str(i * a.per_process),
                "--mode", a.mode], logs))
        for c in clients:
            c.recv(120)
        synced = []
        for c in clients:
            c.send({"cmd": "wait_synced", "timeout": a.sync_timeout})
        for c in clients:
            r = c.recv(a.sync_timeout + 30)
            if r.get("fatal"):
                raise RuntimeError(r["fatal"])
            if r.get("errors"):
                print(f"  {c.name}: errors {r['errors']}", file=sys.stderr)
            synced.extend(r["times"])
        if len(synced) < a.proxies:
            raise RuntimeError(f"only {len(synced)}/{a.proxies} proxies synced within "
                               f"{a.sync_timeout} s")
        res.initial_sync = max(synced) - t0
        res.cpu_connect = cpu_s(pid) - cpu0
        time.sleep(1.0)
        res.rss_connected = rss_mb(pid)

        spy = start_py_spy(a, pid, logs, target)
        publishes: list[dict[str, Any]] = []
        for k, (kind, gen) in enumerate(change_plan(a.repeats), start=1):
            change = M.make_change(M.Scenario(a.services, a.endpoints), kind, gen)
            for c in clients:
                c.ask({"cmd": "arm", "type": change.type_short, "needle": change.needle}, 30)
            time.sleep(a.pause)
            c0 = cpu_s(pid)
            if target == "ours":
                t_change = server.ask({"cmd": "change", "kind": kind, "gen": gen}, 30)["t"]
            else:
                t_change = server.ask({"cmd": "state", "k": k}, 30)["t"]
            timeout = a.push_timeout
            for c in clients:
                c.send({"cmd": "collect", "timeout": timeout, "settle": 0.3})
            acks: list[float] = []
            missing = nbytes = nresp = 0
            for c in clients:
                r = c.recv(timeout + 30)
                if r.get("fatal"):
                    raise RuntimeError(r["fatal"])
                acks += r["acks"]
                missing += r["missing"]
                nbytes += r["bytes"]
                nresp += r["responses"]
            cpu = cpu_s(pid) - c0
            after_debounce = after_publish = None
            took = None
            if target == "ours":
                publishes = server.ask({"cmd": "publishes"}, 30)["publishes"]
                pub = next((p for p in publishes if p["change_seen"] == t_change), None)
                if pub is not None:
                    after_debounce = [t - pub["started"] for t in acks]
                    after_publish = [t - pub["started"] - pub["took"] for t in acks]
                    took = pub["took"]
            res.pushes.append(Push(kind, gen, [t - t_change for t in acks], after_debounce,
                                   after_publish, missing, nbytes, nresp, cpu, took))
            print(f"  {target} {kind} #{gen}: {len(acks)} ACKed, {missing} missing, "
                  f"max {max(acks, default=t_change) - t_change:.3f} s", file=sys.stderr)
        stop_py_spy(spy)
        if target == "ours" and publishes:
            res.full_translate = publishes[0]["took"]

        # connect storm: every proxy drops its stream and reconnects at once
        at = now() + 1.0
        c0 = cpu_s(pid)
        for c in clients:
            c.send({"cmd": "storm", "at": at, "timeout": a.sync_timeout})
        times: list[float] = []
        for c in clients:
            r = c.recv(a.sync_timeout + 60)
            times += r["times"]
        res.storm_cpu = cpu_s(pid) - c0
        res.storm_missing = a.proxies - len(times)
        res.storm = max(times) - at if times else float("nan")
        res.rss_peak = rss_mb(pid, "VmHWM")
        print(f"  {target} storm: {len(times)} synced in {res.storm:.2f} s", file=sys.stderr)
    except Exception as exc:
        res.error = f"{type(exc).__name__}: {exc}"
        print(f"  {target}: {res.error}", file=sys.stderr)
    finally:
        for c in clients:
            c.stop()
        server.stop()
    return res


# -- report ----------------------------------------------------------------------------------------
def _ms(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x * 1000:.0f}"


def summarize(r: Result) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        "initial sync, all SYNCED (s)": r.initial_sync,
        "connect storm, all SYNCED again (s)": r.storm,
        "  server CPU s during storm": r.storm_cpu,
        "RSS idle (MB)": r.rss_idle,
        "RSS all connected (MB)": r.rss_connected,
        "RSS peak (MB)": r.rss_peak,
    }
    for kind, label in (("endpoint", "endpoint change"), ("vs", "VirtualService change")):
        ps = [p for p in r.pushes if p.kind == kind]
        if not ps:
            continue
        lat = [x for p in ps for x in p.latencies]
        out[f"{label}: from change p50 (ms)"] = pct(lat, 50) * 1000
        out[f"{label}: from change p99 (ms)"] = pct(lat, 99) * 1000
        out[f"{label}: from change max (ms)"] = max(lat, default=float("nan")) * 1000
        if all(p.after_debounce is not None for p in ps):
            ad = [x for p in ps for x in p.after_debounce or []]
            ap = [x for p in ps for x in p.after_publish or []]
            out[f"{label}: after debounce p99 (ms)"] = pct(ad, 99) * 1000
            out[f"{label}: after debounce max (ms)"] = max(ad, default=float("nan")) * 1000
            out[f"{label}: push only p50 (ms)"] = pct(ap, 50) * 1000
            out[f"{label}: push only p99 (ms)"] = pct(ap, 99) * 1000
            out[f"{label}: push only max (ms)"] = max(ap, default=float("nan")) * 1000
            out[f"{label}: translation+publish (ms)"] = statistics.median(
                p.translate for p in ps if p.translate is not None) * 1000
        else:  # the floor and go push from the trigger: from change == push only
            out[f"{label}: push only p50 (ms)"] = pct(lat, 50) * 1000
            out[f"{label}: push only p99 (ms)"] = pct(lat, 99) * 1000
            out[f"{label}: push only max (ms)"] = max(lat, default=float("nan")) * 1000
        out[f"{label}: missing ACKs"] = float(sum(p.missing for p in ps))
        out[f"{label}: bytes per proxy per push"] = statistics.median(
            p.bytes / max(1, r.proxies) for p in ps)
        out[f"{label}: responses per proxy per push"] = statistics.median(
            p.responses / max(1, r.proxies) for p in ps)
        out[f"{label}: server CPU s per push"] = statistics.median(p.cpu for p in ps)
    if r.full_translate is not None:
        out["full translation+publish, first snapshot (ms)"] = r.full_translate * 1000
    return out


def fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}"


def report(results: list[Result], command: str) -> str:
    rows: dict[str, dict[str, float | None]] = {}
    for r in results:
        for k, v in summarize(r).items():
            rows.setdefault(k, {})[r.target] = v
    names = [r.target for r in results]
    ratio_cols = [t for t in ("floor", "go") if t in names and "ours" in names]
    head = ["figure", *names, *[f"ours/{t}" for t in ratio_cols]]
    lines = []
    for k, vals in rows.items():
        row = [k, *[fmt(vals.get(n)) for n in names]]
        for t in ratio_cols:
            o, b = vals.get("ours"), vals.get(t)
            ok = (o is not None and b not in (None, 0) and not math.isnan(o)
                  and not math.isnan(b) and "missing" not in k)
            row.append(f"{o / b:.2f}x" if ok else "")  # type: ignore[operator]
        lines.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)),
           "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
            for row in lines]
    for r in results:
        if r.error:
            out.append(f"{r.target}: FAILED {r.error}")
    out.append("")
    out.append(f"reproduce: {command}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", type=int, default=100)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--targets", default="ours,floor,go")
    p.add_argument("--mode", choices=["sotw", "delta"], default="sotw")
    p.add_argument("--repeats", type=int, default=3, help="changes of each kind")
    p.add_argument("--per-process", type=int, default=250, help="proxies per client process")
    p.add_argument("--sync-timeout", type=float, default=300)
    p.add_argument("--push-timeout", type=float, default=60)
    p.add_argument("--pause", type=float, default=1.0, help="quiet seconds before a change")
    p.add_argument("--go-binary", type=Path, default=None,
                   help="default: build benchmarks/goserver into ~/.cache/controlplane/bench")
    p.add_argument("--py-spy-seconds", type=int, default=0,
                   help="record only this long (the endpoint changes come first)")
    p.add_argument("--py-spy", action="store_true",
                   help="record the Python servers with py-spy during the changes (raw "
                        "collapsed stacks in the run directory)")
    p.add_argument("--large-push-limit", type=int, default=None, metavar="N",
                   help="our server's --large-push-limit (default: its own)")
    p.add_argument("--trace-memory", action="store_true",
                   help="our server writes RSS beside tracemalloc's top allocations at each "
                        "new high into ours.memory.txt in the run directory (slows it)")
    p.add_argument("--json", type=Path, default=None, help="also write raw results here")
    a = p.parse_args(argv)
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    bad = set(targets) - {"ours", "floor", "go"}
    if bad:
        p.error(f"unknown targets {sorted(bad)}")
    if a.mode == "delta" and "floor" in targets:
        print("note: the floor speaks SotW only; it is skipped with --mode delta",
              file=sys.stderr)
        targets.remove("floor")

    command = shlex.join([
        ".venv/bin/python", "-m", "benchmarks.run", "--proxies", str(a.proxies),
        "--services", str(a.services), "--endpoints", str(a.endpoints),
        "--targets", ",".join(targets), "--mode", a.mode, "--repeats", str(a.repeats),
        "--per-process", str(a.per_process),
        *(["--large-push-limit", str(a.large_push_limit)]
          if a.large_push_limit is not None else [])])
    atexit.register(kill_all)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    print(f"logs and snapshot dump: {work}", file=sys.stderr)
    dump = None
    if "go" in targets and a.go_binary is None:
        built = subprocess.run([str(ROOT / "benchmarks/goserver/build.sh")], check=True,
                               capture_output=True, text=True)
        a.go_binary = Path(built.stdout.strip().splitlines()[-1])
    if {"floor", "go"} & set(targets):
        dump = work / "dump"
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "benchmarks.snapshot", "--out", str(dump),
                        "--services", str(a.services), "--endpoints", str(a.endpoints),
                        "--repeats", str(a.repeats)], check=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
        print(f"snapshot dump: {time.monotonic() - t:.1f} s", file=sys.stderr)

    results = []
    for target in targets:
        print(f"{target}: {a.proxies} proxies ({a.mode})", file=sys.stderr)
        results.append(run_target(target, a, dump, work))
    text = report(results, command)
    header = (f"{a.proxies} proxies ({a.mode}), {a.services} services x {a.endpoints} "
              f"endpoints, {a.repeats} changes of each kind, {os.cpu_count()} CPUs")
    print(header)
    print(text)
    if a.json:
        a.json.write_text(json.dumps([r.__dict__ | {"pushes": [p.__dict__ for p in r.pushes]}
                                      for r in results], default=str))
    if dump is not None:
        for f in sorted(dump.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        dump.rmdir()


if __name__ == "__main__":
    main()
