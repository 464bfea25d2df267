"""`controlplane explain`: its arguments and its run. Exit 0 when the request reaches a
service (or an answer a VirtualService chose: redirect, direct response, fault abort),
1 when the proxy would not route it (no listener, no filter chain, 404 NR, the
catch-all virtual host), 2 when the input could not be read."""

from __future__ import annotations

import argparse
import json
import sys

from controlplane.explain import render, source
from controlplane.explain.dump import parse_dump
from controlplane.explain.request import RequestError, parse_request
from controlplane.explain.walk import explain

DEFAULT_SERVER = "127.0.0.1:15014"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", metavar="URL",
                   help="http://HOST[:PORT]/PATH?QUERY, tcp://HOST:PORT or tls://HOST:PORT")
    p.add_argument("--proxy", metavar="NODE",
                   help="the proxy's node id: walk what the control plane holds for it now")
    p.add_argument("--server", default=DEFAULT_SERVER, metavar="HOST:PORT",
                   help="the control plane's HTTP address, serve's --http-address "
                        "(default %(default)s)")
    p.add_argument("--envoy-admin", metavar="URL",
                   help="walk this Envoy's live /config_dump instead")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="a request header (repeatable; Host overrides the URL's) (default: none)")
    p.add_argument("--method", "-X", default="GET", help="the request method (default GET)")
    p.add_argument("--sni", default="", help="the TLS server name (tls:// URLs: the host)")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text",
                   help="text for people, json for tools (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        req = parse_request(args.url, args.header, args.method, args.sni)
    except RequestError as exc:
        print(f"controlplane explain: {exc}", file=sys.stderr)
        return 2
    if not args.proxy and not args.envoy_admin:
        print("controlplane explain: give --proxy NODE (the control plane's view) or "
              "--envoy-admin URL (an Envoy's live config)", file=sys.stderr)
        return 2
    try:
        raw = (source.envoy_dump(args.envoy_admin) if args.envoy_admin
               else source.control_plane_dump(args.server, args.proxy))
    except source.SourceError as exc:
        print(f"controlplane explain: {exc}", file=sys.stderr)
        return 2
    try:
        pods = source.pod_names(args.server)
    except source.SourceError:
        pods = {}  # without the control plane, endpoints are shown by address only
    result = explain(parse_dump(raw), req, pods,
                     proxy=args.proxy or args.envoy_admin)
    if args.output == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(render.text(result))
    return 0 if result.routed else 1
