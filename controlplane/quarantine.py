"""The last line of defence: when a proxy NACKs anyway, stop serving the object behind it.

Every resource is checked against Envoy's constraints before it is published, so a NACK
means a rule nobody modelled yet. Istio leaves the whole port's routes frozen then; here
the NACK is traced to the source object most likely behind it and that object is
quarantined (`Store.quarantine`): the version published before it is served again (or
nothing, if it is new) until its source delivers another version. The push that follows
carries everything else, so the proxy converges and no other object's update is held up.

Tracing: the NACK names the snapshot generation of the rejected response. The objects
that changed in that generation (and the few before it: the proxy may have skipped them)
and that can shape the rejected type are the suspects — VirtualServices and
DestinationRules only, never a Service or its endpoints. An object whose host or a quoted
value of which (a regex, a header) the error message names is the culprit; failing that,
the one suspect if there is exactly one. One object is quarantined per NACKed generation;
if the next push is NACKed too, the next suspect goes. A NACK nothing explains is logged
once and left alone, and a generation is never acted on twice, so this cannot loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import structlog

from controlplane.model.meta import Key
from controlplane.model.parse import Object
from controlplane.status.sync import ProxySync, SyncRegistry
from controlplane.store import Rejection, Store
from controlplane.xds import types

log = structlog.get_logger("controlplane.quarantine")

# Which kinds of object can shape each type, the likeliest first. Only the routing
# objects people write by hand: a Service or its endpoints is the cluster's truth, and
# taking one away on a guess would break more traffic than the NACK did.
_SHAPES: dict[str, tuple[str, ...]] = {
    types.CLUSTER: ("DestinationRule",),
    types.ENDPOINT: ("DestinationRule",),
    types.ROUTE: ("VirtualService", "DestinationRule"),
    types.LISTENER: ("VirtualService",),  # tcp and tls routes shape filter chains
}
_HOST = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                   r"\.svc\.cluster\.local")
_QUOTED = re.compile(r"'([^']{3,200})'|\"([^\"]{3,200})\"")
LOOK_BACK = 4  # generations before the NACKed one whose changes are suspects too

History = Callable[[], Iterable[tuple[int, Mapping[Key, Object | None]]]]


def _named(message: str, key: Key, obj: Object | None) -> bool:
    """Whether Envoy's message points at this object: its service's host, or a quoted
    value (a regex, a header) that appears in it."""
    hosts = {(m.group(1), m.group(3)) for m in _HOST.finditer(message)}
    if (key.name, key.namespace) in hosts:
        return True
    if obj is not None:
        host = getattr(obj, "host", None)  # a DestinationRule
        hosts_of = list(getattr(obj, "hosts", ()) or ([host] if host else []))
        for h in hosts_of:
            if any(h == name or h.startswith(f"{name}.{ns}") for name, ns in hosts):
                return True
        text = repr(obj)
        for m in _QUOTED.finditer(message):
            quoted = m.group(1) or m.group(2)
            if quoted in text:
                return True
        # Envoy often ends with the offending value: "...: NO_SUCH_VARIABLE".
        tail = message.rstrip().rsplit(": ", 1)[-1].strip("'\" ")
        if len(tail) >= 4 and " " not in tail and tail in text:
            return True
    return False


class Quarantine:
    def __init__(self, store: Store, registry: SyncRegistry, history: History,
                 on_change: Callable[[Rejection], None] | None = None) -> None:
        self.store = store
        self.history = history
        self.on_change = on_change
        self._handled: set[tuple[str, int]] = set()  # (type, generation) acted on
        self._unexplained: set[str] = set()
        registry.listeners.append(self._on_event)

    def _on_event(self, event: str, proxy: ProxySync, type_url: str) -> None:
        if event != "nacked":
            return
        t = proxy.types.get(type_url)
        if t is None or t.nack is None:
            return
        generation = t.nack.generation or (
            t.sent_generation if t.nack.nonce == t.sent_nonce else 0)
        self.nacked(proxy.node_id, type_url, generation, t.nack.message)

    def suspects(self, type_url: str, generation: int, message: str) -> list[Key]:
        """The objects that may have made `generation`'s response of `type_url` rejected:
        those the message names (newest change first); else the one object of a kind
        that shapes the type that changed in that very generation; else none."""
        kinds = _SHAPES.get(type_url, ())
        named: list[tuple[int, int, Key]] = []
        in_generation: list[Key] = []
        for g, changed in self.history():
            if generation and not generation - LOOK_BACK <= g <= generation:
                continue
            for key in changed:
                if key.kind not in kinds or key in self.store.rejections:
                    continue
                obj = self.store.get(key)
                if obj is None or self.store.changed_since_published(key):
                    continue  # deleted or changed since: the new version gets its chance
                if _named(message, key, obj):
                    named.append((-g, kinds.index(key.kind), key))
                if g == generation:
                    in_generation.append(key)
        if named:
            return list(dict.fromkeys(k for *_, k in sorted(
                named, key=lambda t: (t[0], t[1], str(t[2])))))
        unique = list(dict.fromkeys(in_generation))
        return unique if len(unique) == 1 else []

    def nacked(self, node_id: str, type_url: str, generation: int, message: str) -> None:
        if generation and (type_url, generation) in self._handled:
            return  # another proxy rejected the same push: already acted on
        if generation:
            self._handled.add((type_url, generation))
        befores = {k: b for g, changed in self.history() for k, b in changed.items()}
        for key in self.suspects(type_url, generation, message):
            rejection = self.store.quarantine(
                key, befores.get(key), f"{types.short(type_url)} rejected by proxy "
                f"{node_id}: {message[:500]}")
            if rejection is None:
                continue
            log.error("object_quarantined", object=str(key), node=node_id,
                      type=types.short(type_url), generation=generation,
                      serving="the version published before it"
                      if rejection.serving is not None else "nothing (it is new)",
                      nack=message[:500])
            if self.on_change is not None:
                self.on_change(rejection)
            return
        short = message[:200]
        if short not in self._unexplained:
            self._unexplained.add(short)
            log.error("nack_unexplained", node=node_id, type=types.short(type_url),
                      generation=generation, nack=message[:500],
                      hint="no recently changed object explains it; see /debug/configz")

