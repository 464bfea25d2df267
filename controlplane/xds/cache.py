"""The snapshot cache: every resource serialized once per version, shared by all streams.

A `Snapshot` wraps one translation of the mesh. Types every proxy shares (clusters,
endpoints) are serialized when the snapshot is published; types that depend on who asks
(listeners bind to the proxy's IP, routes resolve short names in its namespace) are
built on first use for each group of alike proxies and then shared by that group.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.xds import types, wire

Message = Any  # a generated protobuf message, or a `Serialized`


@dataclass(frozen=True, eq=False)
class Serialized:
    """A resource already in wire form: exactly the bytes a deterministic serialization
    of its message gives. The push loop assembles route configurations this way, each
    virtual host serialized once per mesh rather than once per namespace."""

    name: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    version: str  # content hash: equal bytes, equal version, across restarts too
    body: bytes  # the serialized message
    entry: bytes  # the same, wrapped as a DiscoveryResponse `resources` entry
    deps: tuple[str, ...] = ()  # names of DEPENDENT[type] resources this one uses
    message: Any = None  # what it was serialized from: the same object, the same bytes
    mix: int = 0  # this resource's share of its type's version (see TypeResources)
    _delta: list[bytes] = field(default_factory=list, compare=False, repr=False)

    @property
    def delta_entry(self) -> bytes:
        """The same, as a DeltaDiscoveryResponse entry (name and version included): made
        when a Delta stream first needs it, not for every resource of every snapshot."""
        if not self._delta:
            self._delta.append(wire.delta_entry_of(self.name, self.version, self.entry))
        return self._delta[0]


@dataclass(frozen=True)
class TypeResources:
    """All resources of one type for one group of proxies."""

    type_url: str
    items: Mapping[str, Resource]
    version: str

    mix: int = 0
    changed: frozenset[str] | None = None  # vs the set it was built from, when known
    _joined: dict[bool, bytes] = field(default_factory=dict, compare=False, repr=False)
    _subsets: dict[tuple[str, ...], bytes] = field(default_factory=dict, compare=False,
                                                   repr=False)

    def joined(self, delta: bool = False) -> bytes:
        """Every resource's DiscoveryResponse entry (or DeltaDiscoveryResponse entry),
        joined once and shared: the body of each stream's full answer (only the version
        and nonce around it differ)."""
        body = self._joined.get(delta)
        if body is None:
            body = self._joined[delta] = b"".join(
                [r.delta_entry if delta else r.entry for r in self.items.values()])
        return body

    def joined_delta(self) -> bytes:
        return self.joined(delta=True)

    def joined_subset(self, names: tuple[str, ...]) -> bytes:
        """The entries of `names` (each in `items`), joined once per distinct tuple:
        streams sent the same changes (one endpoint change; a namespace's routes after a
        VirtualService change) share one body instead of a copy each in flight."""
        body = self._subsets.get(names)
        if body is None:
            if len(self._subsets) >= 64:  # per-proxy subsets: a bound, not a cache
                self._subsets.clear()
            body = self._subsets[names] = b"".join([self.items[n].entry for n in names])
        return body

    @classmethod
    def build(cls, type_url: str, resources: Iterable[Resource],
              previous: TypeResources | None = None) -> TypeResources:
        """The version is the XOR of per-resource hashes: order-free, the same set gives
        the same version, and from the previous set it updates by what changed."""
        items = {r.name: r for r in resources}
        if previous is None:
            acc = 0
            for r in items.values():
                acc ^= r.mix
        else:
            acc = previous.mix
            old_items = previous.items
            for name, r in items.items():
                old = old_items.get(name)
                if old is not r:
                    acc ^= r.mix ^ (old.mix if old is not None else 0)
            if len(items) != len(old_items) or acc != previous.mix:
                for name, old in old_items.items():
                    if name not in items:
                        acc ^= old.mix
        return cls(type_url, items, f"{acc:016x}", acc)


class TranslationSource(Protocol):
    """What the translator offers for one mesh (see controlplane.translation)."""

    shared_types: frozenset[str]

    def group_key(self, type_url: str, proxy: Any) -> Hashable: ...
    def messages(self, type_url: str, key: Hashable) -> list[Message]: ...
    def name_of(self, type_url: str, message: Message) -> str: ...
    def deps_of(self, type_url: str, message: Message) -> tuple[str, ...]: ...
    def delta(self, type_url: str) -> tuple[list[Message], set[str]] | None: ...


class InconsistentSnapshot(Exception):
    pass


def serialize(message: Message) -> bytes:
    """The message's bytes as published (deterministic)."""
    if type(message) is Serialized:
        return message.body
    return bytes(message.SerializeToString(deterministic=True))


def make_resource(type_url: str, name: str, message: Message, deps: tuple[str, ...] = (),
                  previous: Resource | None = None) -> Resource:
    body = serialize(message)
    if previous is not None and previous.body == body and previous.deps == deps:
        return previous  # keep one copy of unchanged bytes across versions
    version = hashlib.blake2b(body, digest_size=8).hexdigest()
    mix = int.from_bytes(hashlib.blake2b(f"{name}\0{version}".encode(),
                                         digest_size=8).digest())
    return Resource(name, version, body, wire.resource_entry(type_url, body), deps, message,
                    mix)


