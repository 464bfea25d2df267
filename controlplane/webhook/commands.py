"""The webhook's command-line surface, kept here so cli.py only calls it: serve's
`--webhook-*` flags and the `webhook-certs` command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_serve_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("validating admission webhook (off unless --webhook-address "
                             "is given)")
    g.add_argument("--webhook-address", default="", metavar="HOST:PORT",
                   help="serve AdmissionReviews over HTTPS at /validate here")
    g.add_argument("--webhook-cert", default="", metavar="FILE",
                   help="the serving certificate (PEM; read again when it changes)")
    g.add_argument("--webhook-key", default="", metavar="FILE",
                   help="its private key (PEM)")


def check_serve_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.webhook_address and not (args.webhook_cert and args.webhook_key):
        p.error("--webhook-address needs --webhook-cert and --webhook-key")


def add_certs_command(sub: Any) -> argparse.ArgumentParser:
    c = sub.add_parser("webhook-certs", help="make a self-signed CA and serving certificate "
                                             "for the admission webhook")
    c.add_argument("--service", required=True,
                   help="the webhook's Service name (the certificate names NAME.NS.svc)")
    c.add_argument("--namespace", required=True, help="the Service's namespace")
    c.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="write ca.crt, tls.crt and tls.key (mode 0600) here")
    c.add_argument("--san", action="append", default=None, metavar="NAME_OR_IP",
                   help="another DNS name or IP address for the certificate (repeatable), "
                        "e.g. 127.0.0.1 for a webhook called by URL (default: none)")
    c.add_argument("--days", type=int, default=365, help="validity (default %(default)s)")
    c.add_argument("--webhook-config", type=Path, metavar="FILE",
                   help="a ValidatingWebhookConfiguration (config/kubernetes/"
                        "validating-webhook.yaml): write it to DIR/validating-webhook.yaml "
                        "with the CA as every webhook's caBundle")
    return c


def run_certs(args: argparse.Namespace) -> int:
    from controlplane.webhook.certs import run  # cryptography is an extra: only here

    return run(args.service, args.namespace, args.out, args.san or [], args.days,
               args.webhook_config)
