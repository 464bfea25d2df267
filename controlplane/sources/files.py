"""A directory of Kubernetes/Istio YAML, mirrored into the store and watched by polling.

Polling (stat every `interval`) rather than inotify: it works the same on every file
system, sees ConfigMap volume updates (which swap a symlinked directory), and costs a
few stat calls per file. A changed file is read once its size and time held still for one
interval, so a write in progress is never taken for the new content. A file whose YAML
breaks keeps its last good objects, and an object that fails validation keeps its last
good version: an edit in progress never takes traffic away.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

from controlplane.model.errors import ValidationError
from controlplane.model.meta import Key, object_ref
from controlplane.model.parse import Object, is_known_kind, key_of, parse_object
from controlplane.store import Store

log = structlog.get_logger("controlplane.sources.files")

SUFFIXES = (".yaml", ".yml")


@dataclass
class FileState:
    signature: tuple[int, int, int]
    objects: dict[Key, Object] = field(default_factory=dict)


def _documents(raw: Any) -> list[Any]:
    """Documents of a YAML stream, with `kind: List` items unpacked (kubectl's output)."""
    if isinstance(raw, dict) and raw.get("kind") == "List" and isinstance(
            raw.get("items"), list):
        return list(raw["items"])
    return [raw]


class FileSource:
    NAME = "files"

    def __init__(self, store: Store, directory: str | Path, interval: float = 0.2) -> None:
        self.store = store
        self.directory = Path(directory)
        self.interval = interval
        self.files: dict[Path, FileState] = {}
        self.owner: dict[Key, Path] = {}
        self._unsettled: dict[Path, tuple[int, int, int]] = {}
        store.register_source(self.NAME)

    def _scan_paths(self) -> dict[Path, tuple[int, int, int]]:
        found: dict[Path, tuple[int, int, int]] = {}
        for root, dirs, names in os.walk(self.directory, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith(".") or not name.endswith(SUFFIXES):
                    continue
                path = Path(root) / name
                try:
                    st = path.stat()
                except OSError:
                    continue  # removed between listing and stat
                found[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return found

    def sync_once(self, *, settle: bool = True) -> None:
        if not self.directory.is_dir():
            log.error("config_dir_missing", directory=str(self.directory))
            return
        found = self._scan_paths()
        for path in [p for p in self.files if p not in found]:
            log.info("file_removed", file=str(path))
            self._replace(path, {})
            del self.files[path]
        for path, signature in found.items():
            state = self.files.get(path)
            if state is not None and state.signature == signature:
                self._unsettled.pop(path, None)
            elif not settle or self._unsettled.get(path) == signature:
                self._unsettled.pop(path, None)
                self._load(path, signature)
            else:
                self._unsettled[path] = signature

    def _load(self, path: Path, signature: tuple[int, int, int]) -> None:
        previous = self.files.get(path)
        kept = previous.objects if previous else {}
        self.files[path] = FileState(signature, kept)
        try:
            docs = [d for raw in yaml.safe_load_all(path.read_text()) for d in _documents(raw)]
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            log.error("file_rejected", file=str(path), error=" ".join(str(exc).split()),
                      kept_objects=len(kept))
            return
        objects: dict[Key, Object] = {}
        for index, raw in enumerate(docs):
            if raw is None:
                continue
            if not isinstance(raw, dict) or not is_known_kind(raw):
                log.debug("document_ignored", file=str(path), document=index,
                          kind=raw.get("kind") if isinstance(raw, dict) else None)
                continue
            try:
                obj = parse_object(raw)
            except ValidationError as exc:
                ref = object_ref(raw)
                kind, _, ns_name = ref.partition(" ")
                ns, _, name = ns_name.partition("/")
                old = kept.get(Key(kind, ns, name))
                log.error("object_rejected", file=str(path), object=exc.ref,
                          errors=[str(e) for e in exc.errors],
                          kept="previous version" if old else "nothing")
                if old is not None:
                    objects[key_of(old)] = old
                continue
            for warning in getattr(obj, "warnings", ()):
                log.warning("object_warning", file=str(path), object=str(key_of(obj)),
                            warning=warning)
            objects[key_of(obj)] = obj
        self._replace(path, objects)
        log.info("file_loaded", file=str(path), objects=len(objects))

    def _replace(self, path: Path, objects: dict[Key, Object]) -> None:
        old = self.files[path].objects if path in self.files else {}
        for key in old.keys() - objects.keys():
            if self.owner.get(key) == path:
                del self.owner[key]
                self.store.delete(key)
        for key, obj in objects.items():
            owner = self.owner.get(key)
            if owner is not None and owner != path:
                log.warning("object_duplicated", object=str(key), file=str(path),
                            also_in=str(owner), used=str(path))
            self.owner[key] = path
            self.store.apply(obj)
        if path in self.files:
            self.files[path].objects = objects

    async def run(self) -> None:
        self.sync_once(settle=False)
        self.store.mark_synced(self.NAME)
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sync_once()
            except Exception:  # a source must outlive any one bad scan
                log.exception("scan_failed", directory=str(self.directory))
