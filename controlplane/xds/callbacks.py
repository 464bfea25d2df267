"""What the ADS streams report, and to whom: one small interface.

The streams call it as things happen on the wire; `status.sync.SyncRegistry` implements
it (and fans the events out to metrics, convergence, the admin watch and quarantine).
The xds package imports nothing above it: whoever wires a server passes its callbacks.
Calls for one stream come in the order of its wire events, on the event loop, and must
not block or raise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from controlplane.model.proxy import ProxyView


class StreamCallbacks(Protocol):
    def opened(self, stream_id: int, peer: str, proxy: ProxyView) -> None:
        """The stream's first request named its node (or none: a made-up id)."""

    def closed(self, stream_id: int) -> None:
        """The stream ended (also for one that never got as far as `opened`)."""

    def subscribed(self, stream_id: int, type_url: str, names: Collection[str]) -> None:
        """The type's subscribed names changed (empty: every resource). The collection
        is shared with the stream and never changed in place."""

    def sent(self, stream_id: int, type_url: str, version: str, nonce: str,
             generation: int) -> None:
        """A response is about to be written (`generation`: its snapshot's)."""

    def acked(self, stream_id: int, type_url: str, version: str, nonce: str,
              resources: Mapping[str, Any]) -> None:
        """The proxy accepted a response and now holds `resources` (name -> Resource),
        shared with the stream and replaced or updated by it on later ACKs."""

    def nacked(self, stream_id: int, type_url: str, version: str, nonce: str,
               message: str, generation: int | None) -> None:
        """The proxy rejected `version` with Envoy's `message`; `generation` is the
        rejected response's, or None for the type's last response sent."""

    def protocol_error(self, stream_id: int, type_url: str, version: str, nonce: str,
                       message: str) -> None:
        """An answer that cannot be true (an ACK of something never sent): never a NACK."""

    def pass_done(self, stream_id: int, generation: int) -> None:
        """The stream finished a push pass at this snapshot generation."""
