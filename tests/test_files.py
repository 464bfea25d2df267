"""The file source: a watched directory mirrored into the store, losing nothing to
bad input."""

from __future__ import annotations

from pathlib import Path

import structlog
import yaml

from controlplane.model.meta import Key
from controlplane.sources.files import FileSource
from controlplane.store import Store
from tests.harness import write_yaml
from tests.manifests import pod, service, virtual_service

SVC = Key("Service", "default", "reviews")


def scan(source: FileSource) -> None:
    """Two scans: a changed file is read once it held still for one scan."""
    source.sync_once()
    source.sync_once()


def test_loads_multi_document_files_lists_and_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    write_yaml(tmp_path / "a.yaml", service("reviews", 80), {"apiVersion": "apps/v1",
                                                            "kind": "Deployment"})
    (tmp_path / "sub" / "b.yml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "List", "items": [pod("p1", "10.0.0.1", {"app": "r"})]}))
    write_yaml(tmp_path / ".hidden" / "c.yaml", service("hidden", 80))
    (tmp_path / "notes.txt").write_text("kind: Service")
    store = Store()
    FileSource(store, tmp_path).sync_once(settle=False)
    assert {str(k) for k in store._objects} == {"Service default/reviews", "Pod default/p1"}


def test_broken_yaml_keeps_the_files_last_good_objects(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write_yaml(f, service("reviews", 80))
    store = Store()
    source = FileSource(store, tmp_path)
    source.sync_once(settle=False)
    f.write_text("kind: Service\n  metadata: [broken\n")
    with structlog.testing.capture_logs() as logs:
        scan(source)
    assert store.get(SVC) is not None
    [entry] = [e for e in logs if e["event"] == "file_rejected"]
    assert entry["file"] == str(f) and entry["log_level"] == "error"


def test_invalid_object_keeps_its_previous_version_and_others_flow(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    good_vs = virtual_service("r", ["reviews"], [{"route": [{"destination":
                                                             {"host": "reviews"}}]}])
    write_yaml(f, service("reviews", 80), good_vs)
    store = Store()
    source = FileSource(store, tmp_path)
    source.sync_once(settle=False)
    bad_vs = virtual_service("r", ["reviews"], [{"route": [
        {"destination": {"host": "reviews", "subset": "a"}, "weight": 10},
        {"destination": {"host": "reviews", "subset": "b"}, "weight": 10}]}])
    write_yaml(f, service("reviews", 81), bad_vs)
    with structlog.testing.capture_logs() as logs:
        scan(source)
    assert store.get(SVC).ports[0].port == 81  # the good object's edit went through
    vs = store.get(Key("VirtualService", "default", "r"))
    assert vs is not None and vs.http[0].route[0].destination.subset == ""  # previous one
    [entry] = [e for e in logs if e["event"] == "object_rejected"]
    assert entry["object"] == "VirtualService default/r"
    assert entry["file"] == str(f)
    assert entry["errors"] == ["spec.http[0].route: weights must add up to 100, got 20"]
    assert entry["kept"] == "previous version"


def test_deleting_a_file_or_an_object_deletes_it_from_the_store(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write_yaml(f, service("reviews", 80), pod("p1", "10.0.0.1", {}))
    store = Store()
    source = FileSource(store, tmp_path)
    source.sync_once(settle=False)
    write_yaml(f, service("reviews", 80))
    scan(source)
    assert store.get(Key("Pod", "default", "p1")) is None
    f.unlink()
    source.sync_once()
    assert store.get(SVC) is None


def test_a_file_is_read_once_it_holds_still(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write_yaml(f, service("reviews", 80))
    store = Store()
    source = FileSource(store, tmp_path)
    source.sync_once(settle=False)
    f.write_text("")  # a writer truncated the file and has not written yet
    source.sync_once()
    assert store.get(SVC) is not None
    write_yaml(f, service("reviews", 82))
    source.sync_once()
    assert store.get(SVC).ports[0].port == 80
    source.sync_once()
    assert store.get(SVC).ports[0].port == 82


def test_missing_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    store = Store()
    with structlog.testing.capture_logs() as logs:
        FileSource(store, tmp_path / "nope").sync_once()
    assert logs[0]["event"] == "config_dir_missing"
