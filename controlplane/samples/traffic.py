"""Requests through a sidecar, counted by who answered.

    python -m controlplane.samples.traffic --sidecar productpage-0:9080 --host reviews

is a sample client app (as in docker-compose.yml): a round of requests every few seconds,
each round printed as a summary of where they went.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
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
        """Where n requests went, by the answer's `key` field (`pod,address`: several
        fields, joined by " @ "); a failed request counts under its status code."""
        counts: Counter[str] = Counter()
        for _ in range(n):
            counts[self.label(host, key, path, headers)] += 1
        return counts

    def label(self, host: str, key: str = "version", path: str = "/",
              headers: dict[str, str] | None = None) -> str:
        """One request: who answered, by the answer's `key` field(s)."""
        status, body = self.get(host, path, headers)
        if status != 200 or not isinstance(body, dict):
            return str(status)
        return " @ ".join(str(body.get(k)) for k in key.split(","))

    def close(self) -> None:
        self.conn.close()




def bar(counts: Counter[str], total: int, width: int = 40) -> str:
    """`v1: 149 #############  v2:  51 ####`: where `total` requests went."""
    return "  ".join(f"{k}: {v:3d} {'#' * (v * width // max(1, total))}"
                     for k, v in sorted(counts.items()))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m controlplane.samples.traffic",
        description="A sample client app: sends requests through its sidecar again and again "
                    "and prints where they went.")
    p.add_argument("--sidecar", default="127.0.0.1:9080",
                   help="the sidecar's outbound listener, HOST:PORT (default %(default)s)")
    p.add_argument("--host", default="reviews", help="the service to call (Host header)")
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                   help="a request header, e.g. end-user=jason (repeatable)")
    p.add_argument("--key", default="version",
                   help="the answer's field to count by: version, pod, address "
                        "(default %(default)s)")
    p.add_argument("--requests", type=int, default=20, help="requests per round")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between rounds")
    p.add_argument("--rounds", type=int, default=0, help="stop after this many (0: never)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    ip, _, port = args.sidecar.rpartition(":")
    headers = dict(h.split("=", 1) for h in args.header)
    client = Client(socket.gethostbyname(ip), int(port))
    rounds = 0
    try:
        while not args.rounds or rounds < args.rounds:
            try:
                counts = client.tally(args.host, args.requests, args.key, headers=headers)
                print(f"{args.requests} requests to {args.host}: "
                      f"{bar(counts, args.requests)}", flush=True)
            except (OSError, http.client.HTTPException) as exc:  # not up yet, restarting
                print(f"sidecar {args.sidecar} not reachable: {exc}", flush=True)
            rounds += 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
