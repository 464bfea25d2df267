"""Command line: argument parsing and wiring; the `controlplane` entry point, and
`python -m controlplane.cli`. No other module of the package imports it.

`controlplane --help` shows DESCRIPTION and EPILOG below, not this docstring."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
import yaml

from controlplane import __version__
from controlplane import log as logsetup
from controlplane.app import App, CannotListen, Settings, Source
from controlplane.bootstrap import bootstrap
from controlplane.sources.files import FileSource
from controlplane.sources.kubernetes import KubernetesSource, load_api_client
from controlplane.sources.manifests import DEFAULT_MAX_FILE_BYTES
from controlplane.store import Store
from controlplane.webhook import commands as webhook_commands

log = structlog.get_logger("controlplane")

# Printed as written (RawDescriptionHelpFormatter), so wrapped here for a terminal.
DESCRIPTION = """\
A lightweight xDS control plane for Envoy: mirrors Kubernetes Services,
EndpointSlices, Pods and Istio VirtualServices/DestinationRules (from a directory
of YAML, or a Kubernetes API server) and pushes them to Envoy sidecars over ADS,
tracking every ACK and NACK."""
EPILOG = """\
most common:
  controlplane serve --config-dir DIR     serve the manifests in DIR (watched)
  controlplane proxy-status               has every connected Envoy taken its config?
  controlplane analyze -f DIR             what in DIR is valid but will not work?
  controlplane explain --proxy NODE URL   where would this request go, and why?

