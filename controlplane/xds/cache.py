"""The snapshot cache: every resource serialized once per version, shared by all streams.

A `Snapshot` wraps one translation of the mesh. Types every proxy shares (clusters,
endpoints) are serialized when the snapshot is published; types that depend on who asks
(listeners bind to the proxy's IP, routes resolve short names in its namespace) are
built on first use for each group of alike proxies and then shared by that group.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.xds import types, wire

Message = Any  # a generated protobuf message


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    version: str  # content hash: equal bytes, equal version, across restarts too
    body: bytes  # the serialized message
    entry: bytes  # the same, wrapped as a DiscoveryResponse `resources` entry
    delta_entry: bytes  # and as a DeltaDiscoveryResponse one (name and version included)
    deps: tuple[str, ...] = ()  # names of DEPENDENT[type] resources this one uses


@dataclass(frozen=True)
class TypeResources:
    """All resources of one type for one group of proxies."""

    type_url: str
    items: Mapping[str, Resource]
    version: str

    @classmethod
    def build(cls, type_url: str, resources: Iterable[Resource]) -> TypeResources:
        items = {r.name: r for r in resources}
        # XOR of per-resource hashes: order-free, and the same set gives the same version.
        acc = 0
        for r in items.values():
            acc ^= int.from_bytes(hashlib.blake2b(f"{r.name}\0{r.version}".encode(),
                                                  digest_size=8).digest())
        return cls(type_url, items, f"{acc:016x}")


class TranslationSource(Protocol):
    """What the translator offers for one mesh (see controlplane.pipeline)."""

    shared_types: frozenset[str]

    def group_key(self, type_url: str, proxy: Any) -> Hashable: ...
    def messages(self, type_url: str, key: Hashable) -> list[Message]: ...
    def name_of(self, type_url: str, message: Message) -> str: ...
    def deps_of(self, type_url: str, message: Message) -> tuple[str, ...]: ...


class InconsistentSnapshot(Exception):
    pass


def make_resource(type_url: str, name: str, message: Message, deps: tuple[str, ...] = (),
                  previous: Resource | None = None) -> Resource:
    body = message.SerializeToString(deterministic=True)
    if previous is not None and previous.body == body and previous.deps == deps:
        return previous  # keep one copy of unchanged bytes across versions
    version = hashlib.blake2b(body, digest_size=8).hexdigest()
    return Resource(name, version, body, wire.resource_entry(type_url, body),
                    wire.delta_resource_entry(type_url, name, version, body), deps)


@dataclass
class Snapshot:
    generation: int
    source: TranslationSource
    previous: Snapshot | None = field(default=None, repr=False)
    _built: dict[tuple[str, Hashable], TypeResources] = field(default_factory=dict)

    def resources(self, type_url: str, proxy: Any) -> TypeResources:
        return self.for_key(type_url, self.source.group_key(type_url, proxy))

    def for_key(self, type_url: str, key: Hashable) -> TypeResources:
        built = self._built.get((type_url, key))
        if built is None:
            old = self.previous._built.get((type_url, key)) if self.previous else None
            src = self.source
            built = TypeResources.build(type_url, (
                make_resource(type_url, name, m, src.deps_of(type_url, m),
                              old.items.get(name) if old else None)
                for m in src.messages(type_url, key)
                for name in (src.name_of(type_url, m),)
            ))
            self._built[(type_url, key)] = built
        return built


def check_consistency(snapshot: Snapshot, probe: Any) -> None:
    """Every name a cluster or listener depends on exists, and nothing is orphaned."""
    for parent, child in types.DEPENDENT.items():
        parents = snapshot.resources(parent, probe)
        children = snapshot.resources(child, probe)
        needed = {d for r in parents.items.values() for d in r.deps}
        missing = needed - children.items.keys()
        orphans = children.items.keys() - needed
        if missing or orphans:
            raise InconsistentSnapshot(
                f"{types.short(parent)}/{types.short(child)} mismatch: missing "
                f"{sorted(missing)[:5]}, unreferenced {sorted(orphans)[:5]}")


class SnapshotCache:
    """Holds the newest snapshot, wakes streams when it changes, and remembers which
    shared resources changed in recent generations so a stream compares only those."""

    HISTORY = 64

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.ready = asyncio.Event()
        self._watchers: set[asyncio.Event] = set()
        self._changes: deque[tuple[int, dict[str, frozenset[str]]]] = deque(
            maxlen=self.HISTORY)
        self.on_publish: list[Callable[[Snapshot, dict[str, frozenset[str]]], None]] = []

    def publish(self, source: TranslationSource, probe: Any) -> Snapshot:
        """Build, check and install a new snapshot; raises InconsistentSnapshot, leaving
        the current one in place."""
        prev = self.snapshot
        snap = Snapshot(generation=(prev.generation + 1) if prev else 1, source=source,
                        previous=prev)
        changed: dict[str, frozenset[str]] = {}
        for type_url in sorted(source.shared_types):
            new = snap.for_key(type_url, None)
            old = prev.for_key(type_url, None) if prev else None
            if old is None or old.version != new.version:
                old_items = old.items if old else {}
                changed[type_url] = frozenset(
                    n for n in new.items.keys() | old_items.keys()
                    if (r := new.items.get(n)) is None or (o := old_items.get(n)) is None
                    or r.version != o.version)
            else:
                changed[type_url] = frozenset()
        check_consistency(snap, probe)
        if prev is not None:
            prev.previous = None  # keep one generation back, not the whole history
        self.snapshot = snap
        self._changes.append((snap.generation, changed))
        self.ready.set()
        for notify in self.on_publish:
            notify(snap, changed)
        for event in self._watchers:
            event.set()
        return snap

    def changed_since(self, type_url: str, generation: int) -> frozenset[str] | None:
        """Names of `type_url` (a shared type) changed after `generation`, or None when
        that is too far back to know and the caller must compare everything."""
        if self.snapshot is None or generation >= self.snapshot.generation:
            return frozenset()
        if not self._changes or self._changes[0][0] > generation + 1:
            return None
        out: set[str] = set()
        for gen, changed in self._changes:
            if gen > generation:
                out |= changed.get(type_url, frozenset())
        return frozenset(out)

    def watch(self) -> asyncio.Event:
        event = asyncio.Event()
        self._watchers.add(event)
        if self.snapshot is not None:
            event.set()
        return event

    def unwatch(self, event: asyncio.Event) -> None:
        self._watchers.discard(event)
