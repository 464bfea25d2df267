"""A directory of Kubernetes/Istio YAML, mirrored into the store and watched by polling.

Polling (stat every `interval`) rather than inotify: it works the same on every file
system, sees ConfigMap volume updates (which swap a symlinked directory), and costs a
few stat calls per file. A changed file is read once its size and time held still for one
interval, so a write in progress is never taken for the new content. A file whose YAML
breaks (or that grew past `max_file_bytes`) keeps its last good objects, and an object
that fails validation keeps its last good version: an edit in progress never takes
traffic away.

Walking and parsing run in a worker thread (see manifests.py); only the store writes run
on the event loop, a file's objects in one go so the push loop never publishes half a
file.

Files are told apart by what they are, not by the path that reached them: every path to
one file (a symlink to the directory or to a subdirectory, a hard link) is one file, read
once, and a path going away while another still leads to the file changes nothing. A
file is named by the path it was first seen under; a moved or renamed file keeps its
objects without a gap.

The same object (kind, namespace, name) may be defined by several files, as when a new
version is dropped beside the old one. Every definition is kept; the newest is served
(the one whose content changed in the latest scan; in one scan, the file whose path
sorts last, as `kubectl apply -f DIR` would leave it), and when it goes the next one is
served again. Definitions that differ are reported once as `duplicate_object`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from controlplane.model.meta import Key
from controlplane.model.parse import KINDS, Object
from controlplane.sources.locations import FileLines
from controlplane.sources.manifests import (
    DEFAULT_MAX_FILE_BYTES,
    Manifest,
    ManifestError,
    read_manifest,
)
from controlplane.store import Store

log = structlog.get_logger("controlplane.sources.files")

SUFFIXES = (".yaml", ".yml")

# (mtime_ns, size, st_dev, st_ino), following symlinks: a ConfigMap swap changes the inode
# behind an unchanged path, an editor's atomic save the inode behind an unchanged name.
Signature = tuple[int, int, int, int]
Identity = tuple[int, int]  # (st_dev, st_ino): one real file, whatever the path


@dataclass
class Found:
    """One real file as a scan found it: every path leading to it, in walk order."""
    paths: list[Path]
    signature: Signature


def walk(directory: Path) -> dict[Identity, Found] | None:
    """Every YAML file under `directory`, hidden files and directories skipped; None when
    the directory is missing.

    Each real directory is listed once, so symlink loops end and a link to a directory
    costs nothing; directories reached by their real path are walked before symlinked
    ones, so a file's paths start with its real one when it is inside the tree.
    """
    found: dict[Identity, Found] = {}
    listed: set[Identity] = set()
    real_dirs: list[Path] = [directory]
    linked_dirs: list[Path] = []
    while real_dirs or linked_dirs:
        current = real_dirs.pop() if real_dirs else linked_dirs.pop(0)
        try:
            st = os.stat(current)
            if (st.st_dev, st.st_ino) in listed:
                continue
            listed.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            if current == directory:
                return None
            continue  # removed or unreadable meanwhile: seen again next scan
        subdirs: list[Path] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    if entry.is_symlink():
                        linked_dirs.append(Path(entry.path))
                    else:
                        subdirs.append(Path(entry.path))
                    continue
                if not entry.name.endswith(SUFFIXES) or not entry.is_file():
                    continue
                fst = entry.stat()  # follows a symlink: the file it leads to
            except OSError:
                continue  # removed between listing and stat, or a dangling link
            identity = (fst.st_dev, fst.st_ino)
            signature = (fst.st_mtime_ns, fst.st_size, fst.st_dev, fst.st_ino)
            if identity in found:
                found[identity].paths.append(Path(entry.path))
            else:
                found[identity] = Found([Path(entry.path)], signature)
        real_dirs.extend(reversed(subdirs))  # depth first, in name order
    return found


@dataclass
class FileState:
    signature: Signature
    objects: dict[Key, Object] = field(default_factory=dict)
    # Documents of kinds not served: key -> whether the kind is a real one (manifests.py)
    ignored: dict[Key, bool] = field(default_factory=dict)
    error: str = ""  # why the last read was refused (its objects are from before)
    problems: list[str] = field(default_factory=list)  # what the last good read reported
    # Documents of the last good read that failed validation: key -> "path: message"s
    invalid: dict[Key, tuple[str, ...]] = field(default_factory=dict)
    # (without the path: a renamed file keeps them)


@dataclass(frozen=True)
class Definition:
    seen: int  # the scan in which this file's content for the key last changed
    obj: Object


@dataclass(frozen=True)
class Conflict:
    used: Path
    files: tuple[Path, ...]


Read = Manifest | str  # a file's content, or why it was refused


class FileSource:
    NAME = "files"

    def __init__(self, store: Store, directory: str | Path, interval: float = 0.2,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.store = store
        self.directory = Path(directory)
        self.interval = interval
        self.max_file_bytes = max_file_bytes
        self.files: dict[Path, FileState] = {}
        self.definitions: dict[Key, dict[Path, Definition]] = {}
        self.conflicts: dict[Key, Conflict] = {}
        self._unsettled: dict[Path, Signature] = {}
        self._scans = 0
        self._changes = 0  # report_version
        self._lines = FileLines(max_file_bytes)
        store.register_source(self.NAME)

    # -- the scan: walk (thread), plan (loop), read (thread), commit (loop) -----------------
    def sync_once(self, *, settle: bool = True) -> None:
        """One scan, all of it on the calling thread (tests, tools)."""
        found = walk(self.directory)
        if found is None:
            log.error("config_dir_missing", directory=str(self.directory))
            return
        loads, removed = self._plan(found, settle)
        self._commit(self._read(loads), removed)

    async def scan(self, *, settle: bool = True) -> None:
        """One scan with the file system work and the parsing off the event loop."""
        found = await asyncio.to_thread(walk, self.directory)
        if found is None:
            log.error("config_dir_missing", directory=str(self.directory))
            return
        loads, removed = self._plan(found, settle)
        reads = await asyncio.to_thread(self._read, loads) if loads else []
        self._commit(reads, removed)

    def _plan(self, found: dict[Identity, Found], settle: bool
              ) -> tuple[list[tuple[Path, Signature]], list[Path]]:
        """Which files to read now and which are gone; renamed files are re-named here."""
        self._scans += 1
        present = {p for f in found.values() for p in f.paths}
        vanished = {state.signature[2:]: path for path, state in self.files.items()
                    if path not in present}
        loads: list[tuple[Path, Signature]] = []
        names: set[Path] = set()
        for identity, f in found.items():
            known = [p for p in f.paths if p in self.files]
            if known:
                name = known[0]  # any other known path to it is one reading too many: dropped
            else:
                name = _preferred_name(f.paths)
                if identity in vanished:  # moved, or only its old path went: same file
                    self._rename(vanished.pop(identity), name)
            names.add(name)
            state = self.files.get(name)
            if state is not None and state.signature == f.signature:
                self._unsettled.pop(name, None)
            elif not settle or self._unsettled.get(name) == f.signature:
                self._unsettled.pop(name, None)
                loads.append((name, f.signature))
            else:
                self._unsettled[name] = f.signature
        for path in [p for p in self._unsettled if p not in names]:
            del self._unsettled[path]
        return loads, [p for p in self.files if p not in names]

    def _read(self, loads: list[tuple[Path, Signature]]) -> list[tuple[Path, Signature, Read]]:
        """Thread-safe: touches no state of the source."""
        reads: list[tuple[Path, Signature, Read]] = []
        for path, signature in loads:
            result: Read
            if signature[1] > self.max_file_bytes:
                result = (f"{signature[1]} bytes, larger than the limit of "
                          f"{self.max_file_bytes} bytes (max_file_bytes); not read")
            else:
                try:
                    result = read_manifest(path, self.max_file_bytes)
                except ManifestError as exc:
                    result = str(exc)
                except Exception as exc:  # e.g. RecursionError on absurd nesting
                    result = f"cannot be parsed: {type(exc).__name__}: {exc}"
            reads.append((path, signature, result))
        return reads

    def _commit(self, reads: list[tuple[Path, Signature, Read]], removed: list[Path]) -> None:
        if reads or removed:
            self._changes += 1
        # Reads first: an object moving from a removed file to a new one is never deleted
        # in between.
        for path, signature, result in reads:
            self._load(path, signature, result)
        for path in removed:
            log.info("file_removed", file=str(path))
            self._set_objects(path, {})
            del self.files[path]

    def _rename(self, old: Path, new: Path) -> None:
        self._changes += 1
        log.info("file_renamed", file=str(new), was=str(old))
        state = self.files.pop(old)
        self.files[new] = state
        for key in state.objects:
            self.definitions[key][new] = self.definitions[key].pop(old)
        for key in sorted(state.objects, key=str):
            self._serve(key)  # the path decides ties, and conflicts name the files

    # -- one file's content -------------------------------------------------------------------
    def _load(self, path: Path, signature: Signature, result: Read) -> None:
        state = self.files.setdefault(path, FileState(signature))
        state.signature = signature
        if isinstance(result, str):
            state.error = result
            log.error("file_rejected", file=str(path), error=result,
                      kept_objects=len(state.objects))
            return
        state.error = ""
        problems: list[str] = []
        objects = dict(result.objects)
        for rejected in result.rejected:
            old = state.objects.get(rejected.key)
            kept = "previous version" if old is not None else "nothing"
            log.error("object_rejected", file=str(path), object=rejected.ref,
                      errors=list(rejected.errors), kept=kept)
            problems.append(f"{rejected.ref}: {'; '.join(rejected.errors)} (kept: {kept})")
            if old is not None and rejected.key not in objects:
                objects[rejected.key] = old
        for key, warning in result.warnings:
            log.warning("object_warning", file=str(path), object=str(key), warning=warning)
        for key in result.repeated:
            log.warning("object_repeated", file=str(path), object=str(key),
                        used="the last document")
        for reason in result.malformed:
            log.warning("document_ignored", file=str(path), reason=reason)
            problems.append(reason)
        ignored = {i.key: i for i in result.ignored}
        for key, item in ignored.items():
            what = "kind not served" if item.known else "unknown kind"
            problems.append(f"{key}: {what}")
            if key in state.ignored:
                continue  # warned when the file first held it
            if item.known:
                log.warning("kind_not_served", file=str(path), kind=key.kind,
                            object=str(key), served=list(KINDS))
            else:
                log.warning("unknown_kind", file=str(path), kind=key.kind, object=str(key),
                            served=list(KINDS), hint="a typo? the object is ignored")
        state.ignored = {key: item.known for key, item in ignored.items()}
        state.problems = problems
        state.invalid = {r.key: r.errors for r in result.rejected}
        self._set_objects(path, objects)
        log.info("file_loaded", file=str(path), objects=len(objects))

    def _set_objects(self, path: Path, objects: dict[Key, Object]) -> None:
        """Make `path` define exactly `objects`, and serve every key that changed."""
        state = self.files[path]
        touched: list[Key] = []
        for key in state.objects.keys() - objects.keys():
            del self.definitions[key][path]
            touched.append(key)
        for key, obj in objects.items():
            defs = self.definitions.setdefault(key, {})
            previous = defs.get(path)
            if previous is None or previous.obj != obj:
                defs[path] = Definition(self._scans, obj)
                touched.append(key)
        state.objects = objects
        for key in touched:
            self._serve(key)

    def _serve(self, key: Key) -> None:
        """Put the newest definition of `key` in the store (or delete it: none left)."""
        defs = self.definitions.get(key)
        if not defs:
            self.definitions.pop(key, None)
            self.store.delete(key)
            self._resolved(key)
            return
        used, definition = _newest(defs)
        self.store.apply(definition.obj)
        if all(d.obj == definition.obj for d in defs.values()):
            self._resolved(key)  # copies that agree are no conflict
            return
        conflict = Conflict(used, tuple(sorted(defs, key=str)))
        if self.conflicts.get(key) != conflict:
            self.conflicts[key] = conflict
            log.warning("duplicate_object", object=str(key),
                        files=[str(p) for p in conflict.files], used=str(used),
                        why="the newest definition is served; the others come back if it "
                            "goes")

    def _resolved(self, key: Key) -> None:
        if self.conflicts.pop(key, None) is not None:
            log.info("duplicate_resolved", object=str(key))

    # -- reporting ----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What is wrong with the directory now, one line each, naming the file."""
        out: list[str] = []
        for path, state in sorted(self.files.items()):
            if state.error:
                out.append(f"{path}: {state.error} (kept its last {len(state.objects)} "
                           f"objects)")
            out.extend(f"{path}: {problem}" for problem in state.problems)
        for key, conflict in sorted(self.conflicts.items(), key=lambda c: str(c[0])):
            out.append(f"{key}: defined differently in "
                       f"{', '.join(str(p) for p in conflict.files)}; using {conflict.used}")
        return out

    def locator(self) -> Callable[[Key, str], tuple[str, int]]:
        """Where each object served from here is written, for the analysis: taken on the
        loop (which file serves each key, now), answered in any one thread (the file's
        lines, read again on demand: locations.FileLines)."""
        serving = {key: str(_newest(defs)[0]) for key, defs in self.definitions.items()}
        for path, state in sorted(self.files.items()):
            for key in [*state.invalid, *state.ignored]:  # not served: where written
                serving[key] = str(path)
        lines = self._lines

        def where(key: Key, path: str) -> tuple[str, int]:
            file = serving.get(key)
            return lines.where(file, key, path) if file is not None else ("", 0)
        return where

    def first_lines(self) -> Callable[[str, Key], int]:
        """The first line of a file's document of a key (0: unknown), for definitions
        not served (CP0005). Called in the analysis thread, as `locator`'s function."""
        lines = self._lines
        return lambda file, key: lines.where(file, key, "")[1]

    def unserved(self) -> dict[Key, bool]:
        """Documents of kinds not served (key -> whether the kind is a real one), for
        the analysis (CP0003, CP0004)."""
        out: dict[Key, bool] = {}
        for state in self.files.values():  # a key's value is the same in every file
            out.update(state.ignored)
        return out

    def duplicates(self) -> dict[Key, tuple[str, tuple[str, ...], str]]:
        """Objects several files define differently: key -> (the file served, the
        others, why that one), for the analysis (CP0005)."""
        out: dict[Key, tuple[str, tuple[str, ...], str]] = {}
        for key, c in self.conflicts.items():
            defs = self.definitions[key]
            newest = defs[c.used].seen
            tie = any(d.seen == newest for p, d in defs.items() if p != c.used)
            out[key] = (str(c.used), tuple(str(p) for p in c.files if p != c.used),
                        "of the files read together, the one whose path sorts last" if tie
                        else "the one written last")
        return out

    def report_version(self) -> int:
        """Goes up whenever what `invalid`, `unserved` or `duplicates` say may have
        changed: compared once a second on the loop, where building them is not free
        (thousands of files)."""
        return self._changes

    def invalid(self) -> dict[Key, tuple[str, ...]]:
        """The documents that fail validation now (key -> "path: message" errors), for
        the analysis (CP0001); a key invalid in several files: the last file's."""
        out: dict[Key, tuple[str, ...]] = {}
        for _, state in sorted(self.files.items()):
            out.update(state.invalid)
        return out

    async def run(self) -> None:
        await self.scan(settle=False)
        self.store.mark_synced(self.NAME)
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.scan()
            except Exception:  # a source must outlive any one bad scan
                log.exception("scan_failed", directory=str(self.directory))


def _newest(defs: dict[Path, Definition]) -> tuple[Path, Definition]:
    """The definition served: the newest, ties to the path that sorts last."""
    if len(defs) == 1:  # the common case, kept cheap for files of thousands
        [(used, definition)] = defs.items()
        return used, definition
    return max(defs.items(), key=lambda d: (d[1].seen, str(d[0])))


def _preferred_name(paths: list[Path]) -> Path:
    """A file's real path when a scan reached it that way, else the first path found."""
    for path in paths:
        if os.path.realpath(path) == os.path.abspath(path):
            return path
    return paths[0]
