"""Where explain's input comes from: the control plane's view of a proxy
(`/debug/config_dump?proxy=NODE` on serve's --http-address) or an Envoy's own admin
(`/config_dump?include_eds`), and pod names by address from `/debug/configz`."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT_S = 10.0


class SourceError(RuntimeError):
    """The dump could not be read: the message says from where and why."""


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError):
            detail = ""
        raise SourceError(f"{url}: HTTP {exc.code}" + (f": {detail}" if detail else "")
                          ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SourceError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def _base(address: str) -> str:
    return address.rstrip("/") if "://" in address else f"http://{address}"


def control_plane_dump(server: str, proxy: str) -> Any:
    query = urllib.parse.urlencode({"proxy": proxy})
    return _get_json(f"{_base(server)}/debug/config_dump?{query}")


def envoy_dump(admin_url: str) -> Any:
    return _get_json(f"{_base(admin_url)}/config_dump?include_eds")


def pod_names(server: str) -> dict[str, str]:
    """Pod IP -> namespace/name, from the control plane's objects (nothing added to the
    EDS every proxy is sent: see the README's explain section)."""
    configz = _get_json(f"{_base(server)}/debug/configz")
    out: dict[str, str] = {}
    for key, pod in configz.get("objects", {}).get("Pod", {}).items():
        if pod.get("ip"):
            out.setdefault(str(pod["ip"]), key)
    return out
