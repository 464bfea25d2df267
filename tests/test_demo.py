"""The README's demo command, unattended: every step must see the expected traffic."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.e2e
def test_demo_runs_unattended() -> None:
    result = subprocess.run([sys.executable, "-m", "controlplane.cli", "demo",
                             "--no-interactive"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6/6 steps saw the expected traffic" in result.stdout
