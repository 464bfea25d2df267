"""The in-memory mirror of every object the sources delivered.

Sources call `apply`/`delete`/`replace`; readers take `mesh()`, an immutable view rebuilt
at most once per change. Change events are a generation counter plus an asyncio.Event,
so the push loop can debounce without a queue that grows while it is busy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from controlplane.model.mesh import Mesh, MeshIndex, build_mesh
from controlplane.model.meta import Key
from controlplane.model.parse import Object, key_of


class Store:
    def __init__(self) -> None:
        self._objects: dict[Key, Object] = {}
        self._index = MeshIndex()
        self._mesh: Mesh | None = None  # the newest Mesh built
        self._mesh_current = False
        # Changes since the newest Mesh: key -> the object as that Mesh saw it (None: new).
        self._changes: dict[Key, Object | None] = {}
        self._pending_sources: set[str] = set()
        self._synced = asyncio.Event()
        self._synced.set()  # with no source registered there is nothing to wait for
        self.changed = asyncio.Event()
        self.generation = 0
        self.first_unseen_change: float | None = None  # monotonic time of the oldest change
        # not yet taken by a reader of `mesh()`: the start of a convergence measurement

    # -- initial-sync barrier -------------------------------------------------------------
    def register_source(self, name: str) -> None:
        """A source that must finish its initial load before anything is served."""
        self._pending_sources.add(name)
        self._synced.clear()

    def mark_synced(self, name: str) -> None:
        self._pending_sources.discard(name)
        if not self._pending_sources:
            self._synced.set()

    @property
    def pending_sources(self) -> frozenset[str]:
        return frozenset(self._pending_sources)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    # -- writes -----------------------------------------------------------------------------
    def apply(self, obj: Object) -> bool:
        key = key_of(obj)
        old = self._objects.get(key)
        if old == obj:
            return False
        self._objects[key] = obj
        self._touch(key, old, obj)
        return True

    def delete(self, key: Key) -> bool:
        old = self._objects.pop(key, None)
        if old is None:
            return False
        self._touch(key, old, None)
        return True

    def replace(self, kind: str, objects: Iterable[Object],
                namespaces: frozenset[str] | None = None) -> None:
        """Make the store hold exactly `objects` of `kind` (in `namespaces`, or all): a
        relist's result, so that objects deleted while nobody watched disappear too."""
        fresh = {key_of(o): o for o in objects}
        for key in [k for k in self._objects if k.kind == kind and k not in fresh
                    and (namespaces is None or k.namespace in namespaces)]:
            self.delete(key)
        for obj in fresh.values():
            self.apply(obj)

    def _touch(self, key: Key, old: Object | None, new: Object | None) -> None:
        self._index.update(key, old, new)
        self._changes.setdefault(key, old)
        self.generation += 1
        self._mesh_current = False
        if self.first_unseen_change is None:
            self.first_unseen_change = time.monotonic()
        self.changed.set()

    # -- reads ------------------------------------------------------------------------------
    def get(self, key: Key) -> Object | None:
        return self._objects.get(key)

    def objects(self, kind: str | None = None) -> list[Object]:
        return [o for k, o in self._objects.items() if kind is None or k.kind == kind]

    def mesh(self) -> Mesh:
        """The Mesh of the current objects, built from the previous one and the changes
        since (see model/mesh.py)."""
        if not self._mesh_current:
            self._mesh = build_mesh(self._index, self._mesh, self._changes
                                    if self._mesh is not None else None)
            self._changes = {}
            self._mesh_current = True
        assert self._mesh is not None
        return self._mesh
