"""The mesh's objects read once, for `controlplane analyze`: a directory of manifests
with where each object came from (the same walk and per-file loader as the watched
source, files.py and manifests.py, so analyze sees what serve would serve), an API
server's objects listed once (the Kubernetes source itself, run until its initial
sync), and the one overlaid on the other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.model.meta import Key
from controlplane.model.parse import Object, key_of
from controlplane.sources.files import Conflict, Definition, _newest, walk
from controlplane.sources.kubernetes import KubernetesSource
from controlplane.sources.locations import DocumentLines, locate
from controlplane.sources.manifests import (
    DEFAULT_MAX_FILE_BYTES,
    ManifestError,
    Rejected,
    parse_manifest,
    read_text,
)
from controlplane.store import Store


@dataclass
class DirectoryRead:
    objects: dict[Key, Object] = field(default_factory=dict)
    rejected: dict[Key, Rejected] = field(default_factory=dict)
    lines: dict[Key, DocumentLines] = field(default_factory=dict)  # of the version used
    # Documents of kinds not served: key -> whether the kind is a real one (manifests.py)
    unserved: dict[Key, bool] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # "path: why" for files not read
    # Every file's valid definition of each key, as the watched source keeps them (the
    # newest served: here, of the latest read), and each definition's lines.
    definitions: dict[Key, dict[Path, Definition]] = field(default_factory=dict)
    definition_lines: dict[tuple[Key, Path], DocumentLines] = field(default_factory=dict)
    reads: int = 0  # read_directory calls into this

    def conflicts(self) -> dict[Key, Conflict]:
        """Objects several files of one read (-f) define differently (copies that agree
        are none), with the file served: the watched source's rule (files.py), so
        analyze names the file serve would use."""
        out: dict[Key, Conflict] = {}
        for key, all_defs in self.definitions.items():
            if len(all_defs) < 2:
                continue
            # A later -f replacing an object is an override, meant: only the definitions
            # of the read that wins can conflict.
            last = max(d.seen for d in all_defs.values())
            defs = {p: d for p, d in all_defs.items() if d.seen == last}
            used, served = _newest(defs)
            if any(d.obj != served.obj for d in defs.values()):
                out[key] = Conflict(used, tuple(sorted(defs, key=str)))
        return out

    def first_line(self, key: Key, file: Path) -> tuple[str, int]:
        """(file, first line) of `file`'s definition of `key`."""
        lines = self.definition_lines.get((key, file))
        return str(file), lines.line if lines is not None else 0

    def where(self, key: Key, path: str) -> tuple[str, int]:
        """(file, line) of a field of an object read here; ("", 0) when unknown."""
        lines = self.lines.get(key)
        return (lines.file, lines.line_of(path)) if lines is not None else ("", 0)


def read_directory(directory: Path, into: DirectoryRead | None = None,
                   max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> DirectoryRead:
    """Every manifest under `directory` (or `directory` itself, a file). As the watched
    source decides in one scan, the file whose path sorts last wins an object defined
    twice. `into`: add to an earlier read (several -f), later directories winning."""
    out = into if into is not None else DirectoryRead()
    out.reads += 1
    if directory.is_file():
        paths = [directory]
    else:
        found = walk(directory)
        if found is None:
            out.errors.append(f"{directory}: no such directory")
            return out
        paths = sorted(f.paths[0] for f in found.values())
    for path in paths:
        try:
            text = read_text(path, max_file_bytes)
            manifest = parse_manifest(text)
        except ManifestError as exc:
            out.errors.append(f"{path}: {exc}")
            continue
        lines = locate(text, str(path))
        out.errors.extend(f"{path}: {reason}" for reason in manifest.malformed)
        for item in manifest.ignored:
            out.unserved[item.key] = item.known
            if item.key in lines:
                out.lines[item.key] = lines[item.key]
        for rejected in manifest.rejected:
            out.objects.pop(rejected.key, None)
            out.rejected[rejected.key] = rejected
            if rejected.key in lines:
                out.lines[rejected.key] = lines[rejected.key]
        for key, obj in manifest.objects.items():
            out.rejected.pop(key, None)
            out.objects[key] = obj
            out.definitions.setdefault(key, {})[path] = Definition(out.reads, obj)
            if key in lines:
                out.lines[key] = out.definition_lines[key, path] = lines[key]
    for key, defs in out.definitions.items():
        if len(defs) > 1 and key in out.objects:  # the one serve would use (files.py)
            used, served = _newest(defs)
            out.objects[key] = served.obj
            if (key, used) in out.definition_lines:
                out.lines[key] = out.definition_lines[key, used]
    return out


@dataclass
class ClusterRead:
    objects: dict[Key, Object]
    invalid: dict[Key, tuple[str, ...]]  # objects failing validation: "path: message"s


async def _list_cluster(api_client: Any, namespaces: frozenset[str] | None,
                        timeout: float) -> ClusterRead:
    store = Store()
    source = KubernetesSource(store, api_client, namespaces=namespaces, crd_retry=timeout)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(store.wait_synced(), timeout)
    finally:
        source.stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return ClusterRead({key_of(obj): obj for obj in store.objects()}, source.invalid())


def list_cluster(api_client: Any, namespaces: frozenset[str] | None = None,
                 timeout: float = 30.0) -> ClusterRead:
    """Every object serve would mirror from this API server, listed once: the
    Kubernetes source run into a store of its own until its initial sync, then stopped.
    Raises TimeoutError when the lists do not complete within `timeout` seconds."""
    return asyncio.run(_list_cluster(api_client, namespaces, timeout))


def overlay(cluster: ClusterRead, files: DirectoryRead
            ) -> tuple[dict[Key, Object], dict[Key, tuple[str, ...]]]:
    """What applying the files would make of the cluster: a file's object replaces the
    cluster's of the same key. A file's invalid object would be refused, so the
    cluster's version stays. Returns the objects and the invalid ones (key -> errors):
    the files', and the cluster's that no file replaces."""
    objects = dict(cluster.objects)
    objects.update(files.objects)
    invalid = {k: e for k, e in cluster.invalid.items() if k not in files.objects}
    invalid.update((k, r.errors) for k, r in files.rejected.items())
    return objects, invalid
