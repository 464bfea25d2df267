"""Subscriptions shared between streams.

Thousands of sidecars subscribe to the same thousands of EDS names, and each request
brings fresh copies of every one of them. Kept per stream, the name tuple and its set
were most of a connected proxy's memory; interned here, every stream asking for the
same names holds the same two objects, and they go away with the last stream holding
them (the tables hold them weakly).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable, Mapping
from typing import Protocol


class _Resources(Protocol):
    @property
    def items(self) -> Mapping[str, object]: ...


class NameSet:
    """One set of subscribed names, shared by every subscription naming exactly these,
    in whatever order the proxies listed them."""

    __slots__ = ("__weakref__", "_checked", "_covers", "names")

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self._checked: _Resources | None = None
        self._covers = False

    def covers(self, resources: _Resources) -> bool:
        """Every resource in `resources` is subscribed. Answered once per set and
        snapshot, not once per stream: the set and the snapshot are both shared."""
        if self._checked is not resources:
            self._covers = resources.items.keys() <= self.names
            self._checked = resources
        return self._covers


class Subscription:
    """The names of one request, as sent, and as encoded on the wire (see
    controlplane.xds.requests: a repeated request is compared on its bytes)."""

    __slots__ = ("__weakref__", "name_set", "raw", "wire")

    def __init__(self, raw: tuple[str, ...], name_set: NameSet) -> None:
        self.raw = raw
        self.name_set = name_set
        self.wire: bytes | None = None

    @property
    def names(self) -> frozenset[str]:
        return self.name_set.names


class Subscriptions:
    """The interning tables: one per server."""

    def __init__(self) -> None:
        self._by_raw: weakref.WeakValueDictionary[tuple[str, ...], Subscription] = (
            weakref.WeakValueDictionary())
        self._by_names: weakref.WeakValueDictionary[frozenset[str], NameSet] = (
            weakref.WeakValueDictionary())

    def get(self, names: Iterable[str]) -> Subscription:
        """The shared subscription to `names`, in this order (SotW requests)."""
        raw = tuple(names)
        sub = self._by_raw.get(raw)
        if sub is None:
            raw = tuple(map(sys.intern, raw))
            sub = self._by_raw[raw] = Subscription(raw, self.name_set(raw))
        return sub

    def name_set(self, names: Iterable[str]) -> NameSet:
        """The shared set of `names`, in any order (Delta subscriptions, built by name)."""
        as_set = frozenset(map(sys.intern, names))
        found = self._by_names.get(as_set)
        if found is None:
            found = self._by_names[as_set] = NameSet(as_set)
        return found

    def __len__(self) -> int:
        return len(self._by_raw)
