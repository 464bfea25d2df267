"""Waiting for Enter in a way a signal always ends.

`input()` prints its prompt and then blocks in read(2). A SIGINT whose handler runs
after the prompt but before that read (a Ctrl-C typed the moment the prompt shows, or
on a loaded machine), or on another thread of the process, only sets CPython's
"signal pending" flag: nothing interrupts the read, and the KeyboardInterrupt is raised
when the user next presses Enter. Here the wait is a select() on stdin *and* a wakeup
pipe that CPython's signal handler writes to from whatever thread and at whatever
moment it runs, so a pending signal always wakes the main thread, which then raises.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterator
from typing import TextIO


@contextlib.contextmanager
def signal_wakeup() -> Iterator[int]:
    """A pipe's read end that becomes readable when any signal arrives (main thread only:
    signal.set_wakeup_fd's rule)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)  # the handler must never block writing
    old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    try:
        yield r
    finally:
        signal.set_wakeup_fd(old)
        os.close(r)
        os.close(w)


def wait_for_enter(prompt: str, out: TextIO, fd: int = 0) -> bool:
    """Show prompt and wait for a line on fd: True once it came, False at the end of input
    (or no input at all). A signal whose handler raises (Ctrl-C) ends the wait, whenever
    it arrives."""
    with signal_wakeup() as woken:
        out.write(prompt)
        out.flush()
        while True:
            try:
                ready, _, _ = select.select([fd, woken], [], [])
            except OSError:  # fd closed: no input will ever come
                return False
            # A signal's Python handler runs as soon as select() returns (the main
            # thread executes bytecode again): Ctrl-C raises KeyboardInterrupt right here.
            if woken in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(woken, 512)
            if fd in ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return False
                if b"\n" in chunk or b"\r" in chunk:  # \r: a terminal in raw mode
                    return True
