"""What the constraint checks report, and the few helpers both kinds of check use to say it:
the PGV walkers (translate/constraints) and Envoy's checks in code (envoy_checks.py). Here,
apart from both, so that the two import this instead of each other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Violation:
    path: str  # e.g. virtual_hosts[0].routes[2].match.safe_regex.regex
    message: str  # the rule broken and the offending value (truncated)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


Out = list[Violation]
# A compiled rule: the value -> why it breaks the rule, or None.
Rule = Callable[[Any], str | None]
# A check registered by envoy_checks: (message, its path, where violations go).
MessageCheck = Callable[[Any, str, Out], None]


def short(value: Any, limit: int = 80) -> str:
    """A value as shown in a violation: repr, truncated."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# A dotted-quad IPv4 address exactly as ipaddress accepts one (four decimal octets up to
# 255, no leading zeros): the common case, without ipaddress's cost. Anything else is
# left to ipaddress.
IPV4 = re.compile(r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
                  r"(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
