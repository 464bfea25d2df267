"""The README's demo command: unattended, every step must see the expected traffic; and
however it is stopped (Ctrl-C at its terminal, SIGINT, SIGTERM), nothing it started is
left running."""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.demo.story import LIVE_PACE, MANIFESTS, REQUESTS, Demo, DemoFailed
from tests.harness import wait_until

DEMO = [sys.executable, "-m", "controlplane.cli", "demo"]


def children(pid: int) -> dict[int, str]:
    """The live child processes of pid: {pid: command line}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(entry.name)] = cmdline.strip()
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended: only its exit status is left to collect


def printed_dirs(output: str) -> list[str]:
    """The directories the demo said it made: its config directory, the sidecars'."""
    return re.findall(r"(/\S+)/config\s+\(edit", output) + re.findall(
        r"bootstrap (/\S+)/bootstrap.yaml", output)


def end_and_clean_up(proc: subprocess.Popen[Any], output: str) -> None:
    """After a test, pass or fail: a demo still running is stopped as a user would
    (SIGTERM: it stops what it started and removes its directories), killed if that
    does not work, and whatever it left is removed, so a failure leaves nothing behind
    (its children die with it: they were started with a parent-death signal)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for d in printed_dirs(output):
        shutil.rmtree(d, ignore_errors=True)


def assert_all_gone(started: dict[int, str], output: str) -> None:
    """No process the demo started is alive, and the directories it printed (its config
    directory, the sidecars' bootstraps) are gone: it stopped them itself, in order (its
    children would also die with it, but by SIGKILL, leaving their files)."""
    survivors = {pid: cmd for pid, cmd in started.items() if alive(pid)}
    assert not survivors, f"left running: {survivors}"
    dirs = printed_dirs(output)
    assert len(dirs) == 3, output
    left = [d for d in dirs if Path(d).exists()]
    assert not left, f"left behind: {left}"


def processes_of_a_running_demo(pid: int) -> dict[int, str]:
    """The control plane and both sidecars, once started."""
    def started() -> dict[int, str]:
        found = children(pid)
        envoys = [c for c in found.values() if "envoy" in c.split()[0]]
        serve = [c for c in found.values() if "controlplane.cli serve" in c]
        return found if len(envoys) == 2 and len(serve) == 1 else {}
    return wait_until(started, 30, what="the demo's control plane and sidecars")


@pytest.mark.e2e
def test_demo_runs_unattended() -> None:
    result = subprocess.run([*DEMO, "--no-interactive"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "8/8 steps saw what they expected" in result.stdout
    assert "NOT SEEN" not in result.stdout
    # proxy-status at the end shows both sidecars SYNCED for every type.
    rows = [line.split() for line in result.stdout.splitlines()
            if line.strip().startswith("productpage-")]
    assert len(rows) == 2 and all(r[2:6] == ["SYNCED"] * 4 for r in rows), rows


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_way_stops_everything_it_started(sig: signal.Signals) -> None:
    proc = subprocess.Popen([*DEMO, "--no-interactive"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(90, proc.kill)  # reading its output must not hang the suite
    watchdog.start()
    output: list[str] = []
    rest = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("[3]"):  # mid-way: traffic is being shifted
                break
        else:
            pytest.fail("the demo ended before step 3:\n" + "".join(output))
        started = processes_of_a_running_demo(proc.pid)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=20)
        assert proc.returncode == 130, "".join(output) + rest
        assert "interrupted" in rest and "Traceback" not in rest, rest
        assert_all_gone(started, "".join(output))
    finally:
        watchdog.cancel()
        end_and_clean_up(proc, "".join(output) + rest)


@pytest.mark.e2e
def test_ctrl_c_at_the_terminal_of_an_interactive_demo_stops_everything() -> None:
    """Interactive, as the README's first command runs it: a pseudo-terminal answers the
    first prompts with Enter, then types Ctrl-C. The terminal sends SIGINT to its
    foreground process group, that is the demo alone: the children it started have
    groups of their own, and the demo stops them."""
    master, slave = os.openpty()
    # The pseudo-terminal becomes the demo's controlling terminal in a small exec'd
    # launcher rather than in a preexec_fn: a preexec_fn forces fork() in this process,
    # which in a full run holds gRPC threads of earlier tests (gRPC then warns "skipping
    # fork() handlers"); without one, subprocess uses vfork and runs no fork handlers.
    launcher = ("import os, sys; os.login_tty(0); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    proc = subprocess.Popen([sys.executable, "-c", launcher, *DEMO[1:]], stdin=slave)
    os.close(slave)
    text = ""

    def read_until(pattern: str, timeout: float = 30) -> None:
        nonlocal text
        deadline = time.monotonic() + timeout
        while not re.search(pattern, text, re.DOTALL):
            ready, _, _ = select.select([master], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"no {pattern!r} within {timeout}s:\n{text}")
            try:
                chunk = os.read(master, 65536).decode(errors="replace")
            except OSError:  # EIO: the terminal's other side is closed
                chunk = ""
            if not chunk:
                pytest.fail(f"the demo ended before {pattern!r}:\n{text}")
            text += chunk

    try:
        read_until(r"\[1\].*press Enter")
        started = processes_of_a_running_demo(proc.pid)
        os.write(master, b"\r")
        read_until(r"\[2\].*press Enter")
        os.write(master, b"\r")
        entered = time.monotonic()
        # step 2's traffic ran, shown live as it grows, and step 3 asks: Ctrl-C at once,
        # the moment the prompt shows
        read_until(r"\[3\].*press Enter")
        took = time.monotonic() - entered
        assert "expected about 80% v1" in text
        os.write(master, b"\x03")
        read_until("interrupted")
        assert proc.wait(20) == 130
        assert "Traceback" not in text, text
        assert_all_gone(started, text)
    finally:
        end_and_clean_up(proc, text)
        os.close(master)
    # Paced for a person: the tally was redrawn as often as the pace says, and the
    # requests went at its rate (a lower bound only: a loaded machine is slower, never
    # faster, so this cannot flake).
    step2 = text[text.index("[2]"):text.index("[3]")]
    redraws = re.findall(rf"\r    {REQUESTS} requests to reviews: [^\r]*", step2)
    assert len(redraws) == LIVE_PACE.redraws(REQUESTS), redraws
    assert took >= LIVE_PACE.seconds(REQUESTS - 1), took


@contextlib.contextmanager
def demo_whose_control_plane_runs(code: str) -> Iterator[Demo]:
    """A demo whose "control plane" is `python -c code`, its output in the demo's log."""
    demo = Demo(MANIFESTS, interactive=False, out=io.StringIO())
    try:
        with demo.log_path.open("w") as log:
            demo.serve = demo.spawn([sys.executable, "-c", code], stdout=log, stderr=log)
        yield demo
    finally:
        demo.stop()


