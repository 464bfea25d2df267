"""The push loop: store changes -> debounce -> Mesh -> translation -> snapshot cache.

It owns the publish: it builds the candidate Mesh (Store.build), translates it
(controlplane.translation.MeshTranslation), rejects the objects behind units that fail
their checks and builds again, then publishes the snapshot and commits the Mesh.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Callable

import structlog

from controlplane.model.mesh import Mesh
from controlplane.model.meta import Key
from controlplane.model.parse import Object
from controlplane.store import Rejection, Store
from controlplane.translate import Failure
from controlplane.translation import PROBE, MeshTranslation
from controlplane.xds.cache import InconsistentSnapshot, Snapshot, SnapshotCache

log = structlog.get_logger("controlplane.pipeline")

# What a failing unit can be blamed on: the routing objects people write. A Service and
# its endpoints describe what runs; rejecting one would take a workload off the mesh.
REJECTABLE = frozenset({"VirtualService", "DestinationRule"})


class PushLoop:
    def __init__(self, store: Store, cache: SnapshotCache, *, quiet: float = 0.1,
                 max_delay: float = 1.0) -> None:
        self.store = store
        self.cache = cache
        self.quiet = quiet
        self.max_delay = max_delay
        self._problems: set[str] = set()
        self._translation: MeshTranslation | None = None
        self._withheld_seen: set[str] = set()
        self.withheld: list[Failure] = []  # units of the last publish no rejection fixed
        # Per published generation, what each changed object was before it: where a
        # NACK quarantine goes back to (see quarantine.py).
        self.committed: deque[tuple[int, dict[Key, Object | None]]] = deque(maxlen=64)
        # Called after each publish with (snapshot, mesh, first change seen or None,
        # monotonic start of the publish, its duration in seconds).
        self.on_publish: list[Callable[[Snapshot, Mesh, float | None, float, float],
                                       None]] = []

    def publish(self) -> bool:
        started = time.monotonic()
        change_seen = self.store.first_unseen_change
        self.store.first_unseen_change = None
        # A publish allocates in a burst and frees little: with the cyclic GC running
        # through it, a full translation took 25-45 % longer. It is collected afterwards.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._publish(started, change_seen)
        finally:
            if gc_was_enabled:
                gc.enable()

    # Rejections per publish at most: each one removes a suspect, so this bounds the
    # work a publish can do however many objects fail at once; the rest wait one push.
    MAX_REJECTIONS = 64

    def _translate(self) -> tuple[Mesh, MeshTranslation]:
        """Build and translate the Mesh; while a unit fails, reject the routing object
        most likely behind it (changed since the last publish) and build again without
        it. A failure no such object explains keeps that unit's last good messages (or
        none) and is reported: a Service or its endpoints are the cluster's truth and
        are never rejected, only the unit they made is withheld."""
        rejected = 0
        while True:
            mesh = self.store.build()
            translation = MeshTranslation(mesh, self._translation)
            translation.prepare(PROBE)
            progress = False
            for failure in translation.failures:
                key = next((k for k in failure.suspects if k.kind in REJECTABLE
                            and self.store.changed_since_published(k)), None)
                rejection = (self.store.reject(key, f"{failure.what}: {failure.reason}",
                                               failure.by)
                             if key is not None and rejected < self.MAX_REJECTIONS else None)
                if rejection is not None:
                    rejected += 1
                    progress = True
                    self._report_rejection(rejection)
            if not progress:
                self.withheld = list(translation.failures)  # none could be rejected
                for failure in self.withheld:
                    self._withheld(failure)
                return mesh, translation

    def _publish(self, started: float, change_seen: float | None) -> bool:
        try:
            mesh, translation = self._translate()
            snap = self.cache.publish(translation, PROBE)
            translation.finish()
            self._translation = translation
            before = self.store.commit(
                mesh, [f"{f.what}: withheld ({f.by}): {f.reason}" for f in self.withheld])
            self.committed.append((snap.generation, before))
        except InconsistentSnapshot as exc:
            log.error("snapshot_rejected", reason=str(exc))
            return False
        except Exception:  # a bug outside any unit must not take the server down
            log.exception("publish_failed")
            return False
        took = time.monotonic() - started
        self._report_problems(mesh)
        log.info("snapshot", generation=snap.generation, services=len(mesh.services),
                 took_ms=round(took * 1000, 2))
        for notify in self.on_publish:
            notify(snap, mesh, change_seen, started, took)
        return True

    def _report_rejection(self, rejection: Rejection) -> None:
        log.error("object_rejected", object=str(rejection.key), by=rejection.by,
                  reason=rejection.reason,
                  serving="last good version" if rejection.serving is not None
                  else "nothing (no good version yet)")

    def _withheld(self, failure: Failure) -> None:
        message = f"{failure.what}: {failure.reason}"
        if message not in self._withheld_seen:
            self._withheld_seen.add(message)
            log.error("unit_withheld", unit=failure.what, by=failure.by,
                      suspects=[str(k) for k in failure.suspects], reason=failure.reason)

    def _report_problems(self, mesh: Mesh) -> None:
        current = set(mesh.problems)
        for problem in sorted(current - self._problems):
            log.warning("mesh_problem", problem=problem)
        for problem in sorted(self._problems - current):
            log.info("mesh_problem_resolved", problem=problem)
        self._problems = current

    async def run(self) -> None:
        await self.store.wait_synced()
        self.store.changed.clear()
        self.publish()
        # The initial load is long-lived: keep the cyclic GC from rescanning it on every
        # later push (full collections over a large heap showed up as push latency).
        gc.freeze()
        while True:
            await self.store.changed.wait()
            await debounce(self.store.changed, self.quiet, self.max_delay)
            self.publish()


async def debounce(changed: asyncio.Event, quiet: float, max_delay: float) -> None:
    """Called once `changed` is set: returns after `quiet` seconds without a change, or
    `max_delay` seconds after the call however often it changes, whichever comes first.
    A burst of edits (a `kubectl apply` of many objects, a rollout) makes one push, and
    a stream that never pauses still pushes at least once every `max_delay`. Each change
    seen is cleared, so the caller's next wait is for a change made after the return."""
    loop = asyncio.get_running_loop()
    first = loop.time()
    while True:
        changed.clear()
        remaining = max_delay - (loop.time() - first)
        if remaining <= 0:
            return
        try:
            await asyncio.wait_for(changed.wait(), min(quiet, remaining))
        except TimeoutError:
            return
