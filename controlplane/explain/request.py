"""The request (or connection) to explain, as the proxy would see it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "tcp": 0, "tls": 443}


class RequestError(ValueError):
    """A URL or header explain cannot read."""


@dataclass(frozen=True)
class Request:
    scheme: str  # http, tcp or tls
    host: str  # as in the URL, case kept (no port, no brackets)
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
        """The path routes match: the :path without its query and fragment (the
        connection manager's normalization is `paths.handle_path`, applied by the walk
        with the listener's settings)."""
        return self.path.split("#", 1)[0].split("?", 1)[0] or "/"

    def with_path(self, path: str) -> Request:
        """The request with another :path (the one the routes see)."""
        return replace(self, path=path, headers={**self.headers, ":path": [path]})

    def query(self) -> list[tuple[str, str]]:
        """The query parameters in order, percent-decoded (Envoy decodes them before
        matching)."""
        q = self.path.split("#", 1)[0].partition("?")[2]
        out = []
        for part in q.split("&") if q else []:
            name, _, value = part.partition("=")
            out.append((unquote(name), unquote(value)))
        return out


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
    hostname = _host_as_written(parts.netloc)
    if ":authority" not in hdrs:
        # The Host a client sends: the URL's, case kept (urlsplit's hostname is
        # lowercased, but `:authority` header matchers are case-sensitive).
        default = _DEFAULT_PORTS[scheme]
        host = hostname if ":" not in hostname else f"[{hostname}]"
        hdrs[":authority"] = [host if parts.port in (None, default) else f"{host}:{port}"]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    method = method.upper()
    hdrs[":method"] = [method]
    hdrs[":path"] = [path]
    hdrs[":scheme"] = ["http"]
    return Request(scheme=scheme, host=hostname, port=port, path=path, method=method,
                   headers=hdrs, sni=sni or (parts.hostname if scheme == "tls" else ""))


def _host_as_written(netloc: str) -> str:
    """The host of `[user@]host[:port]` with its case kept; an IPv6 address unbracketed."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        return hostport[1:].partition("]")[0]
    return hostport.partition(":")[0]