`controlplane COMMAND --help` lists a command's flags. The log flags go before or
after the command (after wins)."""

LOG_LEVELS = ["debug", "info", "warning", "error"]
LOG_FORMATS = ["console", "json"]


def _log_args(p: argparse.ArgumentParser, *, command: bool) -> None:
    """The log flags, accepted before the command and after it. On a command they default
    to SUPPRESS, so an absent flag leaves the value given before the command (or its
    default) in place and a given one wins."""
    if command:
        p.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                       help="log level (default: as before the command, else info)")
        p.add_argument("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS,
                       help="log format (default: as before the command, else console)")
    else:
        p.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                       help="log level (default %(default)s)")
        p.add_argument("--log-format", choices=LOG_FORMATS, default="console",
                       help="console: key=value lines for people; json: one JSON object a "
                            "line (default %(default)s)")


def _serve_args(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("sources (one or both; in a pod, in-cluster config is used "
                               "when neither is given)")
    src.add_argument("--config-dir", help="directory of Kubernetes/Istio YAML to load and watch")
    src.add_argument("--kubeconfig", help="watch the Kubernetes API server of this kubeconfig")
    src.add_argument("--in-cluster", action="store_true",
                     help="watch the API server of the cluster this pod runs in")
    src.add_argument("--namespaces", default="",
                     help="comma-separated namespaces to watch (default: all)")
    src.add_argument("--revision", default=None,
                     help="serve only namespaces labelled istio.io/rev=REVISION")
    src.add_argument("--endpoints-api", choices=["endpointslices", "endpoints"],
                     default="endpointslices",
                     help="where endpoints come from (default %(default)s)")
    src.add_argument("--watch-timeout", type=int, default=300, metavar="SECONDS",
                     help="timeoutSeconds of each watch request (default %(default)s)")
    p.add_argument("--xds-address", default="127.0.0.1:15010",
                   help="where Envoys connect for ADS (default %(default)s)")
    p.add_argument("--admin-address", default="127.0.0.1:15011",
                   help="the admin gRPC API, for proxy-status (default %(default)s)")
    p.add_argument("--http-address", default="127.0.0.1:15014",
                   help="/healthz, /readyz, /metrics, /debug/* (default %(default)s)")
    p.add_argument("--stale-after", type=float, default=5.0, metavar="SECONDS",
                   help="a push unanswered this long shows as STALE (default %(default)s)")
    p.add_argument("--debounce-quiet", type=float, default=0.1, metavar="SECONDS",
                   help="push once changes were quiet this long (default %(default)s)")
    p.add_argument("--debounce-max", type=float, default=1.0, metavar="SECONDS",
                   help="push at the latest this long after the first change "
                        "(default %(default)s)")
    p.add_argument("--poll-interval", type=float, default=0.2, metavar="SECONDS",
                   help="how often --config-dir is checked for changes (default %(default)s)")
    p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES,
                   metavar="BYTES",
                   help="a manifest file in --config-dir larger than this is refused (its "
                        "last objects are kept) (default %(default)s)")
    p.add_argument("--answer-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long a push waits for the proxy's ACK before going on to the "
                        "next type (default %(default)s)")
    p.add_argument("--large-push-limit", type=int, default=128, metavar="N",
                   help="proxies at a time with a large response (256 KiB or more: a "
                        "first full config) written and not yet answered; bounds memory "
                        "when many connect at once; 0: no limit (default %(default)s)")
    p.add_argument("--no-nack-quarantine", dest="nack_quarantine", action="store_false",
                   help="when a proxy rejects a push, do not stop serving the "
                        "VirtualService/DestinationRule its error points at (by default "
                        "that object's previous version is served again)")


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _bootstrap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-id", required=True,
                   help="the proxy's name, as proxy-status shows it (required; a pod "
                        "name, e.g. productpage-0)")
    p.add_argument("--cluster", default="", help="node cluster (default: the node id)")
    p.add_argument("--namespace", default="",
                   help="the proxy's namespace: where short service names resolve "
                        "(default: default)")
    p.add_argument("--xds-address", default="127.0.0.1:15010", metavar="HOST:PORT",
                   help="the control plane's xDS address, serve's --xds-address "
                        "(default %(default)s)")
    p.add_argument("--admin-address", default="127.0.0.1:15000", metavar="HOST:PORT",
                   help="where this Envoy serves its own admin interface (/config_dump, "
                        "/stats) (default %(default)s)")
    p.add_argument("--instance-ip", default="", metavar="IP",
                   help="the proxy's IP: outbound listeners bind to it (default 0.0.0.0)")
    p.add_argument("--locality", default="", metavar="REGION/ZONE/SUBZONE",
                   help="where the proxy runs (the node's locality): locality load "
                        "balancing prefers endpoints there (default: none)")
    p.add_argument("--label", action="append", default=[], type=_label, metavar="KEY=VALUE",
                   help="a label of the workload (repeatable): what VirtualService "
                        "sourceLabels and Sidecar workloadSelectors match (default: none)")
    p.add_argument("--delta", action="store_true", help="use incremental (Delta) xDS")
    p.add_argument("-o", "--output", default="-", metavar="FILE",
                   help="file to write (default: stdout)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="controlplane", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=__version__)
    _log_args(p, command=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_p = sub.add_parser("serve", help="run the control plane")
    _serve_args(serve_p)
    bootstrap_p = sub.add_parser("bootstrap", help="print an Envoy bootstrap for a sidecar")
    _bootstrap_args(bootstrap_p)
    ps = sub.add_parser("proxy-status", help="has each proxy taken its config? (exit 0 "
                                             "when every one is in sync)")
    ps.add_argument("node_id", nargs="?", help="one proxy: per-type detail and a diff")
    ps.add_argument("--server", default="127.0.0.1:15011", metavar="HOST:PORT",
                    help="the control plane's admin address, serve's --admin-address "
                         "(default %(default)s)")
    ps.add_argument("-o", "--output", choices=["table", "json"], default="table",
                    help="table, or json with versions, nonces, times and subscriptions "
                         "(default %(default)s)")
    ps.add_argument("--envoy-admin", metavar="URL",
                    help="with NODE_ID: diff against this Envoy's live /config_dump")
    # The admission webhook: serve's --webhook-* flags, the webhook-certs command.
    webhook_commands.add_serve_args(serve_p)
    certs_p = webhook_commands.add_certs_command(sub)
    demo = sub.add_parser("demo", help="run the local demo: workloads, Envoy, traffic shifts")
    demo.add_argument("--no-interactive", action="store_true",
                      help="run every step unattended; exit 0 only if all saw the "
                           "expected traffic")
    demo.add_argument("--config-dir", default=None,
                      help="demo manifests to start from (default: those shipped in the "
                           "package, controlplane/demo/manifests/)")
    from controlplane.explain.command import add_arguments as explain_arguments

    explain_p = sub.add_parser("explain", help="where would this request go through this "
                                               "proxy, and why? (exit 1: not routed)")
    explain_arguments(explain_p)
    analyze_p = _analyze_args(sub)
    for command in (serve_p, bootstrap_p, ps, demo, explain_p, analyze_p, certs_p):
        _log_args(command, command=True)
    return p


# -- controlplane analyze -------------------------------------------------------------------

def _analyze_args(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "analyze", help="find what is valid but will not work (exit 1 on errors)",
        description="Analyse manifests (-f), a live cluster (--kubeconfig), or both: the "
                    "files overlaid on the cluster's objects, i.e. what applying them would "
                    "do. Exit 0: no errors (no warnings either with --strict); 1: findings "
                    "that fail; 2: bad arguments or unreadable input.")
    p.add_argument("-f", "--filename", action="append", metavar="PATH",
                   help="a directory of YAML (read as serve --config-dir reads it) or one "
                        "file; repeatable, later ones win an object defined twice")
    p.add_argument("--kubeconfig", help="list the objects of this kubeconfig's API server")
    p.add_argument("--namespaces", default="",
                   help="with --kubeconfig: comma-separated namespaces to list (default: all)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long listing the cluster may take (default %(default)s)")
    p.add_argument("-o", "--output", choices=["text", "json", "sarif"], default="text",
                   help="text: a line per finding and a summary; json; sarif: SARIF 2.1.0 "
                        "for code-scanning tools (default %(default)s)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    return p


def analyze(args: argparse.Namespace) -> int:
    from controlplane.analysis import analyze as run_checks
    from controlplane.analysis.inputs import Duplicate, Inputs, Invalid, field_error
    from controlplane.analysis.report import exit_code, render
    from controlplane.sources.snapshot import (
        DirectoryRead,
        list_cluster,
        overlay,
        read_directory,
    )

    args.filename = args.filename or []
    if not args.filename and not args.kubeconfig:
        print("controlplane analyze: give -f PATH, --kubeconfig FILE, or both",
              file=sys.stderr)
        return 2
    files = DirectoryRead()
    for path in args.filename:
        read_directory(Path(path), files)
    for error in files.errors:
        print(f"controlplane analyze: {error}", file=sys.stderr)
    objects = dict(files.objects)
    refused = {k: r.errors for k, r in files.rejected.items()}
    if args.kubeconfig:
        namespaces = frozenset(n.strip() for n in args.namespaces.split(",") if n.strip())
        try:
            cluster = list_cluster(load_api_client(args.kubeconfig), namespaces or None,
                                   args.timeout)
        except Exception as exc:  # unreachable server, bad kubeconfig, timeout
            print(f"controlplane analyze: cannot list {args.kubeconfig}: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        objects, refused = overlay(cluster, files)
    invalid = tuple(Invalid(k, tuple(field_error(e) for e in errors))
                    for k, errors in sorted(refused.items(), key=lambda i: str(i[0])))
    duplicates = tuple(
        Duplicate(key, files.first_line(key, c.used),
                  tuple(files.first_line(key, p) for p in c.files if p != c.used))
        for key, c in sorted(files.conflicts().items(), key=lambda i: str(i[0])))
    findings = run_checks(Inputs.of(objects, invalid, tuple(sorted(
        files.unserved.items(), key=lambda i: str(i[0]))), duplicates), files.where)
    sys.stdout.write(render(findings, args.output))
    return 2 if files.errors else exit_code(findings, args.strict)


def _sources(args: argparse.Namespace, store: Store) -> list[Source]:
    sources: list[Source] = []
    if args.config_dir:
        sources.append(FileSource(store, args.config_dir, interval=args.poll_interval,
                                  max_file_bytes=args.max_file_bytes))
    in_cluster = args.in_cluster or (not args.config_dir and not args.kubeconfig
                                     and "KUBERNETES_SERVICE_HOST" in os.environ)
    if args.kubeconfig or in_cluster:
        namespaces = frozenset(n.strip() for n in args.namespaces.split(",") if n.strip())
        sources.append(KubernetesSource(
            store, load_api_client(args.kubeconfig), namespaces=namespaces or None,
            revision=args.revision, endpoints_api=args.endpoints_api,
            watch_timeout=args.watch_timeout))
    if not sources:
        raise SystemExit("controlplane serve: give --config-dir, --kubeconfig or --in-cluster")
    return sources


async def serve(args: argparse.Namespace) -> int:
    app = App(Settings(
        xds_address=args.xds_address, admin_address=args.admin_address,
        http_address=args.http_address, debounce_quiet=args.debounce_quiet,
        debounce_max=args.debounce_max, answer_timeout=args.answer_timeout,
        stale_after=args.stale_after, large_push_limit=args.large_push_limit,
        nack_quarantine=args.nack_quarantine, webhook_address=args.webhook_address,
        webhook_cert=args.webhook_cert, webhook_key=args.webhook_key))
    app.sources = _sources(args, app.store)
    # Handlers first: `start` logs "serving", and a SIGTERM sent on seeing that line
    # must stop the server cleanly, not kill it with the default handler.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
    except CannotListen as e:
        log.error("cannot_listen", listener=e.listener, address=e.address, error=e.reason)
        await app.stop()
        return 1
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*app.tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not waiter and not task.cancelled() and task.exception():
            log.error("task_failed", task=task.get_name(), error=repr(task.exception()))
    log.info("stopping")
    await app.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    logsetup.configure(args.log_level, args.log_format)
    if args.command == "webhook-certs":
        return webhook_commands.run_certs(args)
    if args.command == "serve":
        webhook_commands.check_serve_args(p, args)
        return asyncio.run(serve(args))
    if args.command == "bootstrap":
        text = yaml.safe_dump(bootstrap(
            node_id=args.node_id, cluster=args.cluster, xds_address=args.xds_address,
            admin_address=args.admin_address, instance_ip=args.instance_ip,
            namespace=args.namespace, delta=args.delta, locality=args.locality,
            labels=dict(args.label)),
            sort_keys=False)
        if args.output == "-":
            sys.stdout.write(text)
        else:
            with open(args.output, "w") as f:
                f.write(text)
        return 0
    if args.command == "proxy-status":
        from controlplane.admin.proxy_status import run as proxy_status

        return proxy_status(args.server, args.node_id, args.output, args.envoy_admin)
    if args.command == "explain":
        from controlplane.explain.command import run as explain

        return explain(args)
    if args.command == "analyze":
        return analyze(args)
    if args.command == "demo":
        from controlplane.demo.story import run  # the demo needs Envoy: a test extra

        interactive = not args.no_interactive and sys.stdin.isatty()
        return run(Path(args.config_dir) if args.config_dir else None, interactive)
    return 2


if __name__ == "__main__":
    sys.exit(main())
