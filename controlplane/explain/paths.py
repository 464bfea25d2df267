"""What the HTTP connection manager does to a request's path before routing, as the HCM in
the dump says: unescape %2F/%5C (path_with_escaped_slashes_action), normalize per RFC 3986
(normalize_path: escaped unreserved characters decoded, a backslash taken for `/`, dot segments
removed, empty segments kept), merge slashes (merge_slashes), in that order (Envoy's
ConnectionManagerUtility::maybeNormalizePath). Each step touches the path, never the
query. Our listeners set normalize_path only (translate/listeners.py), so `/a//b` reaches
the routes as written."""

from __future__ import annotations

import re
from dataclasses import dataclass

from controlplane.explain.dump import Json

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_ESCAPED_SLASH = re.compile(r"%(2[Ff]|5[Cc])")
# IMPLEMENTATION_SPECIFIC_DEFAULT is KEEP_UNCHANGED unless Envoy's runtime says otherwise
# (`http_connection_manager.path_with_escaped_slashes_action`), which no dump shows.
_KEEP = ("", "IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED")


@dataclass(frozen=True)
class PathHandling:
    normalize: bool = False  # normalize_path (unset: Envoy's runtime default, off)
    merge_slashes: bool = False
    escaped_slashes: str = "KEEP_UNCHANGED"  # path_with_escaped_slashes_action

    @classmethod
    def from_hcm(cls, hcm: Json) -> PathHandling:
        normalize = hcm.get("normalize_path", False)
        if isinstance(normalize, dict):  # a BoolValue written out as {"value": ...}
            normalize = normalize.get("value", False)
        action = str(hcm.get("path_with_escaped_slashes_action", ""))
        return cls(normalize=bool(normalize), merge_slashes=bool(hcm.get("merge_slashes")),
                   escaped_slashes="KEEP_UNCHANGED" if action in _KEEP else action)

    def describe(self) -> str:
        steps = [f"escaped slashes {self.escaped_slashes}"] if \
            self.escaped_slashes != "KEEP_UNCHANGED" else []
        steps += ["normalize_path"] if self.normalize else []
        steps += ["merge_slashes"] if self.merge_slashes else []
        return ", ".join(steps) or "the path taken as sent"


@dataclass(frozen=True)
class PathOutcome:
    path: str  # the :path the routes see (with its query)
    status: int | None = None  # the connection manager answers itself: 400 or 307
    why: str = ""


def handle_path(handling: PathHandling, raw: str) -> PathOutcome:
    """The :path after the connection manager's steps, or its own answer: 400 when escaped
    slashes are refused, 307 to the unescaped path when they are redirected."""
    path, sep, query = raw.split("#", 1)[0].partition("?")
    query = sep + query
    unescaped = False
    if handling.escaped_slashes != "KEEP_UNCHANGED":
        new = _ESCAPED_SLASH.sub(lambda m: "/" if m.group(1) in ("2F", "2f") else "\\", path)
        unescaped, path = new != path, new
        if unescaped and handling.escaped_slashes == "REJECT_REQUEST":
            return PathOutcome(raw, 400, "escaped slashes in the path are refused "
                                         "(path_with_escaped_slashes_action REJECT_REQUEST)")
    if handling.normalize:
        # Envoy's canonicalizer (Chromium's) takes a backslash for a slash, as browsers do
        path = remove_dot_segments(_ESCAPE.sub(_decode_unreserved, path.replace("\\", "/")))
    if handling.merge_slashes:
        path = merge_slashes(path)
    if unescaped and handling.escaped_slashes == "UNESCAPE_AND_REDIRECT":
        return PathOutcome(path + query, 307, "escaped slashes in the path are redirected "
                                              "(path_with_escaped_slashes_action "
                                              "UNESCAPE_AND_REDIRECT)")
    return PathOutcome(path + query)


def _decode_unreserved(m: re.Match[str]) -> str:
    """RFC 3986 §6.2.2: an escaped unreserved character is that character; other escapes
    stay, in upper case."""
    c = chr(int(m.group(1), 16))
    return c if (c.isalnum() and c.isascii()) or c in "-._~" else "%" + m.group(1).upper()


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path: `.` and `..` segments removed, empty segments
    (`//`) kept, a trailing `/` kept (and added where the last segment was a dot one)."""
    out: list[str] = []
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def merge_slashes(path: str) -> str:
    """Envoy's mergeSlashes: the non-empty segments joined by one `/`, a leading and a
    trailing `/` kept."""
    if "//" not in path:
        return path
    inner = "/".join(s for s in path.split("/") if s)
    return ("/" if path.startswith("/") else "") + inner + ("/" if path.endswith("/") else "")
