"""The webhook's HTTPS server: POST /validate, an AdmissionReview in, one out.

asyncio and the standard library's ssl, no web framework. One request per connection
(`Connection: close`): a server that closes a kept-alive connection just as the API server
sends the next review on it makes that call fail (a POST is not retried), which the
failure policy would then decide; a TLS handshake per review costs a millisecond.

The certificate is read from files and read again when they change (cert-manager and
kubelet replace a mounted Secret's files in place): each TLS handshake looks at the
files' identity (inode, size, mtime) and loads them afresh when it moved. A pair that
does not load (a half-written rotation, a key that does not match) leaves the previous
one in use and is tried again on the next connection; with no pair at all yet (the
Secret not created), handshakes are refused and the failure policy applies; the rest of
the control plane serves on regardless. TLS 1.2 or newer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from controlplane.webhook.admission import Admission, Later
from controlplane.webhook.advice import line
from controlplane.webhook.review import BadReview, Request, Verdict, answer, parse

log = structlog.get_logger("controlplane.webhook")

PATH = "/validate"
MAX_BODY = 8 * 1024 * 1024  # an object is at most ~1.5 MiB in etcd; a review holds two
HANDSHAKE_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # the API server sends the whole review at once
ANALYSIS_TIMEOUT = 5.0  # half the API server's timeoutSeconds (validating-webhook.yaml)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large", 500: "Internal Server Error"}


@dataclasses.dataclass(frozen=True)
class _Stamp:
    files: tuple[tuple[int, int, int], ...]  # (inode, size, mtime_ns) of cert and key


class CertificateFiles:
    """The serving certificate and key as files; `context()` is the TLS context of the
    pair as the files hold it now (or the last pair that loaded)."""

    def __init__(self, cert: str | Path, key: str | Path) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self._context: ssl.SSLContext | None = None
        self._stamp: _Stamp | None = None  # of the files last tried, loaded or not
        self._missing = False  # the files were missing at the last look (and it was logged)
        self.loads = 0  # how many pairs were loaded (tests watch a rotation with it)

    def _stamp_now(self) -> _Stamp | None:
        try:
            stats = [os.stat(p) for p in (self.cert, self.key)]  # follows the symlinks
        except OSError:
            return None
        return _Stamp(tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats))

    def context(self) -> ssl.SSLContext | None:
        stamp = self._stamp_now()
        if stamp is None:
            if not self._missing:  # once per disappearance, not once per handshake
                self._missing = True
                log.error("webhook_certificate_missing", cert=str(self.cert),
                          key=str(self.key), serving="previous pair" if self._context
                          else "nothing: TLS handshakes fail until the files exist")
            self._stamp = None
            return self._context
        self._missing = False
        if stamp == self._stamp:
            return self._context
        self._stamp = stamp
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.set_alpn_protocols(["http/1.1"])
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("webhook_certificate_unreadable", cert=str(self.cert),
                      key=str(self.key), error=str(exc),
                      serving="previous pair" if self._context else "nothing")
            return self._context
        self.loads += 1
        log.info("webhook_certificate_loaded", cert=str(self.cert), reload=self.loads > 1)
        self._context = context
        return context


class WebhookServer:
    """`on_review(outcome)` is told each review's outcome: "allowed", "refused",
    "bad_review" (answered 400) or "error" (answered 500), for a metric."""

    def __init__(self, admission: Admission, certificates: CertificateFiles,
                 on_review: Callable[[str], None] = lambda outcome: None) -> None:
        self.admission = admission
        self.certificates = certificates
        self.on_review = on_review
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, address: str) -> int:
        host, _, port = address.rpartition(":")
        self._server = await asyncio.start_server(
            self._connection, host.strip("[]"), int(port), ssl=self._listening_context(),
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self.port = self._server.sockets[0].getsockname()[1]
        self.certificates.context()  # load (and log) the pair now rather than at the first call
        log.info("webhook_serving", port=self.port, path=PATH)
        return self.port

    def _listening_context(self) -> ssl.SSLContext:
        """The context the listener starts each handshake with. It holds no certificate:
        its server-name callback, which OpenSSL calls on every ClientHello (with or
        without SNI; a client dialing an IP sends none), hands the handshake over to the
        context of the pair the files hold at that moment."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])

        def pick(conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                 _: ssl.SSLContext) -> int | None:
            current = self.certificates.context()
            if current is None:
                return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR  # no certificate to offer yet
            conn.context = current
            return None
        context.sni_callback = pick
        return context

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._exchange(reader), READ_TIMEOUT)
            writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                         f"Content-Type: {'application/json' if status == 200 else 'text/plain'}"
                         f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, OSError):
            pass  # a client that went away: nothing to answer
        except Exception:
            log.exception("webhook_connection_failed")
        finally:
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return 400, b"malformed request line\n"
        method, target, _ = parts
        headers = {}
        for text in lines[1:]:
            name, sep, value = text.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if target.split("?", 1)[0] != PATH:
            return 404, f"not found; the webhook is at {PATH}\n".encode()
        if method != "POST":
            return 405, b"POST an AdmissionReview\n"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return 411, b"send a Content-Length\n"
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return 411, b"send a Content-Length\n"
        if length < 0 or length > MAX_BODY:
            return 413, f"at most {MAX_BODY} bytes\n".encode()
        body = await reader.readexactly(length)
        return await self._review(body)

    def review(self, body: bytes) -> tuple[int, bytes]:
        """HTTP status and body for one POSTed AdmissionReview, the analysis run here
        (tests; the server runs it off the loop, `_review`)."""
        started = time.perf_counter()
        step = self._validate(body)
        if isinstance(step, _Answered):
            return step.status, step.body
        return self._answer(step.request, step.later() if step.later else step.verdict,
                            started)

    async def _review(self, body: bytes) -> tuple[int, bytes]:
        """As `review`, with the analysis in a worker thread and bounded by
        ANALYSIS_TIMEOUT: it costs ~0.1 s at 1,000 services, which the event loop
        (xDS streams, every other review) must not wait for, and a review must be
        answered well within the API server's timeout (timeoutSeconds: 10) or the failure
        policy decides instead. Past the bound only the warnings are lost."""
        started = time.perf_counter()
        step = self._validate(body)
        if isinstance(step, _Answered):
            return step.status, step.body
        verdict = step.verdict
        if step.later is not None:
            try:
                verdict = await asyncio.wait_for(asyncio.to_thread(step.later),
                                                 ANALYSIS_TIMEOUT)
            except TimeoutError:
                log.warning("webhook_analysis_timed_out", object=step.request.ref,
                            uid=step.request.uid, timeout_s=ANALYSIS_TIMEOUT)
                verdict = dataclasses.replace(verdict, warnings=(*verdict.warnings, line(
                    "controlplane", "", f"analysis took over {ANALYSIS_TIMEOUT:g} s and "
                    "was left out; run `controlplane analyze`")))
        return self._answer(step.request, verdict, started)

    def _validate(self, body: bytes) -> _Answered | _Validated:
        try:
            request = parse(body)
        except BadReview as exc:
            log.warning("webhook_bad_review", error=str(exc))
            self.on_review("bad_review")
            return _Answered(400, f"{exc}\n".encode())
        try:
            verdict, later = self.admission.validate(request)
        except Exception:  # a bug of ours: a failed call, for the failure policy to decide
            log.exception("webhook_decision_failed", object=request.ref, uid=request.uid)
            self.on_review("error")
            return _Answered(500, b"internal error; see the control plane's log\n")
        return _Validated(request, verdict, later)

    def _answer(self, request: Request, verdict: Verdict, started: float
                ) -> tuple[int, bytes]:
        log.info("webhook_decision", object=request.ref, operation=request.operation,
                 uid=request.uid, allowed=verdict.allowed, why=verdict.why,
                 dry_run=request.dry_run, warnings=len(verdict.warnings),
                 **({"fields": list(verdict.fields)} if verdict.fields else {}),
                 took_ms=round((time.perf_counter() - started) * 1000, 2))
        self.on_review("allowed" if verdict.allowed else "refused")
        return 200, json.dumps(answer(request, verdict)).encode()


@dataclasses.dataclass(frozen=True)
class _Answered:
    """A review answered without a verdict (junk: 400; a bug of ours: 500)."""
    status: int
    body: bytes


@dataclasses.dataclass(frozen=True)
class _Validated:
    request: Request
    verdict: Verdict  # validation's, with the ignored-field warnings
    later: Later | None  # the verdict with the analysis's warnings (thread-safe), if any