def test_a_control_plane_that_exits_at_start_is_reported_with_its_log() -> None:
    """The demo reads the control plane's ports from its "serving" line. If it exits
    first, the demo stops at once and says so, with the end of its log: not a sidecar
    timing out 30 s later with the cause deleted along the demo's directory."""
    with demo_whose_control_plane_runs(
            "import sys; print('cannot_listen listener=xds'); sys.exit(1)") as demo:
        started = time.monotonic()
        with pytest.raises(DemoFailed) as failed:
            demo._serving(60)
        assert time.monotonic() - started < 30
    assert "exited with 1" in str(failed.value), failed.value
    assert "cannot_listen listener=xds" in str(failed.value), failed.value


def test_a_control_plane_that_never_serves_is_reported_running() -> None:
    with demo_whose_control_plane_runs(
            "import time; print('loading', flush=True); time.sleep(60)") as demo, \
            pytest.raises(DemoFailed) as failed:
        demo._serving(1)
    assert "is running" in str(failed.value) and "loading" in str(failed.value)


@pytest.mark.e2e
def test_the_ports_come_from_the_serving_line_of_the_real_control_plane() -> None:
    demo = Demo(MANIFESTS, interactive=False, out=io.StringIO())
    try:
        demo.start()
        assert demo.xds_port and demo.admin_address and demo.http_address
        with urllib.request.urlopen(f"http://{demo.http_address}/healthz", timeout=5) as r:
            assert r.status == 200
        assert all(e.admin("/ready").strip() == "LIVE" for e in demo.envoys)
        status = subprocess.run([*DEMO[:-1], "proxy-status", "--server", demo.admin_address],
                                capture_output=True, text=True, timeout=30)
        assert "productpage-0" in status.stdout, status.stdout + status.stderr
    finally:
        demo.stop()
