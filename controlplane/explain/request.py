"""The request (or connection) to explain, as the proxy would see it."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "tcp": 0, "tls": 443}
_UNRESERVED = re.compile(r"%([0-9A-Fa-f]{2})")


class RequestError(ValueError):
    """A URL or header explain cannot read."""


@dataclass(frozen=True)
class Request:
    scheme: str  # http, tcp or tls
    host: str  # as in the URL (no port)
    port: int
    path: str = "/"  # with its query, as :path
    method: str = "GET"
    # lowercased name -> the values as sent (several for a repeated header)
    headers: dict[str, list[str]] = field(default_factory=dict)
    sni: str = ""

    @property
    def is_http(self) -> bool:
        return self.scheme == "http"

    @property
    def authority(self) -> str:
        return self.header(":authority") or ""

    def header(self, name: str) -> str | None:
        """All values of a header joined with ",", as Envoy matches them; None if absent."""
        values = self.headers.get(name.lower())
        return ",".join(values) if values else None

    def path_only(self) -> str:
        """The path routes match: the query and fragment removed, normalized as the
        listeners' `normalize_path` does (percent-encoded unreserved characters decoded,
        dot segments removed)."""
        path = self.path.split("#", 1)[0].split("?", 1)[0] or "/"
        path = _UNRESERVED.sub(_decode_unreserved, path)
        trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
        norm = posixpath.normpath(path)
        if norm.startswith("//"):  # normpath keeps a leading "//"; RFC 3986 does not
            norm = "/" + norm.lstrip("/")
        if trailing and norm != "/":
            norm += "/"
        return norm

    def query(self) -> list[tuple[str, str]]:
        """The query parameters in order, percent-decoded (Envoy decodes them before
        matching)."""
        q = self.path.split("#", 1)[0].partition("?")[2]
        out = []
        for part in q.split("&") if q else []:
            name, _, value = part.partition("=")
            out.append((unquote(name), unquote(value)))
        return out


def _decode_unreserved(m: re.Match[str]) -> str:
    c = chr(int(m.group(1), 16))
    return c if (c.isalnum() and c.isascii()) or c in "-._~" else "%" + m.group(1).upper()


def parse_request(url: str, headers: Sequence[str] = (), method: str = "GET",
                  sni: str = "") -> Request:
    """`http://host[:port]/path?query`, `tcp://host:port` or `tls://host:port` (the host is
    the SNI unless `sni` says otherwise), with `name: value` headers. The Host header is
    the URL's authority unless one is given."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise RequestError(f"{url}: the scheme must be http, tcp or tls")
    if not parts.hostname:
        raise RequestError(f"{url}: no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise RequestError(f"{url}: {exc}") from None
    if not port:
        raise RequestError(f"{url}: a tcp URL needs a port")
    hdrs: dict[str, list[str]] = {}
    for h in headers:
        if h.startswith(":"):  # a pseudo-header: ":authority: x"
            name, sep, value = h[1:].partition(":")
            name = ":" + name
        else:
            name, sep, value = h.partition(":")
        if not sep or not name.strip(": "):
            raise RequestError(f"header {h!r}: write it as 'name: value'")
        key = name.strip().lower()
        if key == "host":
            key = ":authority"  # HTTP/1's Host is HTTP/2's :authority, and Envoy's
        hdrs.setdefault(key, []).append(value.strip())
    if ":authority" not in hdrs:
        default = _DEFAULT_PORTS[scheme]
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        hdrs[":authority"] = [host if parts.port in (None, default) else f"{host}:{port}"]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    method = method.upper()
    hdrs[":method"] = [method]
    hdrs[":path"] = [path]
    hdrs[":scheme"] = ["http"]
    return Request(scheme=scheme, host=parts.hostname, port=port, path=path, method=method,
                   headers=hdrs, sni=sni or (parts.hostname if scheme == "tls" else ""))
