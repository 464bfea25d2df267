"""The README's "Using it" block, run exactly as written: a newcomer pastes it into a shell
after the Quick start, so it has to end in a 200 from the service, not a 503."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import wait_until

ROOT = Path(__file__).resolve().parents[1]
# Starting Envoy and the control plane takes a few seconds; the block's own curl retries
# for about 30 s. Far beyond both, so only a block that hangs (a foreground server) hits it.
TIMEOUT = 120.0


def using_it_block(readme: str) -> str:
    """The first ```bash block of the "Using it" section, verbatim."""
    section = readme.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```bash\n(.*?)^```$", section, re.S | re.M)
    assert found, "README's 'Using it' section has no ```bash block"
    return found.group(1)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's block uses curl")
def test_using_it_block_runs_as_written(tmp_path: Path) -> None:
    block = using_it_block((ROOT / "README.md").read_text())
    # A checkout as the Quick start leaves it: .venv (the one running these tests, which
    # scripts/test made) and the repository's files, in a directory of its own so the
    # block's envoy.yaml and logs do not land in the real checkout.
    venv = Path(sys.prefix)
    assert (venv / "bin" / "controlplane").exists(), f"{venv} is not the project's venv"
    (tmp_path / ".venv").symlink_to(venv)
    (tmp_path / "controlplane").symlink_to(ROOT / "controlplane")  # the demo's manifests
    # The code of this checkout, whatever checkout the venv's editable install points at.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A session of its own: everything the block starts in the background is in one
    # process group, which the test can check and kill whatever happens.
    proc = subprocess.Popen(["bash", "-c", block], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"the block did not finish within {TIMEOUT:.0f}s\nstdout:\n{out}\n"
                        f"stderr:\n{err}\n{logs(tmp_path)}")
        report = f"stdout:\n{out}\nstderr:\n{err}\n{logs(tmp_path)}"
        assert "HTTP/1.1 200 OK" in out, report
        answers = [json.loads(line) for line in out.splitlines()
                   if line.startswith('{"service"')]
        assert len(answers) == 1, report
        assert answers[0]["service"] == "reviews", report
        assert (answers[0]["pod"], answers[0]["address"]) in {
            ("reviews-v1-0", "127.0.10.11:8080"), ("reviews-v2-0", "127.0.10.12:8080")}, report
        assert re.search(r"^web-1\s+web-1\s+SYNCED\s+SYNCED\s+SYNCED\s+SYNCED\s", out, re.M), (
            report)
        # The block's last line stops everything it started.
        wait_until(lambda: not group_alive(proc.pid), timeout=10,
                   what="every process the block started to stop")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def logs(directory: Path) -> str:
    return "".join(f"{p.name}:\n{p.read_text()[-3000:]}\n"
                   for p in sorted(directory.glob("*.log")))
