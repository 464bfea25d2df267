"""The file source: a watched directory mirrored into the store, losing nothing to
bad input."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import structlog
import yaml

from controlplane.model.meta import Key
from controlplane.sources import manifests
from controlplane.sources.files import FileSource
from controlplane.store import Store
from tests.harness import write_yaml
from tests.manifests import pod, pods_yaml, service, virtual_service

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
        {"destination": {"host": "reviews", "subset": "a"}, "weight": 0},
        {"destination": {"host": "reviews", "subset": "b"}, "weight": 0}]}])
    write_yaml(f, service("reviews", 81), bad_vs)
    with structlog.testing.capture_logs() as logs:
        scan(source)
    assert store.get(SVC).ports[0].port == 81  # the good object's edit went through
    vs = store.get(Key("VirtualService", "default", "r"))
    assert vs is not None and vs.http[0].route[0].destination.subset == ""  # previous one
    [entry] = [e for e in logs if e["event"] == "object_rejected"]
    assert entry["object"] == "VirtualService default/r"
    assert entry["file"] == str(f)
    assert entry["errors"] == ["spec.http[0].route: weights are all 0; at least one "
                               "destination needs a weight"]
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


# -- the same object in several files --------------------------------------------------------

def test_removing_the_newer_of_two_definitions_serves_the_older_again(tmp_path: Path) -> None:
    old, new = tmp_path / "reviews.yaml", tmp_path / "a-reviews-v2.yaml"  # new sorts first:
    write_yaml(old, service("reviews", 80))  # the newer one wins by time, not by name
    store = Store()
    source = FileSource(store, tmp_path)
    source.sync_once(settle=False)
    write_yaml(new, service("reviews", 81))
    with structlog.testing.capture_logs() as logs:
        scan(source)
        scan(source)  # nothing changed: not reported again
    assert store.get(SVC).ports[0].port == 81
    [entry] = [e for e in logs if e["event"] == "duplicate_object"]
    assert entry["log_level"] == "warning" and entry["object"] == "Service default/reviews"
    assert entry["files"] == [str(new), str(old)] and entry["used"] == str(new)
    assert source.problems() == [f"Service default/reviews: defined differently in {new}, "
                                 f"{old}; using {new}"]

    new.unlink()
    source.sync_once()
    assert store.get(SVC).ports[0].port == 80  # the remaining definition, served again
    assert source.problems() == []

    write_yaml(new, service("reviews", 82))
    scan(source)
    assert store.get(SVC).ports[0].port == 82
    write_yaml(new, pod("p1", "10.0.0.1", {}))  # edited: it no longer holds the Service
    scan(source)
    assert store.get(SVC).ports[0].port == 80
    old.unlink()
    source.sync_once()
    assert store.get(SVC) is None  # the last definition went


def test_files_loaded_together_tie_by_path_and_equal_copies_are_no_conflict(
        tmp_path: Path) -> None:
    write_yaml(tmp_path / "a.yaml", service("reviews", 80))
    write_yaml(tmp_path / "b.yaml", service("reviews", 81))
    write_yaml(tmp_path / "c.yaml", pod("p1", "10.0.0.1", {}))
    write_yaml(tmp_path / "d.yaml", pod("p1", "10.0.0.1", {}))
    store = Store()
    with structlog.testing.capture_logs() as logs:
        FileSource(store, tmp_path).sync_once(settle=False)
    assert store.get(SVC).ports[0].port == 81  # as `kubectl apply -f DIR` leaves it
    assert [e["object"] for e in logs if e["event"] == "duplicate_object"] == [
        "Service default/reviews"]


# -- several paths to one file -----------------------------------------------------------------

def test_symlinks_to_the_directory_read_each_file_once_and_removing_them_loses_nothing(
        tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    (cfg / "sub").mkdir(parents=True)
    write_yaml(cfg / "a.yaml", service("reviews", 80))
    write_yaml(cfg / "sub" / "b.yaml", pod("p1", "10.0.0.1", {}))
    (cfg / "again").symlink_to(".")  # a loop
    store = Store()
    source = FileSource(store, cfg)
    with structlog.testing.capture_logs() as logs:
        source.sync_once(settle=False)
    assert sorted(source.files) == [cfg / "a.yaml", cfg / "sub" / "b.yaml"]  # read once each
    assert [e for e in logs if e["log_level"] != "info"] == []
    expected = {SVC, Key("Pod", "default", "p1")}
    assert {k for k in expected if store.get(k) is not None} == expected

    (cfg / "link").symlink_to("sub")  # a second path to the subdirectory
    (cfg / "alias.yaml").symlink_to("a.yaml")  # and to a file
    generation = store.generation
    scan(source)
    for link in ("again", "link", "alias.yaml"):
        (cfg / link).unlink()
        scan(source)
    assert store.generation == generation  # nothing deleted, nothing re-applied
    assert sorted(source.files) == [cfg / "a.yaml", cfg / "sub" / "b.yaml"]


def test_nested_symlink_loops_end(tmp_path: Path) -> None:
    """Walking every path through two loops is exponential: the scan must list each real
    directory once (the code before this test never returned here)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    write_yaml(tmp_path / "a" / "b" / "c.yaml", service("reviews", 80))
    for d in (tmp_path, tmp_path / "a", tmp_path / "a" / "b"):
        (d / "top").symlink_to(tmp_path)
        (d / "here").symlink_to(d)
    store = Store()
    source = FileSource(store, tmp_path)
    source.sync_once(settle=False)
    assert list(source.files) == [tmp_path / "a" / "b" / "c.yaml"]
    assert store.get(SVC) is not None


