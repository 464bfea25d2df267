"""The in-memory mirror of every object the sources delivered.

Sources call `apply`/`delete`/`replace`; readers take `mesh()`, an immutable view rebuilt
at most once per change. Change events are a generation counter plus an asyncio.Event,
so the push loop can debounce without a queue that grows while it is busy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from controlplane.model.mesh import Mesh, build_mesh
from controlplane.model.meta import Key
from controlplane.model.parse import Object, key_of


class Store:
    def __init__(self) -> None:
        self._objects: dict[Key, Object] = {}
        self._mesh: Mesh | None = None
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
        if self._objects.get(key) == obj:
            return False
        self._objects[key] = obj
        self._touch()
        return True

    def delete(self, key: Key) -> bool:
        if self._objects.pop(key, None) is None:
            return False
        self._touch()
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

    def _touch(self) -> None:
        self.generation += 1
        self._mesh = None
        if self.first_unseen_change is None:
            self.first_unseen_change = time.monotonic()
        self.changed.set()

    # -- reads ------------------------------------------------------------------------------
    def get(self, key: Key) -> Object | None:
        return self._objects.get(key)

    def objects(self, kind: str | None = None) -> list[Object]:
        return [o for k, o in self._objects.items() if kind is None or k.kind == kind]

    def mesh(self) -> Mesh:
        if self._mesh is None:
            self._mesh = build_mesh(self._objects)
        return self._mesh
