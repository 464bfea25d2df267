"""Requests through a sidecar, counted by who answered."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from typing import Any


class Client:
    """Keep-alive HTTP client through a sidecar, for counting where requests go."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.conn = http.client.HTTPConnection(ip, port, timeout=5)

    def get(self, host: str, path: str = "/", headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, Any] | str]:
        for attempt in range(2):
            try:
                self.conn.request("GET", path, headers={"Host": host, **(headers or {})})
                resp = self.conn.getresponse()
                body = resp.read().decode()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                # Envoy closes idle keep-alive connections on listener updates; the
                # request never reached an upstream, so a client would simply reconnect.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.ip, self.port, timeout=5)
                if attempt:
                    raise
        if resp.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.ip, self.port, timeout=5)
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body

    def tally(self, host: str, n: int, key: str = "version", path: str = "/",
              headers: dict[str, str] | None = None) -> Counter[str]:
        counts: Counter[str] = Counter()
        for _ in range(n):
            status, body = self.get(host, path, headers)
            counts[body[key] if status == 200 and isinstance(body, dict) else str(status)] += 1
        return counts

    def close(self) -> None:
        self.conn.close()