def test_a_file_reached_only_through_a_link_survives_the_links_replacement(
        tmp_path: Path) -> None:
    """A directory only linked into the tree, then moved: same file, objects kept."""
    outside, cfg = tmp_path / "outside", tmp_path / "cfg"
    outside.mkdir()
    cfg.mkdir()
    write_yaml(outside / "a.yaml", service("reviews", 80))
    (cfg / "link").symlink_to(outside)
    store = Store()
    source = FileSource(store, cfg)
    source.sync_once(settle=False)
    (cfg / "other").symlink_to(outside)
    (cfg / "link").unlink()
    source.sync_once()  # no settling wait: the file itself did not change
    assert store.get(SVC) is not None
    assert list(source.files) == [cfg / "other" / "a.yaml"]
    (outside / "a.yaml").rename(outside / "b.yaml")  # renamed: same file, objects kept
    source.sync_once()
    assert store.get(SVC) is not None
    assert list(source.files) == [cfg / "other" / "b.yaml"]


def test_a_configmap_volume_update_is_read_like_an_edit(tmp_path: Path) -> None:
    """Kubernetes swaps the `..data` link to a new hidden directory: the file's path stays,
    the file behind it changes."""
    def version(name: str, port: int) -> None:
        (tmp_path / name).mkdir()
        write_yaml(tmp_path / name / "a.yaml", service("reviews", port))
        (tmp_path / "..data_tmp").symlink_to(name)
        (tmp_path / "..data_tmp").replace(tmp_path / "..data")

    version("..v1", 80)
    (tmp_path / "a.yaml").symlink_to("..data/a.yaml")
    store = Store()
    source = FileSource(store, tmp_path)
    source.sync_once(settle=False)
    version("..v2", 81)
    shutil.rmtree(tmp_path / "..v1")
    source.sync_once()
    assert store.get(SVC).ports[0].port == 80  # not read before it held still
    source.sync_once()
    assert store.get(SVC).ports[0].port == 81
    assert list(source.files) == [tmp_path / "a.yaml"]


# -- large files -------------------------------------------------------------------------------

