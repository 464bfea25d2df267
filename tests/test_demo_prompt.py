"""The demo's "press Enter" wait: Enter goes on, end of input says so, and a Ctrl-C ends it
whenever it arrives, even when its handler does not run on the thread blocked reading.

That last case is the interactive demo's lost Ctrl-C: with `input()`, a SIGINT handled just
after the prompt was printed and before the read(2) began only set CPython's pending flag,
and the demo went on waiting until Enter. It is made deterministic here by blocking SIGINT
in the waiting (main) thread, so the kernel hands it to another thread: the handler runs,
and nothing interrupts the read, exactly the state the race leaves."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

WAITER = r"""
import signal, sys, threading
from controlplane.demo.prompt import wait_for_enter

signal.signal(signal.SIGINT, signal.default_int_handler)
if sys.argv[1] == "elsewhere":
    # another thread to take the signal, then SIGINT blocked on this one
    threading.Thread(target=threading.Event().wait, daemon=True).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
try:
    print("line" if wait_for_enter("press Enter> ", sys.stdout) else "end of input",
          flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def start(mode: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", WAITER, mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert read_until(proc, b"press Enter> ", 30).endswith(b"press Enter> ")
    return proc


def read_until(proc: subprocess.Popen[bytes], want: bytes, timeout: float) -> bytes:
    """Its output, read until it holds `want` or `timeout` passed (then as it is)."""
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + timeout
    while want not in out:
        ready, _, _ = select.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        out += chunk
    return out


def finish(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


@pytest.mark.parametrize("mode", ["main", "elsewhere"])
def test_ctrl_c_ends_the_wait_at_once_on_whichever_thread_it_lands(mode: str) -> None:
    proc = start(mode)
    try:
        proc.send_signal(signal.SIGINT)
        # stdin stays open and silent: only the signal can end the wait
        out = read_until(proc, b"interrupted", 20)
        assert b"interrupted" in out, f"still waiting 20s after SIGINT: {out!r}"
        assert proc.wait(20) == 0
    finally:
        finish(proc)


def test_enter_goes_on_and_end_of_input_says_so() -> None:
    proc = start("main")
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert b"line" in read_until(proc, b"line", 20)
    finally:
        finish(proc)
    proc = start("main")
    try:
        assert proc.stdin is not None
        proc.stdin.close()
        assert b"end of input" in read_until(proc, b"end of input", 20)
    finally:
        finish(proc)