@dataclass
class Snapshot:
    generation: int
    source: TranslationSource
    previous: Snapshot | None = field(default=None, repr=False)
    _built: dict[tuple[str, Hashable], TypeResources] = field(default_factory=dict)
    _responses: OrderedDict[tuple[str, str, bytes], tuple[str, bytes]] = field(
        default_factory=OrderedDict, repr=False)
    _response_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1),
                                         repr=False)

    def response(self, type_url: str, version: str, body: bytes) -> tuple[str, bytes]:
        """A whole SotW DiscoveryResponse carrying `body` (shared joined entries), and its
        nonce, built once and written to every stream sent the same: 5,000 streams sent a
        route configuration held 5,000 copies of it while gRPC wrote them.

        The nonce names the generation and the response (`7.2`; a stream's own are
        `12-5`), so one stream gets the same nonce twice only for the same bytes of the
        same snapshot — an answer to either is an answer to that content."""
        key = (type_url, version, body)
        responses = self._responses
        hit = responses.get(key)
        if hit is None:
            # Least recently used out: each proxy's own listeners come once each, and
            # must not push out the whole cluster set every stream of a storm is sent.
            if len(responses) >= 64:
                responses.popitem(last=False)
            nonce = f"{self.generation}.{next(self._response_ids)}"
            hit = responses[key] = (
                nonce, wire.discovery_response(version, body, type_url, nonce))
        else:
            responses.move_to_end(key)
        return hit

    def resources(self, type_url: str, proxy: Any) -> TypeResources:
        return self.for_key(type_url, self.source.group_key(type_url, proxy))

    def for_key(self, type_url: str, key: Hashable) -> TypeResources:
        built = self._built.get((type_url, key))
        if built is None and key is None and self.previous is not None:
            built = self._apply_delta(type_url)
        if built is None:
            old = self.previous._built.get((type_url, key)) if self.previous else None
            old_items = old.items if old is not None else {}
            src = self.source
            # A group of a shared type (endpoints per proxy locality) holds mostly the
            # shared set's very messages: their resources are taken, not made again.
            shared = (self.for_key(type_url, None).items
                      if key is not None and type_url in src.shared_types else {})
            resources = []
            for m in src.messages(type_url, key):
                name = src.name_of(type_url, m)
                prev = old_items.get(name)
                if prev is None or prev.message is not m:  # else: the very same message
                    same = shared.get(name)
                    prev = same if same is not None and same.message is m else \
                        make_resource(type_url, name, m, src.deps_of(type_url, m), prev)
                resources.append(prev)
            built = TypeResources.build(type_url, resources, old)
            self._built[(type_url, key)] = built
        return built


    def _apply_delta(self, type_url: str) -> TypeResources | None:
        """The previous set plus what the translation says changed: the cost of a push
        is the size of the change, not of the mesh."""
        assert self.previous is not None
        old = self.previous._built.get((type_url, None))
        delta = self.source.delta(type_url) if old is not None else None
        if old is None or delta is None:
            return None
        messages, removed = delta
        items = dict(old.items)
        acc = old.mix
        changed = set()
        for m in messages:
            name = self.source.name_of(type_url, m)
            prev = items.get(name)
            if prev is not None and prev.message is m:
                continue
            r = make_resource(type_url, name, m, self.source.deps_of(type_url, m), prev)
            if r is not prev:
                acc ^= r.mix ^ (prev.mix if prev is not None else 0)
                items[name] = r
                changed.add(name)
        for name in removed:
            gone = items.pop(name, None)
            if gone is not None:
                acc ^= gone.mix
                changed.add(name)
        built = TypeResources(type_url, items, f"{acc:016x}", acc, frozenset(changed))
        self._built[(type_url, None)] = built
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
        # changed_since answers, per snapshot: a push asks the same for every stream.
        self._since: dict[tuple[str, int], frozenset[str] | None] = {}

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
            if new.changed is not None:
                changed[type_url] = new.changed
            elif old is None or old.version != new.version:
                old_items = old.items if old else {}
                names = {n for n, r in new.items.items() if old_items.get(n) is not r}
                names |= old_items.keys() - new.items.keys()
                # A re-serialized but identical resource is no change.
                changed[type_url] = frozenset(
                    n for n in names if (r := new.items.get(n)) is None
                    or (o := old_items.get(n)) is None or r.version != o.version)
            else:
                changed[type_url] = frozenset()
        check_consistency(snap, probe)
        if prev is not None:
            prev.previous = None  # keep one generation back, not the whole history
        self.snapshot = snap
        self._changes.append((snap.generation, changed))
        self._since.clear()
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
        key = (type_url, generation)
        if key in self._since:
            return self._since[key]
        if not self._changes or self._changes[0][0] > generation + 1:
            found = None
        else:
            out: set[str] = set()
            for gen, changed in self._changes:
                if gen > generation:
                    out |= changed.get(type_url, frozenset())
            found = frozenset(out)
        self._since[key] = found
        return found

    def watch(self) -> asyncio.Event:
        event = asyncio.Event()
        self._watchers.add(event)
        if self.snapshot is not None:
            event.set()
        return event

    def unwatch(self, event: asyncio.Event) -> None:
        self._watchers.discard(event)
