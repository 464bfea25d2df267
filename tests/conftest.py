from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane import log as logsetup
from controlplane.model.parse import key_of, parse_object
from tests.harness import ControlPlane, Envoy, Upstream, iter_ips

logsetup.configure("warning", cache=False)


_configure = logsetup.configure


@pytest.fixture(autouse=True)
def _test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that runs the CLI in-process reconfigures logging; every test starts from
    the tests' configuration (uncached, so capture_logs sees every logger). And the CLI's
    own configuration is never cached here: a logger cached on first use keeps that
    test's captured stderr for good, and once pytest closes it every later log call
    through that logger raises inside whatever was logging (a Kubernetes source that
    then never syncs)."""
    _configure("warning", cache=False)

    def uncached(level: str = "info", fmt: str = "console", *, cache: bool = True) -> None:
        _configure(level, fmt, cache=False)
    monkeypatch.setattr(logsetup, "configure", uncached)

_IPS = iter_ips(10)


@pytest.fixture
def ip() -> Callable[[], str]:
    """A fresh loopback address (all of 127.0.0.0/8 reaches lo) for each call."""
    return lambda: next(_IPS)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    return d


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    plane = ControlPlane()
    yield plane
    plane.stop()


@pytest.fixture
def file_cp(config_dir: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(config_dir)
    yield plane
    plane.stop()


def apply_docs(plane: ControlPlane, *docs: dict[str, Any]) -> None:
    objs = [parse_object(d) for d in docs]
    plane.run(lambda: [plane.store.apply(o) for o in objs])


def delete_docs(plane: ControlPlane, *docs: dict[str, Any]) -> None:
    keys = [key_of(parse_object(d)) for d in docs]
    plane.run(lambda: [plane.store.delete(k) for k in keys])


@pytest.fixture
def upstream() -> Iterator[Callable[..., Upstream]]:
    started: list[Upstream] = []

    def make(*args: Any, **kwargs: Any) -> Upstream:
        u = Upstream(*args, **kwargs)
        started.append(u)
        return u
    yield make
    for u in started:
        u.stop()


@pytest.fixture(params=["sotw", "delta"])
def xds_mode(request: pytest.FixtureRequest) -> str:
    """Every test with a real Envoy runs twice: state-of-the-world and incremental xDS."""
    return str(request.param)


@pytest.fixture
def envoy(xds_mode: str) -> Iterator[Callable[..., Envoy]]:
    """Start real Envoys (in the test's xDS mode). Each must end with zero
    `update_rejected`: everything the translator produced was accepted. A test that
    injects a bad resource on purpose passes allow_rejections=True."""
    started: list[Envoy] = []

    def make(*args: Any, allow_rejections: bool = False, ready: bool = True,
             **kwargs: Any) -> Envoy:
        kwargs.setdefault("delta", xds_mode == "delta")
        e = Envoy(*args, **kwargs)
        e.allow_rejections = allow_rejections  # type: ignore[attr-defined]
        started.append(e)
        if ready:
            e.wait_ready()
        return e
    yield make
    try:
        for e in started:
            if not e.allow_rejections and e.proc and e.proc.poll() is None:  # type: ignore[attr-defined]
                assert e.update_rejected() == {}, f"envoy {e.node_id} rejected config"
    finally:
        for e in started:
            e.stop()
