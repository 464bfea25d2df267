"""Envoy's regex acceptance test, shared by the model (VirtualService regexes) and the
translator's constraint checker: a pattern Envoy's RE2 would refuse, or whose compiled
program is larger than Envoy allows, is caught before any proxy sees it."""

from __future__ import annotations

import functools

import re2  # google-re2 ships no type information (pyproject: mypy overrides)

# `re2.max_program_size.error_level` (source/common/common/regex.cc): a larger program
# makes the whole resource fail. Envoy's default is 100; the sidecar bootstrap we
# generate sets Istio's 32768 (Istio's bootstrap does the same, and its validation
# accepts any Go-compilable regex of up to 1024 characters), so that is what proxies
# enforce. A proxy bootstrapped with Envoy's default NACKs larger programs, and the
# NACK quarantine (controlplane/quarantine.py) takes the object out.
ENVOY_MAX_PROGRAM_SIZE = 32768

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors come back as exceptions; RE2's stderr logging is noise
# Envoy 1.40 reports program sizes and accepts/rejects escapes exactly as RE2 in Latin-1
# mode over the pattern's UTF-8 bytes (measured: `.{30}a{97}` is 161 there, 341 in UTF-8
# mode; `\x{100}` is refused). Compiling the same way keeps our verdict equal to Envoy's.
_OPTIONS.encoding = re2.Options.Encoding.LATIN1


@functools.lru_cache(maxsize=4096)
def program_size(pattern: str) -> int | str:
    """The RE2 program size Envoy computes for `pattern`, or RE2's error message."""
    try:
        return re2.compile(pattern.encode("utf-8"), _OPTIONS).programsize
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


def regex_error(pattern: str, max_program_size: int | None = ENVOY_MAX_PROGRAM_SIZE
                ) -> str | None:
    """Why Envoy would reject `pattern` as a RegexMatcher (None if it would accept it)."""
    size = program_size(pattern)
    if isinstance(size, str):
        return f"invalid regex {_short(pattern)}: RE2 (Envoy's engine) says {size}"
    if max_program_size is not None and size > max_program_size:
        return (f"regex {_short(pattern)} has RE2 program size {size}, over Envoy's limit "
                f"of {max_program_size}")
    return None


def _short(pattern: str, limit: int = 80) -> str:
    text = repr(pattern)
    return text if len(text) <= limit else text[:limit - 3] + "..."