def test_parsing_a_large_file_leaves_the_event_loop_answering(tmp_path: Path) -> None:
    """5,000 Pod documents (1.2 MB, most of a second to parse on a quiet machine, longer
    on a busy one) while a task ticks every 10 ms: the loop keeps ticking until the
    objects reach the store (50 to 150 ticks here). Parsed on the loop, the file allowed
    no tick from the end of the directory walk (in a thread, well under a tick) to the
    store write. How late a tick can be is `python -m benchmarks.loop_stall`'s figure."""
    count = 5_000
    (tmp_path / "pods.yaml").write_text(pods_yaml(count))

    async def main() -> int:
        store = Store()
        source = FileSource(store, tmp_path)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                if not store.objects("Pod"):
                    ticks += 1

        ticker = asyncio.create_task(tick())
        task = asyncio.create_task(source.run())
        try:
            await asyncio.wait_for(store.wait_synced(), 300)
        finally:
            task.cancel()
            ticker.cancel()
        assert len(store.objects("Pod")) == count
        return ticks

    ticks = asyncio.run(main())
    assert ticks >= 5, f"the event loop ticked {ticks} times while the file was read"


def test_a_file_over_the_size_limit_is_refused_and_keeps_its_objects(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write_yaml(f, service("reviews", 80))
    store = Store()
    source = FileSource(store, tmp_path, max_file_bytes=4096)
    source.sync_once(settle=False)
    f.write_text(pods_yaml(100))  # ~23 kB
    with structlog.testing.capture_logs() as logs:
        scan(source)
    assert store.get(SVC) is not None and store.objects("Pod") == []
    [entry] = [e for e in logs if e["event"] == "file_rejected"]
    assert entry["file"] == str(f) and entry["log_level"] == "error"
    assert "limit of 4096 bytes" in entry["error"] and entry["kept_objects"] == 1
    assert source.problems() == [f"{f}: {entry['error']} (kept its last 1 objects)"]
    write_yaml(f, service("reviews", 81))  # back under the limit: read again
    scan(source)
    assert store.get(SVC).ports[0].port == 81 and source.problems() == []


def test_yaml_is_parsed_with_libyaml() -> None:
    assert manifests.LOADER is yaml.CSafeLoader  # the wheel ships libyaml


# -- kinds we do not serve ------------------------------------------------------------------------

def test_unserved_and_unknown_kinds_are_warned_about_once_per_file_and_object(
        tmp_path: Path) -> None:
    gateway = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
               "metadata": {"name": "gw", "namespace": "istio-system"}}
    typo = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualSevice",
            "metadata": {"name": "r"}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    f, g = tmp_path / "a.yaml", tmp_path / "b.yaml"
    write_yaml(f, gateway, typo, deployment)
    store = Store()
    source = FileSource(store, tmp_path)
    with structlog.testing.capture_logs() as logs:
        source.sync_once(settle=False)
    seen = [(e["event"], e["log_level"], e["file"], e["kind"], e["object"]) for e in logs
            if e["event"] in ("kind_not_served", "unknown_kind")]
    assert sorted(seen) == [
        ("kind_not_served", "warning", str(f), "Deployment", "Deployment default/d"),
        ("kind_not_served", "warning", str(f), "Gateway", "Gateway istio-system/gw"),
        ("unknown_kind", "warning", str(f), "VirtualSevice", "VirtualSevice default/r")]
    assert source.problems() == [f"{f}: Gateway istio-system/gw: kind not served",
                                 f"{f}: VirtualSevice default/r: unknown kind",
                                 f"{f}: Deployment default/d: kind not served"]

    write_yaml(f, gateway, typo, deployment, service("reviews", 80))  # an edit re-reads it
    write_yaml(g, gateway)  # the same object in another file is another mistake
    with structlog.testing.capture_logs() as logs:
        scan(source)
        scan(source)
    assert store.get(SVC) is not None
    assert [(e["event"], e["file"]) for e in logs
            if e["event"] in ("kind_not_served", "unknown_kind")] == [
        ("kind_not_served", str(g))]
